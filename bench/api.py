"""The REST API's generation speed vs raw llama.cpp and llama-cpp-python's own server.

Three ways to generate with the same GGUF, threads and context, in one run, one at a time
(never two models busy at once on this machine):

- ``ours``: ``POST /v1/chat/completions`` (streamed) on ``appliance serve`` (real uvicorn);
- ``llama_cpp_server``: the same request to ``python -m llama_cpp.server``;
- ``raw``: ``llama_cpp.Llama.create_chat_completion(stream=True)`` in this process.

Generation tokens/s is measured from the first content chunk to the last, per request
(median), with a distinct system line per request so no prefix cache skips the prompt.
With ``--clients 4`` the servers also get four concurrent streams: aggregate tokens/s
over the wall time. Then the audit's cost per request: ``GET /v1/models`` in-process with
and without the audit middleware, alternating batches.

    .venv/bin/python bench/api.py [--threads 2] [--repeats 5] [--max-tokens 96] [--clients 4]

Prints one JSON object. Ratios are what to read; absolute figures move with machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from appliance.config import Settings, load_settings
from appliance.inference.catalog import ModelCatalog
from appliance.services import Services
from appliance.testing import LiveServer, bench_machine, free_port

PROMPT = "Explain in detail how a lighthouse works and why ships need one."


def _body(model: str, i: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": f"Request {i}. You are a careful assistant."},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
    }


def _stream_rate(url: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, float]:
    """(content chunks after the first, seconds from the first to the last) of one stream."""
    first = last = 0.0
    n = 0
    with httpx.stream("POST", url, json=body, headers=headers, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                now = time.perf_counter()
                first, last, n = (first or now), now, n + 1
    return n - 1, last - first


def _raw_rate(llm: Any, body: dict[str, Any]) -> tuple[int, float]:
    first = last = 0.0
    n = 0
    for chunk in llm.create_chat_completion(
        messages=body["messages"], max_tokens=body["max_tokens"], temperature=0.0, stream=True
    ):
        if chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter()
            first, last, n = (first or now), now, n + 1
    return n - 1, last - first


def _concurrent(
    url: str, headers: dict[str, str], model: str, clients: int, mt: int
) -> dict[str, float]:
    """Aggregate generated tokens/s of ``clients`` simultaneous streams, and how many broke."""
    counts: list[int] = []
    failures: list[str] = []

    def one(i: int) -> None:
        try:
            counts.append(_stream_rate(url, headers, _body(model, 1000 + i, mt))[0] + 1)
        except httpx.HTTPError as exc:
            failures.append(type(exc).__name__)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    return {"tok_s": round(sum(counts) / seconds, 1), "failed_streams": len(failures)}


def _start_llama_server(model: Path, threads: int, n_ctx: int, log: Path) -> tuple[Any, str]:
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    command += ["--n_ctx", str(n_ctx), "--n_gpu_layers", "0", "--verbose", "False"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")


def _our_server(root: Path, models: Path, threads: int, n_ctx: int) -> tuple[LiveServer, str]:
    home = root / "home"
    home.mkdir()
    setup = Services.from_settings(Settings(home=home, models_dir=models))
    setup.tenants().create("bench")
    key = setup.apikeys().create(role="analyst", tenant="bench")[0]
    setup.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_HOME=str(home),
        APPLIANCE_MODELS_DIR=str(models),
        APPLIANCE_THREADS=str(threads),
        APPLIANCE_N_CTX=str(n_ctx),
        APPLIANCE_DEVICE="cpu",
    )
    return LiveServer.start(env, root / "serve.log"), key


def generation(threads: int, repeats: int, max_tokens: int, clients: int) -> dict[str, Any]:
    import llama_cpp

    settings = load_settings()
    entry, paths = ModelCatalog(settings.models_dir).resolve("chat")
    n_ctx = 4096
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ours, key = _our_server(root, settings.models_dir, threads, n_ctx)
        theirs, theirs_url = _start_llama_server(paths["weights"], threads, n_ctx, root / "l.log")
        raw = llama_cpp.Llama(
            model_path=str(paths["weights"]),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            verbose=False,
        )
        targets = {
            "ours": lambda b: _stream_rate(
                f"{ours.url}/v1/chat/completions", {"Authorization": f"Bearer {key}"}, b
            ),
            "llama_cpp_server": lambda b: _stream_rate(f"{theirs_url}/v1/chat/completions", {}, b),
            "raw": lambda b: _raw_rate(raw, b),
        }
        rates: dict[str, list[float]] = {name: [] for name in targets}
        try:
            for i in range(repeats + 1):  # round 0 warms every path up and is discarded
                order = list(targets) if i % 2 == 0 else list(reversed(targets))
                for name in order:
                    n, seconds = targets[name](_body(entry.name, i * 10 + len(name), max_tokens))
                    if i:
                        rates[name].append(n / seconds)
            concurrent: dict[str, dict[str, float]] = {}
            if clients > 1:
                concurrent = {
                    "ours": _concurrent(
                        f"{ours.url}/v1/chat/completions",
                        {"Authorization": f"Bearer {key}"},
                        entry.name,
                        clients,
                        max_tokens,
                    ),
                    "llama_cpp_server": _concurrent(
                        f"{theirs_url}/v1/chat/completions", {}, entry.name, clients, max_tokens
                    ),
                }
        finally:
            ours.stop()
            theirs.terminate()
            theirs.wait(30)
    med = {name: statistics.median(v) for name, v in rates.items()}
    result: dict[str, Any] = {
        "model": entry.ref,
        "threads": threads,
        "repeats": repeats,
        "max_tokens": max_tokens,
        "single_client_gen_tok_s": {k: round(v, 1) for k, v in med.items()},
        "ratio_ours_vs_raw": round(med["ours"] / med["raw"], 3),
        "ratio_ours_vs_llama_cpp_server": round(med["ours"] / med["llama_cpp_server"], 3),
        "targets": {"ours_vs_raw": 0.9, "ours_vs_llama_cpp_server": 1.0},
    }
    if concurrent:
        result[f"{clients}_clients"] = concurrent
        result[f"{clients}_clients_ratio_ours_vs_llama_cpp_server"] = round(
            concurrent["ours"]["tok_s"] / concurrent["llama_cpp_server"]["tok_s"], 3
        )
    return result


def audit_cost(requests: int, batches: int) -> dict[str, Any]:
    """Per-request cost of the audit middleware: the same app with and without it."""
    from fastapi.testclient import TestClient
    from starlette.middleware import Middleware

    from appliance.api.app import create_app
    from appliance.api.auditing import AuditMiddleware

    settings = load_settings()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        cfg = Settings(home=home, models_dir=settings.models_dir)
        setup = Services.from_settings(cfg)
        setup.tenants().create("bench")
        key = setup.apikeys().create(role="analyst", tenant="bench")[0]
        setup.close()
        audited = create_app(cfg)
        bare = create_app(cfg)
        bare.user_middleware = [m for m in bare.user_middleware if m.cls is not AuditMiddleware]
        assert all(isinstance(m, Middleware) for m in bare.user_middleware)
        headers = {"Authorization": f"Bearer {key}"}
        per_request: dict[str, list[float]] = {"audited": [], "bare": []}
        with TestClient(audited) as a, TestClient(bare) as b:
            clients = {"audited": a, "bare": b}
            for i in range(batches + 1):
                for name in ["audited", "bare"] if i % 2 == 0 else ["bare", "audited"]:
                    start = time.perf_counter()
                    for _ in range(requests):
                        clients[name].get("/v1/models", headers=headers)
                    if i:
                        per_request[name].append((time.perf_counter() - start) / requests)
    med = {k: statistics.median(v) * 1e6 for k, v in per_request.items()}
    return {
        "requests_per_batch": requests,
        "batches": batches,
        "request_us": {k: round(v, 1) for k, v in med.items()},
        "audit_cost_us_per_request": round(med["audited"] - med["bare"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--audit-requests", type=int, default=200)
    parser.add_argument("--audit-batches", type=int, default=6)
    args = parser.parse_args()
    report = {
        "benchmark": "api",
        "machine": bench_machine(),
        "generation": generation(args.threads, args.repeats, args.max_tokens, args.clients),
        "audit": audit_cost(args.audit_requests, args.audit_batches),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
