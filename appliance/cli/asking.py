"""``appliance ask``: a question answered from a tenant's documents, with verified citations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.apikeys import parse_groups
from appliance.cli.common import audited, eval_app, print_json, services
from appliance.errors import InvalidInput


def ask(
    question: str,
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant.")],
    k: Annotated[int, typer.Option("--k", min=1, max=20, help="Sources to retrieve.")] = 6,
    groups: Annotated[str | None, typer.Option(help="Ask as a caller in these groups.")] = None,
    document: Annotated[
        list[int] | None, typer.Option("--document", help="Only this document id (repeatable).")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Only sources matching this glob (repeatable)."),
    ] = None,
    media_type: Annotated[
        list[str] | None, typer.Option("--media-type", help="Only this media type (repeatable).")
    ] = None,
    after: Annotated[
        str | None, typer.Option(help="Only documents changed at or after (ISO 8601).")
    ] = None,
    before: Annotated[
        str | None, typer.Option(help="Only documents changed before (ISO 8601).")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="auto: generate, else quote the best source sentence; generate: the model "
            "only; extract: quote only, no model."
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Answer from the documents, citing them; or say that they do not answer it."""
    from appliance.corpus.filters import DocumentFilter
    from appliance.review.answering import AskOptions
    from appliance.review.answering import ask as answer

    caller = frozenset(parse_groups(groups)) if groups is not None else None
    svc = services()
    with audited(svc, "review.ask", tenant=tenant, resource="ask") as payload:
        payload["question"] = question
        filters = DocumentFilter.of(
            document_ids=document or (),
            sources=source or (),
            media_types=media_type or (),
            updated_after=after,
            updated_before=before,
        )
        if not filters.empty:
            payload["filters"] = filters.canonical()
        if mode not in ("auto", "generate", "extract"):
            raise InvalidInput(f"--mode: auto, generate or extract, not {mode!r}")
        options = AskOptions(
            k=k,
            groups=caller,
            filters=filters,
            mode=mode,  # type: ignore[arg-type]
            min_evidence=svc.settings.ask_min_evidence,
        )
        result = answer(svc, tenant, question, options)
        payload.update(
            answer=result["answer"],
            abstained=result["abstained"],
            answer_mode=result["answer_mode"],
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


@eval_app.command("retrieval")
def eval_retrieval(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant.")],
    data: Annotated[Path, typer.Option(help='JSONL: {"query": ..., "relevant": [source]}.')],
    k: Annotated[int, typer.Option("--k", min=1, max=200)] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recall@1/5/10, MRR and nDCG@10 of hybrid, BM25-only and vector-only retrieval."""
    from appliance.review.review_eval import evaluate_retrieval

    svc = services()
    report = evaluate_retrieval(svc, tenant, data, k)
    svc.close()
    if as_json:
        print_json(report)
        return
    print(f"{report['queries']} queries")
    for mode in ("hybrid", "bm25", "vector"):
        r = report[mode]
        print(
            f"{mode:7} recall@1 {r['recall@1']:.3f}  recall@5 {r['recall@5']:.3f}  "
            f"recall@10 {r['recall@10']:.3f}  MRR {r['mrr']:.3f}  nDCG@10 {r['ndcg@10']:.3f}"
        )


@eval_app.command("ask")
def eval_ask(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant.")],
    data: Annotated[Path, typer.Option(help='JSONL: {"question": ..., "relevant": [source]}.')],
    k: Annotated[int, typer.Option("--k", min=1, max=20)] = 6,
    curve: Annotated[
        bool,
        typer.Option(
            "--curve",
            help="Run the model on every question and report each abstention threshold "
            "(to tune ask_min_evidence).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Citation validity, answered and hit rates, abstention precision and recall, latency."""
    from appliance.review.review_eval import evaluate_ask

    svc = services()
    report = evaluate_ask(svc, tenant, data, k, curve=curve)
    svc.close()
    if as_json:
        print_json(report)
        return
    for key in (
        "questions",
        "citations",
        "citation_validity",
        "min_evidence",
        "answerable_answered_rate",
        "answerable_hit_rate",
        "abstention_precision",
        "abstention_recall",
        "latency_ms_p50",
    ):
        print(f"{key:24} {report[key]}")
    modes = report["answer_modes"]
    print(
        f"{'answers':24} {modes['generated']} written, {modes['extractive']} quoted, "
        f"{modes['abstained']} abstained"
    )
    for row in report.get("curve", []):
        print(
            f"threshold {row['threshold']:.2f}: answered {row['answerable_answered_rate']}, "
            f"hit {row['answerable_hit_rate']}, abstention recall {row['abstention_recall']}, "
            f"precision {row['abstention_precision']}"
        )


def register(app: typer.Typer) -> None:
    app.command()(ask)
