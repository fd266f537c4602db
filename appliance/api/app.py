"""The REST API: ``create_app(settings)`` builds it; the lifespan builds the services.

Run with ``uvicorn --factory appliance.api.app:create_app`` (settings from ``APPLIANCE_*``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from appliance import __version__
from appliance.api import (
    admin,
    ask,
    audit,
    classification,
    documents,
    health,
    metrics,
    openai_compat,
)
from appliance.api.auditing import AuditMiddleware
from appliance.api.generation import LlmGate
from appliance.api.problems import install_problem_handlers
from appliance.config import Settings, load_settings
from appliance.review.classification_metrics import ClassificationCollector
from appliance.services import Services


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app for ``settings`` (read from the environment when omitted)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.from_settings(settings)
        app.state.services = services
        app.state.llm_gate = LlmGate(
            settings.llm_queue_limit, settings.llm_queue_timeout_s, settings.llm_request_timeout_s
        )
        app.state.metrics.watch_gate(app.state.llm_gate)
        app.state.metrics.registry.register(ClassificationCollector(services))
        try:
            yield
        finally:
            services.close()

    # the docs pages with Swagger UI and ReDoc served from the package, not from a CDN
    app = FastAPIOffline(
        title="Offline document appliance",
        version=__version__,
        lifespan=lifespan,
        description="Document review and classification, on premises, offline.",
    )
    app.state.metrics = metrics.ApiMetrics()
    install_problem_handlers(app)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(metrics.MetricsMiddleware)  # outermost: also counts what audit refuses
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(documents.router)
    app.include_router(openai_compat.router)
    app.include_router(admin.router)
    app.include_router(audit.router)
    app.include_router(classification.router)
    app.include_router(ask.router)
    return app
