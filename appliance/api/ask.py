"""``POST /v1/ask`` and ``POST /v1/extract``: answers and fields from the caller's documents.

The generation waits its turn at the model gate like any chat request. With
``stream: true`` the response is server-sent events: ``token`` events while the model
writes, then one ``result`` event with the verified answer (the same object as the plain
response: only supported sentences, checked citations), then ``done``.

``POST /v1/extract`` fills a JSON schema from one document; every value comes with its
evidence span, checked in the document text, or is null with a reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from appliance.api.auditing import AuditRecord, audit_action
from appliance.api.deps import AuditDep, ServicesDep, require, tenant_of
from appliance.api.documents import FiltersRequest
from appliance.api.generation import GatedStream, llm_gate, run_cancellable, stream_in_thread
from appliance.apikeys import Principal
from appliance.inference.chat import ChatModel, GenerationParams, Message
from appliance.review import answering
from appliance.review import extract as extraction

router = APIRouter(prefix="/v1", tags=["review"])
Asker = Annotated[Principal, Depends(require("analyst", "reviewer"))]
Extractor = Annotated[Principal, Depends(require("analyst"))]


class AskRequest(BaseModel):
    model_config = {
        "json_schema_extra": {"examples": [{"question": "When does the warehouse lease end?"}]}
    }

    question: str = Field(min_length=1, max_length=answering.MAX_QUESTION_CHARS)
    k: int = Field(default=answering.DEFAULT_K, ge=1, le=20)
    filters: FiltersRequest | None = None
    mode: answering.AnswerMode = Field(
        default="auto",
        description="auto: generate, else quote the best source sentence; generate: the "
        "model only; extract: quote only, no model",
    )
    stream: bool = False


class ExtractRequest(BaseModel):
    model_config = {
        "populate_by_name": True,
        "json_schema_extra": {
            "examples": [
                {
                    "document_id": 1,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "end_date": {"type": "string", "description": "when the lease ends"}
                        },
                    },
                }
            ]
        },
    }

    document_id: int = Field(ge=1)
    # "schema" would shadow a BaseModel attribute: the wire name is an alias
    json_schema: dict[str, Any] = Field(alias="schema")


@router.post("/ask", response_model=None, openapi_extra=audit_action("review.ask"))
async def ask(
    body: AskRequest, request: Request, principal: Asker, services: ServicesDep, record: AuditDep
) -> dict[str, Any] | GatedStream:
    """Answer from the documents the caller may see, or say that they do not answer it."""
    record.resource = "ask"
    record.payload["question"] = body.question
    options = answering.AskOptions(
        k=body.k,
        groups=principal.acl_groups,
        filters=body.filters.to_filter() if body.filters is not None else None,
        mode=body.mode,
        min_evidence=services.settings.ask_min_evidence,
    )
    if options.filters is not None:
        record.payload["filters"] = options.filters.canonical()
    draft = await run_in_threadpool(
        answering.prepare, services, tenant_of(principal), body.question, options
    )
    record.models.update(draft.models)
    if draft.cached is not None or not draft.needs_model:  # no need to wait for the model
        result = draft.cached
        if result is None:
            result = await run_in_threadpool(draft.finish, "", 0.0)
        _audit(record, result)
        return _as_events(result) if body.stream else result
    gate = llm_gate(request)

    def finish(generated: str, generate_ms: float) -> dict[str, Any]:
        result = draft.finish(generated, generate_ms)
        _audit(record, result)
        return result

    chat, messages = draft.chat, draft.messages
    if body.stream:
        await gate.enter()
        return GatedStream(_events(chat, messages, gate.request_timeout_s, finish), gate)
    started = time.perf_counter()
    params = GenerationParams(max_tokens=answering.ANSWER_TOKENS)
    async with gate.slot():
        done = await run_cancellable(
            request,
            lambda cancel: chat.complete(messages, params, cancel=cancel),
            gate.request_timeout_s,
        )
    return finish(done.text, round((time.perf_counter() - started) * 1000, 1))


async def _events(
    chat: ChatModel, messages: list[Message], timeout_s: float, finish: Any
) -> AsyncIterator[str]:
    cancel = threading.Event()
    params = GenerationParams(max_tokens=answering.ANSWER_TOKENS)
    started = time.perf_counter()
    pieces: list[str] = []
    async for piece in stream_in_thread(
        chat.stream(messages, params, cancel=cancel), cancel, timeout_s
    ):
        pieces.append(piece)
        yield f"event: token\ndata: {json.dumps(piece)}\n\n"
    result = await run_in_threadpool(
        finish, "".join(pieces), round((time.perf_counter() - started) * 1000, 1)
    )
    yield f"event: result\ndata: {json.dumps(result)}\n\n"
    yield "event: done\ndata: {}\n\n"


def _as_events(result: dict[str, Any]) -> Any:
    from fastapi.responses import StreamingResponse

    async def once() -> AsyncIterator[str]:
        yield f"event: result\ndata: {json.dumps(result)}\n\n"
        yield "event: done\ndata: {}\n\n"

    return StreamingResponse(once(), media_type="text/event-stream")


def _audit(record: AuditRecord, result: dict[str, Any]) -> None:
    record.payload.update(
        answer=result["answer"],
        abstained=result["abstained"],
        answer_mode=result["answer_mode"],
        cached=result["cached"],
        retrieved_chunks=[r["chunk_id"] for r in result["retrieved"]],
        citations=[
            {k: c[k] for k in ("document_id", "source", "start", "end")}
            for c in result["citations"]
        ],
        verification=[
            {"supported": s["supported"], "support": s["support"], "problems": s["problems"]}
            for s in result["sentences"]
        ],
        timings=result["timings"],
    )


@router.post("/extract", openapi_extra=audit_action("review.extract"))
async def extract(
    body: ExtractRequest,
    request: Request,
    principal: Extractor,
    services: ServicesDep,
    record: AuditDep,
) -> dict[str, Any]:
    """Fill the JSON schema from one document; each value with its evidence, or null and why."""
    record.resource = f"document:{body.document_id}"
    record.payload["document_id"] = body.document_id
    task, chat = await run_in_threadpool(
        extraction.prepare,
        services,
        tenant_of(principal),
        body.document_id,
        body.json_schema,
        principal.acl_groups,
    )
    record.models.update(task.models)
    gate = llm_gate(request)
    async with gate.slot():
        started = time.perf_counter()  # the wait in the queue is not generation time
        done = await run_cancellable(
            request,
            lambda cancel: chat.complete(
                task.messages, task.params, json_schema=task.schema.generation, cancel=cancel
            ),
            gate.request_timeout_s,
        )
    generate_ms = round((time.perf_counter() - started) * 1000, 1)
    result = await run_in_threadpool(extraction.verify, task, done.text, generate_ms)
    record.payload.update(result.audit_payload())
    return result.to_json()
