"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from appliance.api.deps import ServicesDep
from appliance.errors import ApplianceError, Overloaded

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> dict[str, Any]:
    """The keyring opens and the active models' files match their pins."""
    try:
        services.keyring()
        active = {}
        for role in ("chat", "embedding"):
            entry = services.catalog.active(role)
            services.catalog.verify_entry(entry, raise_on_error=True)
            active[role] = entry.ref
    except ApplianceError as exc:
        raise Overloaded(f"not ready: {exc.detail}", retry_after=5) from None
    return {"status": "ready", "models": active}
