"""Hybrid search latency at 10k and 100k chunks vs raw FAISS on the same vectors.

Builds a tenant corpus of N chunks without the parser: chunk texts are sentences of real
prose (the Python Language Reference from ``pydoc_data.topics``); a pool of them is
embedded with the real default embedder once, and the N chunk vectors are those
embeddings with a little noise (re-normalised), so building 100k chunks takes a minute
rather than an hour of embedding. Each chunk goes through the real store (SQLCipher,
FTS5) and vector index. Then, for the same real queries: latency of ``search`` in
hybrid, bm25 and vector mode (query embedding included), and of a raw
``faiss.IndexFlatIP`` search of the same query vectors over the same vectors.

    .venv/bin/python bench/search.py [--sizes 10000 100000] [--queries 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from embed import first_sentences, prose_paragraphs

from appliance.config import Settings, load_settings
from appliance.corpus.chunking import ChunkDraft
from appliance.corpus.parsed import TextAssembly
from appliance.corpus.search import search
from appliance.services import Services
from appliance.testing import cpu_name

CHUNKS_PER_DOC = 100


def sentences() -> list[str]:
    out = []
    for p in prose_paragraphs():
        out.extend(s for s in re.split(r"(?<=\.)\s+", p) if len(s.split()) >= 6)
    return out


def build(svc: Services, tenant: str, n: int, pool: list[str], pool_vecs: np.ndarray) -> np.ndarray:
    """Store n chunks; returns their vectors in chunk-id order."""
    rng = np.random.default_rng(7)
    corpus = svc.corpus(tenant)
    all_vecs = []
    for d in range(0, n, CHUNKS_PER_DOC):
        count = min(CHUNKS_PER_DOC, n - d)
        picks = rng.integers(0, len(pool), count)
        asm = TextAssembly()
        drafts = []
        for i, p in enumerate(picks):
            block = asm.add("paragraph", pool[p], f"paragraph {i + 1}")
            assert block is not None
            drafts.append(
                ChunkDraft(i, block.start, block.end, pool[p], block.location, None, None, 30)
            )
        vecs = pool_vecs[picks] + rng.normal(0, 0.02, (count, pool_vecs.shape[1])).astype(
            np.float32
        )
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        parsed = asm.build("text/plain")
        stored = corpus.store.store_version(
            source=f"doc-{d}",
            sha256=f"{d:064x}",
            size=len(parsed.text),
            parsed=parsed,
            chunks=drafts,
            embeddings=vecs.astype(np.float32),
            acl=(),
        )
        corpus.apply(stored, vecs.astype(np.float32))
        all_vecs.append(vecs)
    corpus.save()
    return np.concatenate(all_vecs).astype(np.float32)


def latencies(fn: Any, queries: list[str]) -> dict[str, float]:
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[int(len(times) * 0.99) - 1], 3),
    }


def run(sizes: list[int], n_queries: int, threads: int) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(threads)
    base = load_settings()
    pool = sentences()[:3000]
    queries = first_sentences(prose_paragraphs())[:n_queries]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp), models_dir=base.models_dir, threads=threads)
        svc = Services.from_settings(settings)
        embedder = svc.embedder()
        pool_vecs = embedder.embed(pool)
        query_vecs = {q: embedder.embed([q])[0] for q in queries}
        for n in sizes:
            tenant = f"t{n}"
            svc.tenants().create(tenant)
            start = time.perf_counter()
            vecs = build(svc, tenant, n, pool, pool_vecs)
            build_s = time.perf_counter() - start
            corpus = svc.corpus(tenant)
            raw = faiss.IndexFlatIP(vecs.shape[1])
            raw.add(vecs)
            row: dict[str, Any] = {
                "chunks": n,
                "build_s": round(build_s, 1),
                "index": corpus.vectors.kind,
            }
            for mode in ("hybrid", "bm25", "vector"):
                row[mode] = latencies(
                    lambda q, m=mode, c=corpus: search(c, q, k=10, mode=m), queries
                )
            row["raw_faiss_flat"] = latencies(
                lambda q, r=raw: r.search(query_vecs[q][None, :], 10), queries
            )
            # search() asks each retriever for 50 candidates before fusion: the same depth raw
            row["raw_faiss_flat_k50"] = latencies(
                lambda q, r=raw: r.search(query_vecs[q][None, :], 50), queries
            )
            row["query_embedding"] = latencies(lambda q: embedder.embed([q]), queries)
            results.append(row)
        svc.close()
    return {
        "benchmark": "search",
        "machine": {"cpu": cpu_name(), "threads": threads},
        "queries": len(queries),
        "k": 10,
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(run(args.sizes, args.queries, args.threads), indent=2))


if __name__ == "__main__":
    main()
