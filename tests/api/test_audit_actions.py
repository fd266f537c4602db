"""A request refused before its handler runs (a body the request model rejects, a missing
key) is audited under the action its route declares, not under the route's path."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from appliance.config import Settings
from appliance.testing import Api, assert_problem

# method, path, caller, body, the status and detail FastAPI or auth answers, the action
EARLY_REFUSALS: list[tuple[str, str, str | None, Any, int, str, str]] = [
    ("POST", "/v1/review/7", "reviewer", {"decision": "maybe"}, 422, "decision", "review.decide"),
    (
        "POST",
        "/v1/taxonomies/films/rollback",
        "admin",
        {"version": 0},
        422,
        "version",
        "taxonomy.rollback",
    ),
    ("POST", "/v1/admin/tenants", "root", {"name": 5}, 422, "name", "tenants.create"),
    ("POST", "/v1/classify", "analyst", {"taxonomy": "t"}, 422, "exactly one of", "classify"),
    ("DELETE", "/v1/documents/x", "analyst", None, 422, "document_id", "documents.delete"),
    ("POST", "/v1/review/7", None, {"decision": "accept"}, 401, "Bearer", "review.decide"),
]


def last_entry(settings: Settings) -> tuple[str, str, str, str]:
    with sqlite3.connect(settings.audit_dir / "audit.db") as conn:
        row = conn.execute(
            "SELECT actor, action, resource, outcome FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    return (str(row[0]), str(row[1]), str(row[2]), str(row[3]))


@pytest.mark.parametrize(
    ("method", "path", "who", "body", "status", "detail", "action"),
    [pytest.param(*case, id=f"{case[0]} {case[1]} {case[4]}") for case in EARLY_REFUSALS],
)
def test_an_early_refusal_is_audited_under_the_routes_action(
    api: Api,
    settings: Settings,
    method: str,
    path: str,
    who: str | None,
    body: Any,
    status: int,
    detail: str,
    action: str,
) -> None:
    assert_problem(api.call(method, path, who, json=body), status, detail)
    actor = api.keys[who].split("_")[1] if who else "anonymous"
    outcome = "denied" if status == 401 else "refused"
    assert last_entry(settings) == (actor, action, path, outcome)


def test_malformed_json_is_audited_under_the_routes_action(api: Api, settings: Settings) -> None:
    headers = {"content-type": "application/json"}
    resp = api.call("POST", "/v1/review/7", "reviewer", content=b"{not json", headers=headers)
    assert_problem(resp, 422)
    assert last_entry(settings)[1:] == ("review.decide", "/v1/review/7", "refused")


def test_every_state_changing_route_declares_its_action(api: Api) -> None:
    spec = api.call("GET", "/openapi.json", None).json()
    declared = {
        (method.upper(), path): op.get("x-audit-action")
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    assert declared[("POST", "/v1/review/{item_id}")] == "review.decide"
    undeclared = {
        route
        for route, action in declared.items()
        if action is None and route[0] in ("POST", "DELETE")
    }
    assert undeclared == {("POST", "/v1/search")}  # a read: audited as "POST /v1/search"
    names = [a for a in declared.values() if a is not None]
    assert len(names) == len(set(names)) == 22
