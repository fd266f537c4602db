"""``appliance eval retrieval`` and ``appliance eval ask``: measured on labelled questions.

Retrieval: lines ``{"query": ..., "relevant": [source, ...]}``; recall@1/5/10, MRR and
nDCG@10 (binary relevance, by document) for hybrid, BM25-only and vector-only, side by side.

Ask: lines ``{"question": ..., "relevant": [source, ...]}``, an empty ``relevant`` meaning
the documents do not answer it; the citation validity rate (citations whose quote is the
document text at their offsets), the hit rate on answerable questions (answered, citing a
relevant document), abstention precision and recall, how the answers were made (written
by the model, or quoted from a source when nothing the model wrote held), and latency.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.corpus.search import search
from appliance.errors import InvalidInput

if TYPE_CHECKING:
    from appliance.services import Services

MAX_LINES = 100_000


def load_jsonl(path: Path, text_key: str) -> list[tuple[str, list[str]]]:
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text, relevant = item[text_key], item["relevant"]
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(
                f'{path}:{number}: expected {{"{text_key}": ..., "relevant": [...]}}'
            ) from None
        if not isinstance(text, str) or not text.strip() or not isinstance(relevant, list):
            raise InvalidInput(f"{path}:{number}: '{text_key}' must be text, 'relevant' a list")
        rows.append((text, [str(r) for r in relevant]))
        if len(rows) > MAX_LINES:
            raise InvalidInput(f"{path}: more than {MAX_LINES} lines")
    if not rows:
        raise InvalidInput(f"{path}: no lines")
    return rows


def _ranked_sources(hits: list[Any]) -> list[str]:
    return list(dict.fromkeys(h.source for h in hits))


def retrieval_metrics(ranked: list[list[str]], relevant: list[list[str]]) -> dict[str, float]:
    def at(r: list[str], rel: set[str], k: int) -> float:
        return len(set(r[:k]) & rel) / len(rel)

    recall = {k: [] for k in (1, 5, 10)}  # type: dict[int, list[float]]
    mrr, ndcg = [], []
    for r, rel_list in zip(ranked, relevant, strict=True):
        rel = set(rel_list)
        for k in recall:
            recall[k].append(at(r, rel, k))
        first = next((i for i, s in enumerate(r) if s in rel), None)
        mrr.append(1 / (first + 1) if first is not None else 0.0)
        dcg = sum(1 / math.log2(i + 2) for i, s in enumerate(r[:10]) if s in rel)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(rel), 10)))
        ndcg.append(dcg / ideal)
    out = {f"recall@{k}": round(statistics.fmean(v), 4) for k, v in recall.items()}
    out["mrr"] = round(statistics.fmean(mrr), 4)
    out["ndcg@10"] = round(statistics.fmean(ndcg), 4)
    return out


def evaluate_retrieval(services: Services, tenant: str, path: Path, k: int) -> dict[str, Any]:
    rows = [(q, rel) for q, rel in load_jsonl(path, "query") if rel]
    if not rows:
        raise InvalidInput(f"{path}: no query has a relevant document")
    corpus = services.corpus(tenant)
    report: dict[str, Any] = {"queries": len(rows), "k": k}
    for mode in ("hybrid", "bm25", "vector"):
        started = time.perf_counter()
        ranked = [_ranked_sources(search(corpus, q, k=max(k, 10), mode=mode)) for q, _ in rows]
        report[mode] = retrieval_metrics(ranked, [rel for _, rel in rows])
        report[mode]["ms_per_query"] = round((time.perf_counter() - started) * 1000 / len(rows), 2)
    return report


CURVE_THRESHOLDS = (0.25, 0.3, 0.35, 0.38, 0.4, 0.42, 0.45, 0.5)


@dataclass(frozen=True, slots=True)
class Asked:
    """One question's outcome: its evidence, and what the pipeline made of it."""

    answerable: bool
    evidence: float
    abstained: bool
    hit: bool  # answered, citing a relevant document
    mode: str  # generated, extractive or abstained


def evaluate_ask(
    services: Services, tenant: str, path: Path, k: int, *, curve: bool = False
) -> dict[str, Any]:
    """Ask each question once; with ``curve``, at threshold 0 so every question is answered
    by the model and verified, and the outcome at any threshold follows from its evidence."""
    from appliance.review.answering import AskOptions, ask

    threshold = services.settings.ask_min_evidence
    options = AskOptions(k=k, min_evidence=0.0 if curve else threshold)
    store = services.corpus(tenant).store
    texts: dict[int, str] = {}
    valid = total = 0
    asked, latencies = [], []
    for question, relevant in load_jsonl(path, "question"):
        started = time.perf_counter()
        result = ask(services, tenant, question, options)
        latencies.append((time.perf_counter() - started) * 1000)
        for c in result["citations"]:
            doc = texts.setdefault(c["document_id"], store.document_text(c["document_id"]))
            valid += doc[c["start"] : c["end"]] == c["quote"]
            total += 1
        cited = {c["source"] for c in result["citations"]}
        hit = not result["abstained"] and bool(cited & set(relevant))
        outcome = Asked(
            bool(relevant), result["evidence"], result["abstained"], hit, result["answer_mode"]
        )
        asked.append(outcome)
    report: dict[str, Any] = {
        "questions": len(asked),
        "citation_validity": round(valid / total, 4) if total else None,
        "citations": total,
        "min_evidence": threshold,
        **outcomes(asked, threshold),
        "latency_ms_p50": round(statistics.median(latencies), 1),
    }
    if curve:
        report["curve"] = [{"threshold": t, **outcomes(asked, t)} for t in CURVE_THRESHOLDS]
    return report


def outcomes(asked: list[Asked], threshold: float) -> dict[str, Any]:
    """The rates at ``threshold``: a question below it abstains before the model runs."""

    def rate(n: int, d: int) -> float | None:
        return round(n / d, 4) if d else None

    answerable = [a for a in asked if a.answerable]
    unanswerable = [a for a in asked if not a.answerable]
    abstains = [a for a in asked if a.abstained or a.evidence < threshold]
    right = [a for a in abstains if not a.answerable]
    answered = [a for a in answerable if not a.abstained and a.evidence >= threshold]
    return {
        "answerable_answered_rate": rate(len(answered), len(answerable)),
        "answerable_hit_rate": rate(sum(a.hit for a in answered), len(answerable)),
        "abstention_precision": rate(len(right), len(abstains)),
        "abstention_recall": rate(len(right), len(unanswerable)),
        "answer_modes": {
            mode: sum(a.mode == mode and a.evidence >= threshold for a in asked)
            for mode in ("generated", "extractive")
        }
        | {"abstained": len(abstains)},
    }
