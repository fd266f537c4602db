"""The append-only, encrypted, tamper-evident audit log: append, read, verify, export."""

from appliance.audit.export import ExportSummary, export
from appliance.audit.log import AuditLog
from appliance.audit.records import AuditEntry, AuditEvent, Checkpoint, Outcome, VerifyReport
from appliance.audit.verify import verify_export

__all__ = [
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "Checkpoint",
    "ExportSummary",
    "Outcome",
    "VerifyReport",
    "export",
    "verify_export",
]
