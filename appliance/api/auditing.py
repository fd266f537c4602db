"""Every API call becomes one audit entry, written when its response has been sent.

A pure ASGI middleware (streamed responses pass through untouched) opens an
:class:`AuditRecord` for the request; the auth dependency fills in the caller, the route
adds what the entry should say (its payload is encrypted under the tenant's audit key),
and the status code decides the outcome: < 400 ``ok``, 401/403 ``denied``, other 4xx
``refused``, 5xx ``error``. Liveness, readiness, metrics and the docs are not audited.

A route names its action where it is declared (``openapi_extra=audit_action("x.y")``), so
a request refused before its handler runs (a body the request model rejects, a bad key)
is still audited under that name; the name also appears in the OpenAPI document.
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
ACTION_KEY = "x-audit-action"
log = logging.getLogger("appliance.api")


def audit_action(name: str) -> dict[str, Any]:
    """A route's ``openapi_extra`` naming the action its audit entries are recorded under."""
    return {ACTION_KEY: name}


def declared_action(route: object) -> str | None:
    """The action a matched route declares with :func:`audit_action`, if any."""
    extra = getattr(route, "openapi_extra", None) or {}
    action = extra.get(ACTION_KEY)
    return action if isinstance(action, str) else None


@dataclass
class AuditRecord:
    """What one request's audit entry will say; routes fill it in as they learn.

    Attributes:
        actor: The API key id once authenticated, else ``"anonymous"``.
        tenant: The caller's tenant (None for a global admin key).
        action: Set by a route only to override the action it declares (``audit_action``);
            without either, ``"METHOD /route/{param}"``.
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
            action=record.action or declared_action(route) or f"{scope['method']} {template}",
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
