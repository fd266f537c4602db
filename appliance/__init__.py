"""The offline document review and classification appliance."""

__version__ = "0.1.0"
