"""``appliance extract``: fill a JSON schema from one document, each value with its evidence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.apikeys import parse_groups
from appliance.cli.common import audited, print_json, services
from appliance.errors import InvalidInput


def read_schema(path: Path) -> Any:
    """The JSON in ``path``; ``InvalidInput`` naming the file when it is missing or not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"schema: cannot read {path} ({type(exc).__name__})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"schema: {path} is not valid JSON (line {exc.lineno})") from None


def extract(
    document: Annotated[int, typer.Argument(help="The document id (see `appliance documents`).")],
    schema: Annotated[Path, typer.Option("--schema", help="A JSON Schema file: the fields.")],
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant.")],
    groups: Annotated[str | None, typer.Option(help="Extract as a caller in these groups.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Fill a JSON schema from a document; a value without evidence in it is null, with why."""
    from appliance.review.extract import extract as fill

    caller = frozenset(parse_groups(groups)) if groups is not None else None
    svc = services()
    try:
        with audited(svc, "review.extract", tenant=tenant, resource=f"document:{document}") as log:
            log["document_id"] = document
            result = fill(svc, tenant, document, read_schema(schema), caller)
            log.update(result.audit_payload())
    finally:
        svc.close()
    if as_json:
        print_json(result.to_json())
        return
    print(f"{result.source} (document {result.document_id}, version {result.version})")
    for f in result.fields:
        if f.evidence is None:
            print(f"  {f.name}: null  ({f.reason})")
            continue
        page = f", page {f.evidence.page}" if f.evidence.page is not None else ""
        print(
            f"  {f.name}: {json.dumps(f.value)}  "
            f"[chars {f.evidence.start}-{f.evidence.end}{page}, {f.evidence.match}]"
        )
    if not result.valid:
        print("  (the values do not satisfy the schema: a required field is null)")


def register(app: typer.Typer) -> None:
    app.command()(extract)
