"""RFC 9457 problem details for every error the API returns.

Domain errors carry their own status and type. FastAPI's validation errors and Starlette's
HTTP errors (unknown route, wrong method) get the same shape. Anything unexpected becomes a
generic 500 whose body holds no internals; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from appliance.errors import PROBLEM_BASE, ApplianceError, Overloaded

MEDIA_TYPE = "application/problem+json"
# OpenAI clients read the message of an error from an ``error`` object; on the routes they
# call, problems carry one too (an RFC 9457 extension member), so they show our detail.
OPENAI_PATHS = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/models"})


def _body(problem: dict[str, Any], path: str) -> dict[str, Any]:
    if path in OPENAI_PATHS:
        slug = str(problem["type"]).rsplit(":", 1)[-1]
        problem["error"] = {"message": problem["detail"], "type": slug, "code": slug}
    return problem


log = logging.getLogger("appliance.api")


def problem_response(
    status: int, slug: str, title: str, detail: str, request: Request, **extra: Any
) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(_body(body, request.url.path), status_code=status, media_type=MEDIA_TYPE)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApplianceError)
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
    response = JSONResponse(
        _body(exc.problem(request.url.path), request.url.path),
        status_code=exc.status,
        media_type=MEDIA_TYPE,
    )
    if isinstance(exc, Overloaded):
        response.headers["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return problem_response(422, "invalid-input", "Invalid input", detail, request, errors=errors)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
    detail = exc.detail if isinstance(exc.detail, str) else title
    return problem_response(exc.status_code, slug, title, detail, request)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return problem_response(
        500,
        "internal",
        "Internal error",
        "the appliance failed unexpectedly; the details are in its log",
        request,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApplianceError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
