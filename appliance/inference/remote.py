"""A chat model served by an OpenAI-compatible server on the private network.

This is the path for deployments that outgrow one machine: vLLM, llama.cpp's server or
llama-cpp-python's server run the model, the appliance keeps retrieval, verification,
audit and access control. Only the configured upstream is ever contacted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from appliance.errors import GenerationError, InvalidInput
from appliance.inference.chat import (
    Completion,
    GenerationParams,
    Message,
    StreamStats,
    check_json_schema,
    complete_from_stream,
)

# Used only when the upstream offers no tokenize endpoint: English averages ~4 characters
# per token; 3 over-counts, so prompts sized with it still fit the context.
_CHARS_PER_TOKEN_FALLBACK = 3


@dataclass
class RemoteChat:
    """Chat completions from ``<base_url>/v1/chat/completions``."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    n_ctx: int = 4096
    _client: httpx.Client = field(init=False, repr=False)
    _tokenize_route: str | None = field(init=False, default=None, repr=False)
    _json_mode: str = field(init=False, default="json_schema", repr=False)

    def __post_init__(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.base_url = self.base_url.rstrip("/").removesuffix("/v1")
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout_s)

    @property
    def model_ref(self) -> str:
        return f"remote:{self.model}"

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def close(self) -> None:
        self._client.close()

    def count_tokens(self, text: str) -> int:
        """Count with the upstream's own tokenizer when it exposes one."""
        routes = [self._tokenize_route] if self._tokenize_route else list(_TOKENIZE_ROUTES)
        for route in routes:
            assert route is not None
            try:
                resp = self._client.post(route, json=_TOKENIZE_ROUTES[route](text, self.model))
            except httpx.HTTPError:
                break
            if resp.status_code == 200 and "tokens" in resp.json():
                self._tokenize_route = route
                return len(resp.json()["tokens"])
        return max(1, len(text) // _CHARS_PER_TOKEN_FALLBACK)

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams = GenerationParams(),
        *,
        json_schema: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        stats = stats if stats is not None else StreamStats()
        body = self._body(messages, params, json_schema)
        try:
            yield from self._stream_body(body, json_schema, cancel, stats)
        except httpx.HTTPError as exc:
            raise GenerationError(
                f"upstream chat server {self.base_url} failed: {type(exc).__name__}"
            ) from None

    def _stream_body(
        self,
        body: dict[str, Any],
        json_schema: dict[str, Any] | None,
        cancel: threading.Event | None,
        stats: StreamStats,
    ) -> Iterator[str]:
        with self._client.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code >= 400 and json_schema and self._json_mode == "json_schema":
                # Servers of the llama.cpp family refuse the OpenAI json_schema format (some
                # with a 500) and take the schema inside a json_object format instead.
                resp.read()
                self._json_mode = "json_object"
                body["response_format"] = _response_format(json_schema, self._json_mode)
                yield from self._stream_body(body, json_schema, cancel, stats)
                return
            if resp.status_code != 200:
                resp.read()
                raise GenerationError(
                    f"upstream chat server {self.base_url} answered HTTP {resp.status_code}"
                )
            for piece in _sse_pieces(resp.iter_lines(), stats):
                if cancel is not None and cancel.is_set():
                    stats.finish_reason = "cancelled"
                    return
                yield piece

    def complete(
        self,
        messages: Sequence[Message],
        params: GenerationParams = GenerationParams(),
        *,
        json_schema: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        return complete_from_stream(self, messages, params, json_schema, cancel)

    def _body(
        self,
        messages: Sequence[Message],
        params: GenerationParams,
        json_schema: dict[str, Any] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if json_schema is not None:
            check_json_schema(json_schema)
            body["response_format"] = _response_format(json_schema, self._json_mode)
        return body


def _response_format(schema: dict[str, Any], mode: str) -> dict[str, Any]:
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    return {"type": "json_object", "schema": schema}


def _sse_pieces(lines: Iterator[str], stats: StreamStats) -> Iterator[str]:
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise GenerationError("upstream chat server sent a malformed stream event") from None
        if usage := chunk.get("usage"):
            stats.prompt_tokens = int(usage.get("prompt_tokens", 0))
        if not chunk.get("choices"):
            continue
        choice = chunk["choices"][0]
        piece = (choice.get("delta") or {}).get("content")
        if piece:
            stats.completion_tokens += 1
            yield piece
        if choice.get("finish_reason") == "length":
            stats.finish_reason = "length"


_TOKENIZE_ROUTES: dict[str, Any] = {
    "/tokenize": lambda text, model: {"content": text, "prompt": text, "model": model},
    "/extras/tokenize": lambda text, model: {"input": text, "model": model},
}


def validate_remote_url(url: str) -> str:
    """Accept only http(s) URLs with a host: the upstream is an explicit, private choice."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"remote chat URL {url!r} must be http(s)://HOST[:PORT]")
    return url
