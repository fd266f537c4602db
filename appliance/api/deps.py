"""Dependencies shared by the routers: the services, the caller, role checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from appliance.api.auditing import AuditRecord
from appliance.apikeys import Principal, Role
from appliance.errors import Forbidden, InvalidInput, Unauthorized
from appliance.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_audit_record(request: Request) -> AuditRecord:
    """This request's audit entry, for the route to fill in (see ``appliance.api.auditing``)."""
    record = getattr(request.state, "audit", None)
    if record is None:  # an app built without the middleware, e.g. a router under test
        record = AuditRecord()
        request.state.audit = record
    assert isinstance(record, AuditRecord)
    return record


AuditDep = Annotated[AuditRecord, Depends(get_audit_record)]


def get_principal(request: Request, services: ServicesDep, record: AuditDep) -> Principal:
    """The caller, from ``Authorization: Bearer <key>``; 401 when missing or invalid."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    principal = services.apikeys().authenticate(key.strip())
    record.actor = principal.key_id
    record.tenant = principal.tenant
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that admits only keys of these roles (admin is always admitted)."""

    def check(principal: PrincipalDep) -> Principal:
        if principal.role != "admin" and principal.role not in roles:
            raise Forbidden(f"a {principal.role} key may not do this")
        return principal

    return check


def tenant_of(principal: Principal) -> str:
    if principal.tenant is None:
        raise InvalidInput("this endpoint acts in a tenant: use a key created with --tenant")
    return principal.tenant
