"""``appliance keys`` and ``appliance audit``: API keys, master key rotation, the audit log."""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from appliance.cli.common import audited, print_json, services
from appliance.errors import ConfigurationError, InvalidInput

keys_app = typer.Typer(help="API keys and the master key.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, analyst, reviewer or auditor.")],
    tenant: Annotated[str | None, typer.Option(help="The tenant the key acts in.")] = None,
    groups: Annotated[str | None, typer.Option(help="ACL groups: g1,g2.")] = None,
    name: Annotated[str, typer.Option(help="A label, e.g. the system that uses it.")] = "",
) -> None:
    """Create an API key. It is printed once and stored only as a hash."""
    from appliance.apikeys import parse_groups

    svc = services()
    with audited(svc, "keys.create", tenant=tenant, resource="key") as payload:
        if tenant is not None and not svc.tenants().exists(tenant):
            raise InvalidInput(
                f"unknown tenant {tenant!r}: create it with `appliance tenants create`"
            )
        key, info = svc.apikeys().create(
            role=role, tenant=tenant, groups=parse_groups(groups), name=name
        )
        payload.update(key_id=info.id, role=info.role, groups=list(info.groups), name=info.name)
    svc.close()
    print(key)
    print(
        f"key id {info.id}: role {info.role}, tenant {info.tenant or '-'}; "
        "store it now, it is not shown again",
        file=sys.stderr,
    )


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """API keys (ids and attributes; never the secrets)."""
    rows = [asdict(k) for k in services().apikeys().list()]
    if as_json:
        print_json(rows)
        return
    for k in rows:
        state = f"revoked {k['revoked_at']}" if k["revoked_at"] else "active"
        groups = ",".join(k["groups"]) or "-"
        print(
            f"{k['id']}  {k['role']:8} {k['tenant'] or '-':16} {groups:16} {state:28} {k['name']}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key at once."""
    svc = services()
    with audited(svc, "keys.revoke", tenant=None, resource=f"key:{key_id}"):
        svc.apikeys().revoke(key_id)
    svc.close()
    print(f"revoked {key_id}")


@keys_app.command("rotate-master")
def keys_rotate_master() -> None:
    """Generate a new master key and re-wrap every tenant key with it (key-file mode)."""
    from appliance.crypto import MasterKey

    svc = services()
    if svc.settings.master_passphrase:
        raise ConfigurationError(
            "rotate-master works with a master key file; with APPLIANCE_MASTER_PASSPHRASE set, "
            "the key follows the passphrase"
        )
    current = svc.settings.keys_dir / "master.key"
    staged = current.with_name("master.key.new")
    with audited(svc, "keys.rotate-master", tenant=None, resource="master-key"):
        staged.unlink(missing_ok=True)
        new = MasterKey.from_file(staged, create=True)  # on disk (0600) before anything changes
        svc.keyring().rotate_master(new)
        os.replace(staged, current)
    svc.close()
    print(f"master key rotated: {current} holds the new key; back it up now")


@audit_app.command("verify")
def audit_verify(
    export_file: Annotated[
        Path | None, typer.Option("--export", help="Verify an export file.")
    ] = None,
    public_key: Annotated[Path | None, typer.Option(help="The log's public key (.pub).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the hash chain and signed checkpoints; exit 1 naming the first bad entry."""
    if export_file is not None:
        from appliance.audit import verify_export

        if public_key is None:
            raise InvalidInput("--export needs --public-key (the audit-signing.pub file)")
        for path in (export_file, public_key):
            if not path.is_file():
                raise InvalidInput(f"{path} does not exist")
        report = verify_export(export_file, public_key.read_bytes())
    else:
        report = services().audit().verify()
    if as_json:
        print_json(asdict(report))
    elif report.ok:
        print(f"ok: {report.entries} entries, {report.checkpoints} signed checkpoints verified")
    else:
        print(f"TAMPERED: first bad sequence {report.first_bad_seq}: {report.reason}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="The JSONL file to write (must not exist).")],
    since: Annotated[
        datetime | None, typer.Option(help="Entries from this time (ISO 8601).")
    ] = None,
) -> None:
    """Export entries (payloads stay encrypted) with signed checkpoints, for offline checks."""
    from datetime import UTC

    from appliance.audit import export

    if out.exists():
        raise InvalidInput(f"{out} exists: choose a new file")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    svc = services()
    summary = export(svc.audit(), out, since)
    public = out.with_suffix(".pub")
    public.write_bytes(svc.audit().signer.public_pem())
    svc.close()
    print(f"exported {summary.entries} entries to {out}; public key in {public}")
    print(f"verify anywhere: appliance audit verify --export {out.name} --public-key {public.name}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")
