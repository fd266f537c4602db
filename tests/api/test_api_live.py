"""The API over the network: a real uvicorn on 127.0.0.1, the real ``openai`` client.

Backpressure (503 + Retry-After under overload, the server healthy after it), a client
that disconnects stopping its generation, and no plaintext of a question or a document
anywhere under APPLIANCE_HOME once the server has stopped.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from appliance.config import Settings
from appliance.services import Services
from appliance.testing import LiveServer

pytestmark = pytest.mark.slow
CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"


@dataclass
class Live:
    server: LiveServer
    home: Path
    keys: dict[str, str]

    def client(self, who: str = "analyst") -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.server.url}/v1", api_key=self.keys[who], max_retries=0
        )

    def http(self, who: str = "analyst") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=120)


def start_live(root: Path, models: Path, **env_extra: str) -> Live:
    home = root / "home"
    home.mkdir()
    setup = Services.from_settings(Settings(home=home, models_dir=models))
    setup.tenants().create("acme")
    keys = {
        role: setup.apikeys().create(role=role, tenant="acme")[0] for role in ("analyst", "auditor")
    }
    setup.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_HOME=str(home),
        APPLIANCE_MODELS_DIR=str(models),
        APPLIANCE_THREADS="2",
        APPLIANCE_N_CTX="2048",
        **env_extra,
    )
    return Live(LiveServer.start(env, root / "serve.log"), home, keys)


@pytest.fixture(scope="module")
def live(staged_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    running = start_live(tmp_path_factory.mktemp("live"), staged_models)
    yield running
    assert running.server.stop() in (0, -15), running.server.log()


def test_openai_client_chat_plain_and_streamed(live: Live) -> None:
    client = live.client()
    assert {m.id for m in client.models.list().data} == {CHAT, EMBED}
    ask = [{"role": "user", "content": "Name three colours."}]
    plain = client.chat.completions.create(model=CHAT, messages=ask, max_tokens=24)  # type: ignore[arg-type]
    text = plain.choices[0].message.content
    assert text and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage is not None and 0 < plain.usage.completion_tokens <= 24
    stream = client.chat.completions.create(
        model=CHAT,
        messages=ask,  # type: ignore[arg-type]
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices]
    assert pieces[0] == "" and all(pieces[1:-1]) and pieces[-1] is None  # role, text, finish
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert chunks[-1].usage.completion_tokens == len(pieces) - 2


def test_openai_client_json_schema_output(live: Live) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    }
    done = live.client().chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "Which city is the capital of France?"}],
        max_tokens=100,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    import json

    assert isinstance(json.loads(done.choices[0].message.content or "")["city"], str)


def test_openai_client_embeddings(live: Live) -> None:
    client = live.client()
    floats = client.embeddings.create(model=EMBED, input=["notice period", "lease renewal"])
    assert [d.index for d in floats.data] == [0, 1]
    vectors = np.array([d.embedding for d in floats.data])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert floats.usage.prompt_tokens == 4
    with live.http() as http:
        raw = http.post(
            "/v1/embeddings",
            json={"model": EMBED, "input": "notice period", "encoding_format": "base64"},
        ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-6)


def test_openai_client_sees_clear_errors(live: Live) -> None:
    live.keys["forged"] = "apk_000000000000_" + "A" * 43
    with pytest.raises(openai.AuthenticationError):
        live.client("forged").models.list()
    client = live.client()
    with pytest.raises(openai.NotFoundError, match="not the active chat model"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError, match="temperature"):
        client.chat.completions.create(
            model=CHAT, messages=[{"role": "user", "content": "hi"}], temperature=5
        )
    with pytest.raises(openai.UnprocessableEntityError, match="input"):
        client.embeddings.create(model=EMBED, input=[])


def _metric(live: Live, name: str) -> float:
    text = httpx.get(f"{live.server.url}/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


def test_a_client_that_disconnects_stops_its_generation(live: Live) -> None:
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Write a very long story about a ship."}],
        "max_tokens": 1500,
        "stream": True,
    }
    with live.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert sum(1 for _, line in zip(range(6), lines, strict=False) if line) == 3
    deadline = time.monotonic() + 30
    while _metric(live, "appliance_llm_running") != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _metric(live, "appliance_llm_running") == 0
    with live.http("auditor") as http:
        entries = http.get("/v1/audit", params={"limit": 1000}).json()
    last = [e for e in entries if e["action"] == "chat.completions"][-1]
    assert last["payload"]["finish_reason"] == "disconnected"
    assert last["payload"]["completion_tokens"] < 1500


def test_overload_is_503_with_retry_after_and_the_server_stays_healthy(
    staged_models: Path, tmp_path: Path
) -> None:
    busy = start_live(tmp_path, staged_models, APPLIANCE_LLM_QUEUE_LIMIT="1")
    try:
        body = {
            "model": CHAT,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 120,
        }
        with busy.http() as http:  # load the model before the burst
            assert http.post("/v1/chat/completions", json={**body, "max_tokens": 2}).is_success
        results: list[httpx.Response] = []

        def call() -> None:
            with busy.http() as http:
                results.append(http.post("/v1/chat/completions", json=body))

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        statuses = sorted(r.status_code for r in results)
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
        refused = next(r for r in results if r.status_code == 503)
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert "the model is busy" in refused.json()["detail"]
        assert httpx.get(f"{busy.server.url}/healthz").json() == {"status": "ok"}
        with busy.http() as http:
            assert http.post("/v1/chat/completions", json={**body, "max_tokens": 4}).is_success
    finally:
        busy.server.stop()


def test_no_plaintext_of_questions_or_documents_on_disk(
    staged_models: Path, tmp_path: Path
) -> None:
    marker = "zqxmarker" + os.urandom(6).hex()
    run = start_live(tmp_path, staged_models)
    try:
        document = f"Memo. The code word for the merger is {marker}. Keep it secret.".encode()
        with run.http() as http:
            up = http.post("/v1/documents", files={"file": ("memo.txt", document)})
            assert up.status_code == 201, up.text
            hits = http.post("/v1/search", json={"query": marker, "mode": "bm25"}).json()
            assert hits and marker in hits[0]["text"]  # it did reach the index
            chat = {
                "model": CHAT,
                "messages": [{"role": "user", "content": f"What does {marker} mean?"}],
                "max_tokens": 8,
            }
            assert http.post("/v1/chat/completions", json=chat).is_success
            embed = {"model": EMBED, "input": f"{marker} question"}
            assert http.post("/v1/embeddings", json=embed).is_success
        with run.http("auditor") as http:  # the audit holds it, encrypted
            assert marker in str(http.get("/v1/audit").json())
    finally:
        run.server.stop()
    needles = [marker.encode(), marker.encode("utf-16-le")]
    scanned = 0
    for path in run.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            assert not any(n in data for n in needles), f"plaintext marker in {path}"
    assert scanned >= 8  # keys, key DB, audit DB, corpus DB, sealed vectors...


def test_generation_timeout_is_504_and_a_cut_stream_says_length(
    staged_models: Path, tmp_path: Path
) -> None:
    slow = start_live(tmp_path, staged_models, APPLIANCE_LLM_REQUEST_TIMEOUT_S="1")
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Write a very long story about a ship."}],
        "max_tokens": 2000,
    }
    try:
        with slow.http() as http:
            http.post("/v1/chat/completions", json={**body, "max_tokens": 2})  # load the model
            started = time.monotonic()
            resp = http.post("/v1/chat/completions", json=body)
            assert resp.status_code == 504, resp.text
            assert "ran past 1 s and was stopped" in resp.json()["detail"]
            assert time.monotonic() - started < 15  # stopped, not run to 2000 tokens
            with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
                events = [line for line in s.iter_lines() if line.startswith("data: {")]
            import json

            assert json.loads(events[-1][6:])["choices"][0]["finish_reason"] == "length"
    finally:
        slow.server.stop()


def test_a_plain_request_whose_client_leaves_stops_generating(live: Live) -> None:
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "Write a very long story about a ship."}],
        "max_tokens": 1500,
    }
    with live.http() as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body, timeout=1.5)
    deadline = time.monotonic() + 10
    while _metric(live, "appliance_llm_running") != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _metric(live, "appliance_llm_running") == 0
