"""`appliance keys` and `appliance audit`, and the audit trail of state-changing commands."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from appliance.testing import run_cli


def audit_rows(home: Path) -> list[tuple[int, str, str, str | None]]:
    with sqlite3.connect(home / "audit" / "audit.db") as db:
        return list(db.execute("SELECT seq, action, outcome, tenant FROM entries ORDER BY seq"))


def tenant_with_memo(cli_env: dict[str, str], tmp_path: Path, text: str) -> None:
    """Tenant "acme" holding one ingested document, memo.txt."""
    assert run_cli("tenants", "create", "acme", env=cli_env).returncode == 0
    doc = tmp_path / "memo.txt"
    doc.write_text(text)
    assert run_cli("ingest", str(doc), "--tenant", "acme", env=cli_env).returncode == 0


def test_keys_are_shown_once_and_listed_without_secrets(
    cli_env: dict[str, str], home: Path
) -> None:
    assert run_cli("tenants", "create", "acme", env=cli_env).returncode == 0
    made = run_cli(
        "keys", "create", "--role", "analyst", "--tenant", "acme", "--groups", "legal", env=cli_env
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("apk_") and "not shown again" in made.stderr
    listed = json.loads(run_cli("keys", "list", "--json", env=cli_env).stdout)
    assert [(k["role"], k["tenant"], k["groups"]) for k in listed] == [
        ("analyst", "acme", ["legal"])
    ]
    secret = key.rsplit("_", 1)[1].encode()
    for path in home.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    revoked = run_cli("keys", "revoke", listed[0]["id"], env=cli_env)
    assert revoked.returncode == 0
    again = run_cli("keys", "revoke", listed[0]["id"], env=cli_env)
    assert again.returncode == 1 and "no active API key" in again.stderr


def test_bad_key_requests(cli_env: dict[str, str]) -> None:
    result = run_cli("keys", "create", "--role", "analyst", "--tenant", "ghost", env=cli_env)
    assert (result.returncode, result.stderr) == (
        1,
        "error: unknown tenant 'ghost': create it with `appliance tenants create`\n",
    )
    result = run_cli("keys", "create", "--role", "superuser", env=cli_env)
    assert result.returncode == 1 and "unknown role 'superuser'" in result.stderr


def test_state_changes_are_audited_with_their_outcome(
    cli_env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    tenant_with_memo(cli_env, tmp_path, "The audit trail records every change.")
    run_cli("keys", "create", "--role", "analyst", env=cli_env)  # refused: no tenant
    run_cli("documents", "delete", "99", "--tenant", "acme", env=cli_env)  # refused: unknown
    assert audit_rows(home) == [
        (1, "tenants.create", "ok", None),
        (2, "documents.ingest", "ok", "acme"),
        (3, "keys.create", "refused", None),
        (4, "documents.delete", "refused", "acme"),
    ]
    verified = run_cli("audit", "verify", "--json", env=cli_env)
    assert verified.returncode == 0 and json.loads(verified.stdout)["entries"] == 4


def test_audit_verify_names_the_first_tampered_entry(cli_env: dict[str, str], home: Path) -> None:
    for name in ("one", "two", "three"):
        run_cli("tenants", "create", name, env=cli_env)
    with sqlite3.connect(home / "audit" / "audit.db") as db:
        db.execute("UPDATE entries SET outcome = 'denied' WHERE seq = 2")
    result = run_cli("audit", "verify", env=cli_env)
    assert result.returncode == 1
    assert result.stdout.startswith("TAMPERED: first bad sequence 2: ")


def test_export_verifies_offline_with_only_the_public_key(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    run_cli("tenants", "create", "acme", env=cli_env)
    out = tmp_path / "export.jsonl"
    exported = run_cli("audit", "export", "--out", str(out), env=cli_env)
    assert exported.returncode == 0, exported.stderr
    offline = {"PATH": cli_env["PATH"], "APPLIANCE_HOME": str(tmp_path / "elsewhere")}
    ok = run_cli(
        "audit",
        "verify",
        "--export",
        str(out),
        "--public-key",
        str(out.with_suffix(".pub")),
        env=offline,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("ok: 1 entries"), ok.stdout + ok.stderr
    lines = out.read_text().splitlines()
    edited = [line.replace("tenants.create", "tenants.delete") for line in lines]
    out.write_text("\n".join(edited) + "\n")
    bad = run_cli(
        "audit",
        "verify",
        "--export",
        str(out),
        "--public-key",
        str(out.with_suffix(".pub")),
        env=offline,
    )
    assert bad.returncode == 1 and bad.stdout.startswith("TAMPERED: first bad sequence 1")
    missing = run_cli("audit", "verify", "--export", str(out), env=offline)
    assert missing.returncode == 1 and "needs --public-key" in missing.stderr
    again = run_cli("audit", "export", "--out", str(out), env=cli_env)
    assert again.returncode == 1 and "exists: choose a new file" in again.stderr


def test_rotate_master_rewraps_tenant_keys(
    cli_env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    tenant_with_memo(cli_env, tmp_path, "Rotation keeps every document readable.")
    old = (home / "keys" / "master.key").read_bytes()
    rotated = run_cli("keys", "rotate-master", env=cli_env)
    assert rotated.returncode == 0, rotated.stderr
    assert (home / "keys" / "master.key").read_bytes() != old
    assert not (home / "keys" / "master.key.new").exists()
    found = run_cli("search", "rotation readable", "--tenant", "acme", "--json", env=cli_env)
    assert json.loads(found.stdout)[0]["source"] == "memo.txt"
    (home / "keys" / "master.key").write_bytes(old)  # the old key no longer opens anything
    refused = run_cli("tenants", "list", env=cli_env)
    assert refused.returncode == 1 and "master key does not open the keyring" in refused.stderr
