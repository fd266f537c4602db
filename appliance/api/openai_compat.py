"""OpenAI-compatible chat completions, embeddings and model list.

Existing clients (the ``openai`` package, LangChain, curl scripts) work against the
appliance by pointing their base URL at ``/v1`` with an appliance API key. Only what the
local models support is accepted: one choice, text messages, ``json_schema`` /
``json_object`` response formats. Messages and answers go into the audit entry encrypted.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from appliance.api.auditing import audit_action
from appliance.api.deps import AuditDep, ServicesDep, require
from appliance.api.generation import GatedStream, llm_gate, run_cancellable, stream_in_thread
from appliance.apikeys import Principal
from appliance.errors import InvalidInput, UnknownModel
from appliance.inference.chat import (
    ChatModel,
    Completion,
    GenerationParams,
    Message,
    StreamStats,
    check_json_schema,
)
from appliance.services import Services

router = APIRouter(prefix="/v1", tags=["openai-compatible"])
Caller = Annotated[Principal, Depends(require("analyst"))]

MAX_MESSAGES_CHARS = 400_000
MAX_EMBED_INPUTS = 2048
MAX_EMBED_CHARS = 100_000


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_MESSAGES_CHARS)


class JsonSchemaFormat(BaseModel):
    name: str = "output"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat request a local model can honour."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "smollm2-135m-instruct",
                    "messages": [{"role": "user", "content": "Summarise clause 4 in one line."}],
                    "max_tokens": 128,
                }
            ]
        }
    )

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32_768)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None

    def params(self) -> GenerationParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4:
            raise InvalidInput("stop: at most 4 sequences")
        return GenerationParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or 512,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(stop),
            seed=self.seed,
        )

    def json_schema(self) -> dict[str, Any] | None:
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return {"type": "object"}
        if fmt.json_schema is None:
            raise InvalidInput("response_format: json_schema needs a 'json_schema.schema' object")
        check_json_schema(fmt.json_schema.schema_)
        return fmt.json_schema.schema_

    def chat_messages(self) -> list[Message]:
        if sum(len(m.content) for m in self.messages) > MAX_MESSAGES_CHARS:
            raise InvalidInput(f"messages: more than {MAX_MESSAGES_CHARS} characters in all")
        return [Message(role=m.role, content=m.content) for m in self.messages]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"model": "all-minilm-l6-v2", "input": ["notice period of the lease"]}]
        }
    )

    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] = Field(examples=[["notice period of the lease"]])
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise InvalidInput("input: give at least one text")
        if len(texts) > MAX_EMBED_INPUTS:
            raise InvalidInput(f"input: at most {MAX_EMBED_INPUTS} texts per request")
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidInput(f"input[{i}]: empty text")
            if len(text) > MAX_EMBED_CHARS:
                raise InvalidInput(f"input[{i}]: longer than {MAX_EMBED_CHARS} characters")
        return texts


def _check_model(asked: str, role: Literal["chat", "embedding"], services: Services) -> str:
    """The active model of ``role`` when ``asked`` names it (by name or name@version)."""
    entry = services.catalog.active(role)
    if asked not in (entry.name, entry.ref):
        raise UnknownModel(
            f"model {asked!r} is not the active {role} model; use {entry.name!r} (GET /v1/models)"
        )
    return entry.ref


@router.get("/models")
def list_models(
    principal: Annotated[Principal, Depends(require("analyst", "reviewer"))], services: ServicesDep
) -> dict[str, Any]:
    """The active chat and embedding models, as OpenAI's model list."""
    data = []
    for role in ("chat", "embedding"):
        entry = services.catalog.active(role)
        data.append(
            {
                "id": entry.name,
                "object": "model",
                "created": 0,
                "owned_by": "appliance",
                "role": role,
                "version": entry.version,
                "ref": entry.ref,
            }
        )
    return {"object": "list", "data": data}


@router.post(
    "/chat/completions", response_model=None, openapi_extra=audit_action("chat.completions")
)
async def chat_completions(
    body: ChatRequest, request: Request, principal: Caller, services: ServicesDep, record: AuditDep
) -> dict[str, Any] | GatedStream:
    """Generate a chat completion with the active chat model (``stream`` for SSE chunks)."""
    record.resource = f"model:{body.model}"
    record.payload["messages"] = [m.model_dump() for m in body.messages]
    ref = _check_model(body.model, "chat", services)
    record.models["chat"] = ref
    messages, params, schema = body.chat_messages(), body.params(), body.json_schema()
    model = await run_in_threadpool(services.chat)
    gate = llm_gate(request)
    if body.stream:
        await gate.enter()
        return GatedStream(
            _sse_chunks(model, messages, params, schema, body, request, record.payload), gate
        )
    async with gate.slot():
        done: Completion = await run_cancellable(
            request,
            lambda cancel: model.complete(messages, params, json_schema=schema, cancel=cancel),
            gate.request_timeout_s,
        )
    record.payload["answer"] = done.text
    _count_tokens(request, ref, done.completion_tokens)
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": done.text},
                "finish_reason": _finish(done.finish_reason),
            }
        ],
        "usage": _usage(done.prompt_tokens, done.completion_tokens),
    }


async def _sse_chunks(
    model: ChatModel,
    messages: list[Message],
    params: GenerationParams,
    schema: dict[str, Any] | None,
    body: ChatRequest,
    request: Request,
    payload: dict[str, Any],
) -> AsyncIterator[str]:
    gate = llm_gate(request)
    stats, cancel = StreamStats(), threading.Event()
    chunk_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    pieces: list[str] = []

    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        data = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "choices": [choice],
            **extra,
        }
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    finished = False
    try:
        yield chunk({"role": "assistant", "content": ""}, None)
        tokens = model.stream(messages, params, json_schema=schema, cancel=cancel, stats=stats)
        async for piece in stream_in_thread(tokens, cancel, gate.request_timeout_s):
            pieces.append(piece)
            yield chunk({"content": piece}, None)
        yield chunk({}, _finish(stats.finish_reason))
        if body.stream_options is not None and body.stream_options.include_usage:
            usage = _usage(stats.prompt_tokens, stats.completion_tokens)
            data = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": [],
                "usage": usage,
            }
            yield f"data: {json.dumps(data)}\n\n"
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        # a stream cut short by its client ends here too: say so in the audit entry
        payload["answer"] = "".join(pieces)
        payload["finish_reason"] = stats.finish_reason if finished else "disconnected"
        payload["completion_tokens"] = len(pieces)
        _count_tokens(request, model.model_ref, len(pieces))


def _finish(reason: str) -> str:
    # a cancelled generation (timeout) reads as cut short, which is what OpenAI clients know
    return "stop" if reason == "stop" else "length"


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _count_tokens(request: Request, model_ref: str, tokens: int) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.generated_tokens.labels(model=model_ref).inc(tokens)


@router.post("/embeddings", openapi_extra=audit_action("embeddings"))
async def embeddings(
    body: EmbeddingRequest, principal: Caller, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Embed texts with the active embedding model (unit-length vectors)."""
    record.resource = f"model:{body.model}"
    texts = body.texts()
    record.payload["inputs"] = len(texts)
    ref = _check_model(body.model, "embedding", services)
    record.models["embedding"] = ref
    embedder = await run_in_threadpool(services.embedder)
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise InvalidInput(f"dimensions: this model gives {embedder.dim}, not {body.dimensions}")
    vectors = await run_in_threadpool(embedder.embed, texts)
    tokens = sum(await run_in_threadpool(embedder.count_tokens, texts))
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: np.ndarray[Any, Any], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
