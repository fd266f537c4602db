"""``appliance ask``: a question answered from a tenant's documents, with verified citations."""

from __future__ import annotations

from typing import Annotated

import typer

from appliance.apikeys import parse_groups
from appliance.cli.common import audited, print_json, services


def ask(
    question: str,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant.")],
    k: Annotated[int, typer.Option("--k", min=1, max=20, help="Sources to retrieve.")] = 6,
    groups: Annotated[str | None, typer.Option(help="Ask as a caller in these groups.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Answer from the documents, citing them; or say that they do not answer it."""
    from appliance.review.answering import ask as answer

    caller = frozenset(parse_groups(groups)) if groups is not None else None
    svc = services()
    with audited(svc, "review.ask", tenant=tenant, resource="ask") as payload:
        payload["question"] = question
        result = answer(svc, tenant, question, k, caller)
        payload.update(
            answer=result["answer"],
            abstained=result["abstained"],
            cached=result["cached"],
            retrieved_chunks=[r["chunk_id"] for r in result["retrieved"]],
            citations=[
                {k_: c[k_] for k_ in ("document_id", "start", "end")} for c in result["citations"]
            ],
        )
    svc.close()
    if as_json:
        print_json(result)
        return
    print(result["answer"])
    for c in result["citations"]:
        page = f", page {c['page']}" if c["page"] is not None else ""
        print(
            f"  [{c['source_number']}] {c['source']}{page}, chars {c['start']}-{c['end']}: "
            f'"{c["quote"][:120]}"'
        )
    if result["abstained"]:
        print(f"  ({result['abstain_reason']})")


def register(app: typer.Typer) -> None:
    app.command()(ask)
