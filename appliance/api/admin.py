"""Administration over the API: tenants, API keys, model activation and rollback (admin only).

The same operations as ``appliance tenants|keys|models``; each call is audited by the
middleware, with what changed in the (encrypted) payload.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from appliance.api.auditing import AuditRecord, audit_action
from appliance.api.deps import AuditDep, ServicesDep, require
from appliance.apikeys import Principal, Role
from appliance.errors import Conflict, Forbidden, InvalidInput
from appliance.inference.catalog import ModelEntry
from appliance.services import Services

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Admin = Annotated[Principal, Depends(require("admin"))]


class TenantRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64, examples=["legal"])


class KeyRequest(BaseModel):
    role: Role = Field(examples=["analyst"])
    tenant: str | None = Field(default=None, examples=["legal"])
    groups: list[str] = Field(default_factory=list, max_length=100, examples=[["contracts"]])
    name: str = Field(default="", max_length=200, examples=["document-management-system"])


class ActivateRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200, examples=["smollm2-135m-instruct@1"])


class RollbackRequest(BaseModel):
    role: Literal["chat", "embedding"]


def _global_admin(principal: Principal) -> None:
    # a tenant's own admin key must not create or delete other tenants or their keys
    if principal.tenant is not None:
        raise Forbidden("a tenant's admin key cannot manage tenants, keys or models")


@router.get("/tenants")
def list_tenants(principal: Admin, services: ServicesDep) -> list[dict[str, Any]]:
    """Tenants of the appliance (a tenant admin sees its own)."""
    return [
        {"name": t.name, "created_at": t.created_at.isoformat()}
        for t in services.tenants().list()
        if principal.tenant in (None, t.name)
    ]


@router.post("/tenants", status_code=201, openapi_extra=audit_action("tenants.create"))
def create_tenant(
    body: TenantRequest, principal: Admin, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Create a tenant with its own keys and index folder."""
    _global_admin(principal)
    record.resource = f"tenant:{body.name}"
    if services.tenants().exists(body.name):
        raise Conflict(f"tenant {body.name!r} already exists")
    info = services.tenants().create(body.name)
    return {"name": info.name, "created_at": info.created_at.isoformat()}


@router.delete("/tenants/{name}", status_code=204, openapi_extra=audit_action("tenants.delete"))
def delete_tenant(name: str, principal: Admin, services: ServicesDep, record: AuditDep) -> None:
    """Delete a tenant: its key is destroyed, its files removed, its API keys revoked."""
    _global_admin(principal)
    record.resource = f"tenant:{name}"
    services.delete_tenant(name)


@router.get("/keys")
def list_keys(principal: Admin, services: ServicesDep) -> list[dict[str, Any]]:
    """API keys (never their secrets); a tenant admin sees its tenant's keys."""
    return [asdict(k) for k in services.apikeys().list() if principal.tenant in (None, k.tenant)]


@router.post("/keys", status_code=201, openapi_extra=audit_action("keys.create"))
def create_key(
    body: KeyRequest, principal: Admin, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Create an API key; the response is the only time its secret is shown."""
    _global_admin(principal)
    record.resource = "key"
    if body.tenant is not None and not services.tenants().exists(body.tenant):
        raise InvalidInput(f"unknown tenant {body.tenant!r}: create it first")
    key, info = services.apikeys().create(
        role=body.role, tenant=body.tenant, groups=tuple(body.groups), name=body.name
    )
    record.resource = f"key:{info.id}"
    record.payload.update(role=info.role, tenant=info.tenant, groups=list(info.groups))
    return {**asdict(info), "key": key}


@router.delete("/keys/{key_id}", status_code=204, openapi_extra=audit_action("keys.revoke"))
def revoke_key(key_id: str, principal: Admin, services: ServicesDep, record: AuditDep) -> None:
    """Revoke an API key; it stops working at once."""
    _global_admin(principal)
    record.resource = f"key:{key_id}"
    services.apikeys().revoke(key_id)


@router.get("/models")
def list_catalog(principal: Admin, services: ServicesDep) -> list[dict[str, Any]]:
    """Every model in the catalog, with which one is active per role."""
    catalog = services.catalog
    active = {role: catalog.active(role).ref for role in ("chat", "embedding")}
    return [
        {
            "ref": e.ref,
            "name": e.name,
            "version": e.version,
            "role": e.role,
            "format": e.format,
            "license": e.license,
            "origin": e.origin,
            "size": e.size,
            "active": active.get(e.role) == e.ref,
        }
        for e in catalog.entries()
    ]


@router.post("/models/activate", openapi_extra=audit_action("models.activate"))
async def activate_model(
    body: ActivateRequest, principal: Admin, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Verify a catalog model's files and make it the active one of its role."""
    _global_admin(principal)
    record.resource = f"model:{body.model}"
    entry = await run_in_threadpool(services.catalog.activate, body.model, by=principal.key_id)
    return _switched(entry, services, record)


@router.post("/models/rollback", openapi_extra=audit_action("models.rollback"))
async def rollback_model(
    body: RollbackRequest, principal: Admin, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Re-activate the model that was active before the current one."""
    _global_admin(principal)
    record.resource = f"role:{body.role}"
    entry = await run_in_threadpool(services.catalog.rollback, body.role, by=principal.key_id)
    return _switched(entry, services, record)


def _switched(entry: ModelEntry, services: Services, record: AuditRecord) -> dict[str, Any]:
    services.models_changed(entry.role)  # the next request loads the newly active model
    record.models[entry.role] = entry.ref
    return {"role": entry.role, "active": entry.ref}
