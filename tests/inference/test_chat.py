"""The in-process chat runtime with the real default model (SmolLM2-135M Q4_1)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any

import jsonschema
import pytest

from appliance.errors import InvalidInput, ModelFormatError
from appliance.inference.chat import (
    GenerationParams,
    LlamaCppChat,
    StreamStats,
    resolve_gpu_layers,
    strict_json_strings,
)

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"type": "string", "maxLength": 30},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}


def test_generation_returns_text(chat_model: LlamaCppChat) -> None:
    out = chat_model.complete(QUESTION, GenerationParams(max_tokens=40))  # type: ignore[arg-type]
    assert "Paris" in out.text
    assert out.finish_reason == "stop" and out.completion_tokens > 0 and out.prompt_tokens > 10
    assert out.model == "smollm2-135m-instruct@1"


def test_stream_yields_pieces_that_make_the_answer(chat_model: LlamaCppChat) -> None:
    stats = StreamStats()
    pieces = list(chat_model.stream(QUESTION, GenerationParams(max_tokens=40), stats=stats))  # type: ignore[arg-type]
    assert len(pieces) > 3
    assert "Paris" in "".join(pieces)
    assert stats.completion_tokens == len(pieces)


def test_max_tokens_reports_length(chat_model: LlamaCppChat) -> None:
    out = chat_model.complete(
        [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        GenerationParams(max_tokens=8),
    )
    assert out.finish_reason == "length" and out.completion_tokens <= 8


def test_json_schema_output_parses_and_validates(chat_model: LlamaCppChat) -> None:
    messages = [
        {
            "role": "user",
            "content": "Ada Lovelace, 36, lives in London. Give her name, age and city as JSON.",
        }
    ]
    out = chat_model.complete(messages, GenerationParams(max_tokens=80), json_schema=PERSON_SCHEMA)  # type: ignore[arg-type]
    value = json.loads(out.text)
    jsonschema.validate(value, PERSON_SCHEMA)
    assert set(value) == {"name", "age", "city"}


def test_invalid_json_schema_is_refused(chat_model: LlamaCppChat) -> None:
    with pytest.raises(InvalidInput, match="not a valid JSON Schema"):
        chat_model.complete(QUESTION, json_schema={"type": "no-such-type"})  # type: ignore[arg-type]


def test_schema_the_grammar_cannot_express_is_refused(chat_model: LlamaCppChat) -> None:
    with pytest.raises(InvalidInput, match="cannot be expressed as a grammar"):
        chat_model.complete(QUESTION, json_schema={"not": {"type": "string"}})  # type: ignore[arg-type]


def test_cancel_stops_generation_and_frees_the_model(chat_model: LlamaCppChat) -> None:
    cancel = threading.Event()
    stats = StreamStats()
    stream = chat_model.stream(
        [{"role": "user", "content": "Count from one to five hundred in words."}],  # type: ignore[list-item]
        GenerationParams(max_tokens=400),
        cancel=cancel,
        stats=stats,
    )
    first = next(stream)
    cancel.set()
    rest = list(stream)
    assert first and rest == [] and stats.finish_reason == "cancelled"
    assert chat_model._lock.acquire(blocking=False)
    chat_model._lock.release()


def test_a_consumer_that_goes_away_frees_the_model(chat_model: LlamaCppChat) -> None:
    stream = chat_model.stream(QUESTION, GenerationParams(max_tokens=200))  # type: ignore[arg-type]
    next(stream)
    stream.close()  # what a disconnecting HTTP client triggers
    assert chat_model._lock.acquire(blocking=False)
    chat_model._lock.release()


def test_concurrent_callers_are_serialised(chat_model: LlamaCppChat) -> None:
    windows: list[tuple[float, float]] = []

    def generate() -> None:
        stream = chat_model.stream(QUESTION, GenerationParams(max_tokens=20))  # type: ignore[arg-type]
        next(stream)
        first = time.perf_counter()
        list(stream)
        windows.append((first, time.perf_counter()))

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(windows) == 3
    windows.sort()
    # generation windows never overlap: one caller holds the model at a time
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(windows))


def test_token_count_uses_the_model_tokenizer(chat_model: LlamaCppChat) -> None:
    assert chat_model.count_tokens("") == 0
    assert 3 <= chat_model.count_tokens("What is the capital of France?") <= 10
    assert chat_model.context_length == 2048


def test_gpu_layers_resolution() -> None:
    assert resolve_gpu_layers("auto", "auto", gpu_build=False) == 0
    assert resolve_gpu_layers("auto", "auto", gpu_build=True) == -1
    assert resolve_gpu_layers(12, "auto", gpu_build=True) == 12
    assert resolve_gpu_layers("auto", "cpu", gpu_build=True) == 0
    with pytest.raises(ModelFormatError, match="built without CUDA"):
        resolve_gpu_layers("auto", "cuda", gpu_build=False)


def test_json_strings_cannot_hold_raw_control_characters(chat_model: LlamaCppChat) -> None:
    # llama-cpp-python's own converter allows a raw newline inside a string; this prompt made
    # the default model write one, and the answer was then invalid JSON (a 502)
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    }
    gbnf = strict_json_strings(json_schema_to_gbnf(json.dumps(schema)))
    assert r'char ::= [^"\\\x7F\x00-\x1F] |' in gbnf
    question = [{"role": "user", "content": "Which city is the capital of France?"}]
    out = chat_model.complete(question, GenerationParams(max_tokens=100), json_schema=schema)  # type: ignore[arg-type]
    assert isinstance(json.loads(out.text)["city"], str)
