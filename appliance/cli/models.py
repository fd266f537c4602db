"""``appliance models``: list, verify, import, activate, roll back, stage the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.cli.common import audited, human_size, print_json, services, settings
from appliance.errors import InvalidInput
from appliance.inference.catalog import ROLES, ModelCatalog, Role

app = typer.Typer(help="The model catalog: every file pinned by sha256.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _catalog() -> ModelCatalog:
    return ModelCatalog(settings().models_dir)


def _role(value: str) -> Role:
    if value not in ROLES:
        raise InvalidInput(f"unknown role {value!r}: use chat or embedding")
    return value


@app.command("list")
def list_models(as_json: JsonOpt = False) -> None:
    """Name, role, version, active, size, license and whether the sha256 checks out."""
    catalog = _catalog()
    active = {catalog.active(r).ref for r in ROLES if any(e.role == r for e in catalog.entries())}
    rows: list[dict[str, Any]] = []
    for entry in catalog.entries():
        ok = all(c.ok for c in catalog.verify_entry(entry))
        rows.append(
            {
                "name": entry.name,
                "version": entry.version,
                "role": entry.role,
                "format": entry.format,
                "active": entry.ref in active,
                "size": entry.size,
                "license": entry.license,
                "sha256_ok": ok,
                "origin": entry.origin,
            }
        )
    if as_json:
        print_json(rows)
        return
    print(f"{'NAME@VERSION':38} {'ROLE':9} {'ACTIVE':6} {'SIZE':>9}  {'SHA256':8} LICENSE")
    for r in rows:
        ref = f"{r['name']}@{r['version']}"
        print(
            f"{ref:38} {r['role']:9} {'yes' if r['active'] else '':6} "
            f"{human_size(r['size']):>9}  {'ok' if r['sha256_ok'] else 'BAD':8} {r['license']}"
        )


@app.command()
def verify(as_json: JsonOpt = False) -> None:
    """Hash every model file and compare with its pin; exit 1 on any mismatch."""
    catalog = _catalog()
    checks = [c for e in catalog.entries() for c in catalog.verify_entry(e)]
    bad = [c for c in checks if not c.ok]
    if as_json:
        print_json(
            [
                {"model": c.entry.ref, "file": c.file.path, "ok": c.ok, "problem": c.problem}
                for c in checks
            ]
        )
    else:
        for c in checks:
            print(
                f"{'ok ' if c.ok else 'BAD'} {c.entry.ref:32} {c.file.path}"
                + (f"  {c.problem}" if c.problem else "")
            )
        print(f"{len(checks) - len(bad)} of {len(checks)} files match their sha256")
    if bad:
        raise typer.Exit(1)


@app.command("import")
def import_model(
    file: Annotated[Path, typer.Argument(help="A GGUF chat model or an ONNX sentence encoder.")],
    name: Annotated[str, typer.Option(help="Catalog name; an existing name gets a new version.")],
    role: Annotated[str, typer.Option(help="chat or embedding.")],
    tokenizer: Annotated[
        Path | None, typer.Option(help="tokenizer.json of an embedding model.")
    ] = None,
    license: Annotated[str, typer.Option(help="The model's licence, for the record.")] = "unknown",
    origin: Annotated[
        str, typer.Option(help="Where the file came from.")
    ] = "imported by an administrator",
) -> None:
    """Check a model file, pin its sha256 and add it as a new version (not activated)."""
    svc = services()
    with audited(svc, "models.import", tenant=None, resource=f"model:{name}") as payload:
        entry = svc.catalog.import_model(
            file, name=name, role=_role(role), tokenizer=tokenizer, license=license, origin=origin
        )
        payload.update(ref=entry.ref, sha256=[f.sha256 for f in entry.files], file=file.name)
    svc.close()
    print(
        f"imported {entry.ref} ({entry.role}, {human_size(entry.size)}, "
        f"sha256 {entry.files[0].sha256[:12]}…)"
    )
    print(f"activate it with: appliance models activate {entry.ref}")


@app.command()
def activate(spec: Annotated[str, typer.Argument(metavar="NAME[@VERSION]")]) -> None:
    """Make a model version the active one of its role (after verifying it)."""
    svc = services()
    with audited(svc, "models.activate", tenant=None, resource=f"model:{spec}"):
        entry = svc.catalog.activate(spec)
    svc.close()
    print(f"active {entry.role} model: {entry.ref}")


@app.command()
def rollback(role: Annotated[str, typer.Argument(help="chat or embedding")]) -> None:
    """Re-activate the model that was active before the current one."""
    svc = services()
    with audited(svc, "models.rollback", tenant=None, resource=f"role:{role}") as payload:
        entry = svc.catalog.rollback(_role(role))
        payload["ref"] = entry.ref
    svc.close()
    print(f"active {entry.role} model: {entry.ref}")


@app.command()
def stage() -> None:
    """Put the bundle's default models in place from their packages (the installer runs this)."""
    from appliance.inference.bundle import stage_defaults

    for result in stage_defaults(_catalog()):
        print(f"{result.action:8} {result.ref}")
