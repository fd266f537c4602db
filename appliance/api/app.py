"""The REST API: ``create_app(settings)`` builds it; the lifespan builds the services.

Run with ``uvicorn --factory appliance.api.app:create_app`` (settings from ``APPLIANCE_*``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from appliance import __version__
from appliance.api import documents, health
from appliance.api.auditing import AuditMiddleware
from appliance.api.generation import LlmGate
from appliance.api.problems import install_problem_handlers
from appliance.config import Settings, load_settings
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
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="Offline document appliance",
        version=__version__,
        lifespan=lifespan,
        description="Document review and classification, on premises, offline.",
    )
    install_problem_handlers(app)
    app.add_middleware(AuditMiddleware)
    app.include_router(health.router)
    app.include_router(documents.router)
    return app
