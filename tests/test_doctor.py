"""`appliance doctor` as an admin runs it, against the real default models."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.testing import replace_bytes, run_cli


def test_doctor_passes_on_a_healthy_install(cli_env: dict[str, str]) -> None:
    result = run_cli("doctor", "--json", env=cli_env)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["ok"] and report["blocked_network_attempts"] == []
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"hardware", "data dirs", "models", "generation", "embedding"}
    assert all(c["ok"] for c in checks.values())
    assert "smollm2-135m-instruct@1" in checks["generation"]["detail"]
    assert "dim 384" in checks["embedding"]["detail"]


def test_doctor_catches_a_deliberate_outbound_connection(cli_env: dict[str, str]) -> None:
    result = run_cli("doctor", "--probe-outbound", "192.0.2.1:80", env=cli_env)
    assert result.returncode == 1
    assert (
        "FAIL outbound probe outbound network access refused by the appliance: 192.0.2.1:80"
        in result.stdout
    )
    assert "FAIL network       refused outbound attempt: getaddrinfo 192.0.2.1:80" in result.stdout
    assert result.stdout.rstrip().endswith("unhealthy: see FAIL lines above")


def test_doctor_fails_on_a_tampered_model(cli_env: dict[str, str], models_dir: Path) -> None:
    gguf = models_dir / "smollm2-135m-instruct/1/SmolLM2-135M-Instruct.Q4_1.gguf"
    data = bytearray(gguf.read_bytes())
    data[-1] ^= 1
    replace_bytes(gguf, bytes(data))
    result = run_cli("doctor", "--json", env=cli_env)
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["models"]["ok"] and "catalog pins" in checks["models"]["detail"]
    assert not checks["generation"]["ok"] and "refused" in checks["generation"]["detail"]
    assert checks["embedding"]["ok"]


def test_doctor_reports_an_unwritable_home(cli_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    blocker.chmod(0o444)
    env = dict(cli_env, APPLIANCE_HOME=str(blocker / "home"))
    result = run_cli("doctor", "--json", env=env)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 1 and not checks["data dirs"]["ok"]
