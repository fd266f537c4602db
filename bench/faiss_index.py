"""VectorIndex against raw FAISS: search latency, ACL-filtered search, HNSW build, save/open.

For N random unit vectors of dim 384: p50/p99 latency of ``VectorIndex.search`` (k=10),
without and with an ``allowed`` set of half the ids, beside a raw search of the very same
FAISS index object (``IndexIDMap2`` over Flat or HNSW) with its selector built once,
outside the timing, as a program that never changes its ACLs could. The VectorIndex
figure includes building the selector from the allowed ids on every query, as the API
does. Random vectors are the hardest case for HNSW, so its recall@10 (against the exact
result) is reported; ``--data lowrank`` makes vectors of intrinsic dimension ~32, nearer
to sentence embeddings. For the HNSW index a sweep over allowed fractions times the graph
search against the exact scan of the allowed vectors: how ``_EXACT_FRACTION`` was chosen.

    .venv/bin/python bench/faiss_index.py [--sizes 10000 100000] [--queries 200]
        [--threads 2] [--hnsw-from 100000] [--data random]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from appliance.corpus import vectors
from appliance.corpus.vectors import VectorIndex
from appliance.testing import cpu_name

DIM = 384
K = 10
KEY = bytes(32)


def unit(n: int, seed: int, data: str = "random") -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    if data == "lowrank":  # intrinsic dimension ~32, like sentence embeddings, unlike noise
        basis = np.random.default_rng(99).standard_normal((32, DIM)).astype(np.float32)
        x = rng.standard_normal((n, 32)).astype(np.float32) @ basis + 0.5 * x
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latency(fn: Callable[[np.ndarray], Any], queries: np.ndarray) -> dict[str, float]:
    fn(queries[0])  # warm up
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def recall(index: VectorIndex, truth: list[list[int]], queries: np.ndarray, allowed: Any) -> float:
    got = [[h.chunk_id for h in index.search(q, K, allowed=allowed)] for q in queries]
    return round(
        float(np.mean([len(set(g) & set(t)) / K for g, t in zip(got, truth, strict=True)])), 3
    )


def raw_params(kind: str, sel: Any) -> Any:
    params = faiss.SearchParametersHNSW() if kind == "hnsw" else faiss.SearchParameters()
    if kind == "hnsw":
        params.efSearch = 128
    if sel is not None:
        params.sel = sel
    return params


def measure(index: VectorIndex, queries: np.ndarray, allowed: np.ndarray) -> dict[str, Any]:
    raw = index._contents.index  # the same FAISS object, searched directly
    batch = faiss.IDSelectorBatch(allowed)
    plain, filtered = raw_params(index.kind, None), raw_params(index.kind, batch)
    return {
        "vector_index": latency(lambda q: index.search(q, K), queries),
        "raw_faiss": latency(lambda q: raw.search(q.reshape(1, -1), K, params=plain), queries),
        "vector_index_allowed_50pct": latency(
            lambda q: index.search(q, K, allowed=allowed), queries
        ),
        "raw_faiss_allowed_50pct": latency(
            lambda q: raw.search(q.reshape(1, -1), K, params=filtered), queries
        ),
    }


def save_open(index: VectorIndex, kind: str) -> dict[str, float]:
    start = time.perf_counter()
    index.save()
    saved = time.perf_counter() - start
    start = time.perf_counter()
    VectorIndex.open(index.path, KEY, DIM, kind=kind)  # type: ignore[arg-type]
    opened = time.perf_counter() - start
    return {
        "save_s": round(saved, 3),
        "open_s": round(opened, 3),
        "file_mb": round(index.path.stat().st_size / 2**20, 1),
    }


def threads_qps(index: VectorIndex, queries: np.ndarray, n_threads: int) -> float:
    def worker() -> None:
        for q in queries:
            index.search(q, K)

    pool = [threading.Thread(target=worker) for _ in range(n_threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return round(n_threads * len(queries) / (time.perf_counter() - start), 1)


def selectivity_sweep(
    index: VectorIndex, ids: np.ndarray, queries: np.ndarray, truth_of: Any
) -> list[dict[str, Any]]:
    rows, chosen = [], vectors._EXACT_FRACTION
    rng = np.random.default_rng(5)
    for fraction in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5):
        allowed = rng.choice(ids, int(len(ids) * fraction), replace=False)
        row: dict[str, Any] = {"allowed_fraction": fraction}
        for path, cut in (("graph", 0.0), ("exact_scan", 1.01)):
            vectors._EXACT_FRACTION = cut
            row[path] = latency(lambda q, a=allowed: index.search(q, K, allowed=a), queries)
            row[path]["recall_at_10"] = recall(index, truth_of(allowed), queries, allowed)
        rows.append(row)
    vectors._EXACT_FRACTION = chosen
    return rows


def run(
    sizes: list[int], n_queries: int, threads: int, hnsw_from: int, data: str
) -> dict[str, Any]:
    faiss.omp_set_num_threads(threads)
    queries = unit(n_queries, seed=1, data=data)
    results: dict[str, Any] = {
        "machine": {"cpu": cpu_name(), "threads": threads, "faiss": faiss.__version__},
        "data": data,
        "dim": DIM,
        "k": K,
        "queries": n_queries,
        "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            ids = np.arange(1, n + 1, dtype=np.int64)
            vecs = unit(n, seed=0, data=data)
            allowed = np.random.default_rng(2).choice(ids, n // 2, replace=False)
            kinds = ["flat"] if n < hnsw_from else ["flat", "hnsw"]
            entry: dict[str, Any] = {}

            def truth_of(
                subset: np.ndarray, n: int = n, vecs: np.ndarray = vecs
            ) -> list[list[int]]:
                mask = np.zeros(n + 1, dtype=bool)
                mask[subset] = True
                scores = np.where(mask[1:], queries[:100] @ vecs.T, -np.inf)
                return [list(np.argsort(-s)[:K] + 1) for s in scores]

            for kind in kinds:
                index = VectorIndex.open(Path(tmp) / f"{kind}-{n}.sealed", KEY, DIM, kind=kind)  # type: ignore[arg-type]
                start = time.perf_counter()
                index.add(ids, vecs)
                row: dict[str, Any] = {"build_s": round(time.perf_counter() - start, 2)}
                row |= measure(index, queries, allowed)
                row["recall_at_10"] = recall(index, truth_of(ids), queries[:100], None)
                row["recall_at_10_allowed_50pct"] = recall(
                    index, truth_of(allowed), queries[:100], allowed
                )
                row["qps_1_thread"] = threads_qps(index, queries[:100], 1)
                row[f"qps_{threads}_threads"] = threads_qps(index, queries[:100], threads)
                row |= save_open(index, kind)
                if kind == "hnsw":
                    row["allowed_sweep"] = selectivity_sweep(index, ids, queries[:100], truth_of)
                entry[kind] = row
                del index
            results["sizes"][str(n)] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hnsw-from", type=int, default=100_000, help="also HNSW from this N")
    parser.add_argument("--data", choices=["random", "lowrank"], default="random")
    args = parser.parse_args()
    result = run(args.sizes, args.queries, args.threads, args.hnsw_from, args.data)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
