"""Every API call becomes one audit entry, written when its response has been sent.

A pure ASGI middleware (streamed responses pass through untouched) opens an
:class:`AuditRecord` for the request; the auth dependency fills in the caller, the route
adds what the entry should say (its payload is encrypted under the tenant's audit key),
and the status code decides the outcome: < 400 ``ok``, 401/403 ``denied``, other 4xx
``refused``, 5xx ``error``. Liveness, readiness, metrics and the docs are not audited.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from appliance.api.asgi import ResponseWatch
from appliance.audit import AuditEvent, Outcome

if TYPE_CHECKING:
    from appliance.services import Services

UNAUDITED = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"})
DOCS_ASSETS = "/static-offline-docs/"
log = logging.getLogger("appliance.api")


@dataclass
class AuditRecord:
    """What one request's audit entry will say; routes fill it in as they learn.

    Attributes:
        actor: The API key id once authenticated, else ``"anonymous"``.
        tenant: The caller's tenant (None for a global admin key).
        action: A name such as ``"documents.upload"``; defaults to ``"METHOD /route/{param}"``.
        resource: What was acted on; defaults to the request path (never the query string).
        payload: Details, encrypted in the log: questions, answers, names, labels.
        models: Role -> model reference for every model involved.
        outcome: Set to override the outcome the status code implies.
    """

    actor: str = "anonymous"
    tenant: str | None = None
    action: str | None = None
    resource: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    outcome: Outcome | None = None


def outcome_of(status: int) -> Outcome:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    return "refused" if status < 500 else "error"


class AuditMiddleware:
    """Writes one audit entry per API request, whatever its outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNAUDITED or path.startswith(DOCS_ASSETS):
            await self.app(scope, receive, send)
            return
        record = AuditRecord()
        scope.setdefault("state", {})["audit"] = record
        watch = ResponseWatch(send)
        try:
            await self.app(scope, receive, watch)
        finally:
            self._write(scope, record, watch.status, round(watch.seconds * 1000, 3))

    @staticmethod
    def _write(scope: Scope, record: AuditRecord, status: int, latency_ms: float) -> None:
        services: Services = scope["app"].state.services
        route = scope.get("route")
        template = getattr(route, "path", None) or "(no route)"
        event = AuditEvent(
            actor=record.actor,
            tenant=record.tenant,
            action=record.action or f"{scope['method']} {template}",
            resource=record.resource or scope["path"],
            outcome=record.outcome or outcome_of(status),
            latency_ms=latency_ms,
            models=record.models,
            payload={"status": status, **record.payload},
        )
        try:
            services.audit().append(event)
        except Exception:  # the response is already sent; the failure must be loud in the log
            log.exception(
                "could not write the audit entry for %s %s", scope["method"], scope["path"]
            )
