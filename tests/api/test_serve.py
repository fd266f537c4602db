"""`appliance serve`: a real uvicorn process on 127.0.0.1, reached over the network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.config import Settings
from appliance.services import Services
from appliance.testing import LiveServer, free_port, run_cli


@pytest.fixture
def server(
    cli_env: dict[str, str], settings: Settings, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    setup = Services.from_settings(settings)
    setup.tenants().create("acme")
    key = setup.apikeys().create(role="analyst", tenant="acme")[0]
    setup.close()
    live = LiveServer.start(cli_env, tmp_path / "serve.log")
    yield live.url, key
    code = live.stop()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal
    assert code in (0, -15) and "Application shutdown complete." in live.log(), live.log()


def test_serve_answers_on_loopback(server: tuple[str, str]) -> None:
    url, key = server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get("/v1/documents").json() == []
        assert client.post("/v1/search", json={"query": "anything"}).json() == []
        resp = client.get("/v1/documents/1")
        assert resp.status_code == 404
        assert resp.headers["content-type"] == "application/problem+json"
        assert "server" not in resp.headers
    assert httpx.get(f"{url}/v1/documents").status_code == 401


def test_serve_refuses_half_a_tls_setup(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(cli_env, APPLIANCE_TLS_CERT=str(tmp_path / "cert.pem"))
    result = run_cli("serve", "--port", str(free_port()), env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr == "error: TLS needs both tls_cert and tls_key (APPLIANCE_TLS_CERT/_KEY)\n"
