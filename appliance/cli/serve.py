"""``appliance serve``: the REST API under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.cli.common import settings
from appliance.errors import ConfigurationError


def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind; loopback by default, the LAN only when named.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8080,
) -> None:
    """Serve the REST API (HTTPS when tls_cert and tls_key are set)."""
    import uvicorn

    from appliance.api.app import create_app

    config = settings()
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigurationError("TLS needs both tls_cert and tls_key (APPLIANCE_TLS_CERT/_KEY)")
    for path in (config.tls_cert, config.tls_key):
        if path is not None and not path.is_file():
            raise ConfigurationError(f"TLS file {path} does not exist")
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        log_level="info",
        server_header=False,
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
