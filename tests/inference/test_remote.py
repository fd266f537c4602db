"""RemoteChat against a real OpenAI-compatible server: llama-cpp-python's own, on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.errors import GenerationError, InvalidInput
from appliance.inference.catalog import ModelCatalog
from appliance.inference.chat import GenerationParams, StreamStats
from appliance.inference.remote import RemoteChat, validate_remote_url

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def upstream(staged_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` serving the default chat model on 127.0.0.1."""
    _, paths = ModelCatalog(staged_models).resolve("chat")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("upstream") / "server.log"
    log = log_path.open(
        "wb"
    )  # a file, not a pipe: llama.cpp's load log would fill a pipe and block
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(paths["weights"]),
            "--model_alias",
            "smollm2",
            "--n_threads",
            "2",
            "--n_ctx",
            "2048",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        proc.wait(10)
        log.close()
        pytest.fail(f"llama_cpp.server did not start within 60 s: {log_path.read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
def remote() -> Iterator[Callable[..., RemoteChat]]:
    """Makes RemoteChat clients and closes them (their sockets) after the test."""
    made: list[RemoteChat] = []

    def make(*args: Any, **kwargs: Any) -> RemoteChat:
        made.append(RemoteChat(*args, **kwargs))
        return made[-1]

    yield make
    for chat in made:
        chat.close()


def test_complete_and_stream(upstream: str, remote: Callable[..., RemoteChat]) -> None:
    chat = remote(upstream + "/v1", "smollm2")
    out = chat.complete(QUESTION, GenerationParams(max_tokens=40))  # type: ignore[arg-type]
    assert "Paris" in out.text and out.model == "remote:smollm2"
    stats = StreamStats()
    pieces = list(chat.stream(QUESTION, GenerationParams(max_tokens=40), stats=stats))  # type: ignore[arg-type]
    assert len(pieces) > 3 and "Paris" in "".join(pieces)
    assert stats.completion_tokens == len(pieces)


def test_json_schema_through_the_upstream(upstream: str, remote: Callable[..., RemoteChat]) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    }
    chat = remote(upstream, "smollm2")
    out = chat.complete(
        [{"role": "user", "content": "Paris is the capital of France. Give the city as JSON."}],
        GenerationParams(max_tokens=40),
        json_schema=schema,
    )
    assert isinstance(json.loads(out.text)["city"], str)


def test_tokens_are_counted_by_the_upstream_tokenizer(
    upstream: str, remote: Callable[..., RemoteChat]
) -> None:
    chat = remote(upstream, "smollm2")
    assert 3 <= chat.count_tokens("What is the capital of France?") <= 10
    assert chat._tokenize_route is not None  # the upstream's tokenizer, not the fallback


def test_cancel_stops_the_remote_stream(upstream: str, remote: Callable[..., RemoteChat]) -> None:
    chat = remote(upstream, "smollm2")
    cancel = threading.Event()
    stats = StreamStats()
    stream = chat.stream(
        [{"role": "user", "content": "Count from one to five hundred in words."}],  # type: ignore[list-item]
        GenerationParams(max_tokens=400),
        cancel=cancel,
        stats=stats,
    )
    next(stream)
    cancel.set()
    assert list(stream) == [] and stats.finish_reason == "cancelled"


def test_unreachable_upstream_is_a_clear_error(remote: Callable[..., RemoteChat]) -> None:
    port = _free_port()  # nothing listens there
    chat = remote(f"http://127.0.0.1:{port}", "smollm2", timeout_s=2)
    with pytest.raises(
        GenerationError, match=f"upstream chat server http://127.0.0.1:{port} failed"
    ):
        chat.complete(QUESTION)  # type: ignore[arg-type]


def test_bad_urls_are_refused() -> None:
    with pytest.raises(InvalidInput, match="must be http"):
        validate_remote_url("ftp://10.0.0.1/")
    with pytest.raises(InvalidInput, match="must be http"):
        validate_remote_url("10.0.0.1:8000")
