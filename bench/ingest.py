"""End-to-end ingest throughput vs the raw embedder on the same chunks, in the same run.

Writes ``--docs`` text documents of real prose (the Python Language Reference shipped
with CPython in ``pydoc_data.topics``) into a temporary folder, then, ``--repeats`` times
and alternating: ingests the folder into a fresh tenant (parse, chunk, embed, encrypted
store, FTS5, FAISS, sealed save), and embeds exactly the chunks that ingest produced with
a bare onnxruntime session + tokenizer in batches of 32. Reports chunks/s and MB/s of
both, their ratio (target >= 0.8), and peak memory.

    .venv/bin/python bench/ingest.py [--docs 200] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from embed import RawEncoder, prose_paragraphs

from appliance.config import Settings, load_settings
from appliance.corpus.ingest import IngestOptions, discover, ingest
from appliance.services import Services
from appliance.testing import cpu_name


def write_documents(folder: Path, n: int) -> int:
    paragraphs = prose_paragraphs()
    per_doc = max(1, len(paragraphs) // n)
    total = 0
    for i in range(n):
        body = "\n\n".join(paragraphs[i * per_doc : (i + 1) * per_doc])
        path = folder / f"doc-{i:04}.txt"
        path.write_text(body)
        total += path.stat().st_size
    return total


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(docs: int, repeats: int, threads: int) -> dict[str, Any]:
    base = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        size = write_documents(folder, docs)
        settings = Settings(home=Path(tmp) / "home", models_dir=base.models_dir, threads=threads)
        svc = Services.from_settings(settings)
        _, paths = svc.catalog.resolve("embedding")
        raw = RawEncoder(paths["weights"], paths["tokenizer"], threads)
        svc.embedder().embed(["warm up"])
        raw.embed(["warm up"])
        rss_before = rss_mb()
        ours_s, raw_s, chunks = [], [], 0
        for r in range(repeats):
            tenant = f"bench{r}"
            svc.tenants().create(tenant)
            corpus = svc.corpus(tenant)
            start = time.perf_counter()
            report = ingest(
                corpus, discover([folder]), options=IngestOptions.from_settings(settings)
            )
            ours_s.append(time.perf_counter() - start)
            assert not report.failed, report.failed
            ids = corpus.store.live_chunk_ids()
            texts = [c.text for c in corpus.store.chunks(list(map(int, ids))).values()]
            chunks = len(texts)
            start = time.perf_counter()
            for i in range(0, len(texts), 32):
                raw.embed(texts[i : i + 32])
            raw_s.append(time.perf_counter() - start)
        svc.close()
    ours, raw_t = statistics.median(ours_s), statistics.median(raw_s)
    return {
        "benchmark": "ingest",
        "machine": {"cpu": cpu_name(), "threads": threads},
        "documents": docs,
        "megabytes": round(size / 2**20, 3),
        "chunks": chunks,
        "repeats": repeats,
        "ours": {"chunks_s": round(chunks / ours, 1), "mb_s": round(size / 2**20 / ours, 3)},
        "raw_embedder": {"chunks_s": round(chunks / raw_t, 1)},
        "ratio": round(raw_t / ours, 3),
        "target_ratio": 0.8,
        "peak_rss_mb": round(rss_mb(), 1),
        "rss_after_model_load_mb": round(rss_before, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(run(args.docs, args.repeats, args.threads), indent=2))


if __name__ == "__main__":
    main()
