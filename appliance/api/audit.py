"""The audit log over the API: read one tenant's entries (payloads decrypted), verify the chain.

An auditor (or admin) key of a tenant reads that tenant's entries only. A global admin key
reads the system entries, or one tenant's with ``?tenant=``. Reading the log is itself
audited, like every call.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from appliance.api.auditing import audit_action
from appliance.api.deps import AuditDep, ServicesDep, require
from appliance.apikeys import Principal
from appliance.errors import InvalidInput, NotFound
from appliance.keyring import TenantKeys

router = APIRouter(prefix="/v1/audit", tags=["audit"])
Auditor = Annotated[Principal, Depends(require("auditor"))]


@router.get("", openapi_extra=audit_action("audit.read"))
def read_audit(
    principal: Auditor,
    services: ServicesDep,
    record: AuditDep,
    since: Annotated[datetime | None, Query(description="ISO 8601 time with a timezone.")] = None,
    after_seq: Annotated[int, Query(ge=0, description="Page on: entries after this seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    tenant: Annotated[
        str | None, Query(description="Global admin only: whose entries to read.")
    ] = None,
) -> list[dict[str, Any]]:
    """Audit entries of the caller's tenant, oldest first, with their payloads decrypted."""
    if tenant is not None and principal.tenant is not None and tenant != principal.tenant:
        raise NotFound(f"unknown tenant {tenant!r}")
    if since is not None and since.tzinfo is None:
        raise InvalidInput("since: give a timezone, e.g. 2026-11-22T08:00:00Z")
    whose = principal.tenant if principal.tenant is not None else tenant
    record.resource = f"audit:{whose or 'system'}"
    keyring = services.keyring()
    keys: TenantKeys | None
    if whose is None:
        keys = keyring.system_keys()
    else:  # a deleted tenant's entries still list; their payloads read as unreadable
        keys = keyring.tenant_keys(whose) if services.tenants().exists(whose) else None
    return services.audit().read(whose, keys, since, limit, after_seq=after_seq)


@router.get("/verify", openapi_extra=audit_action("audit.verify"))
async def verify_audit(
    principal: Auditor, services: ServicesDep, record: AuditDep
) -> dict[str, Any]:
    """Check the whole chain and the signed checkpoints; ``ok`` false names the first bad seq."""
    record.resource = "audit"
    report = await run_in_threadpool(services.audit().verify)
    record.payload.update(ok=report.ok, first_bad_seq=report.first_bad_seq)
    return asdict(report)
