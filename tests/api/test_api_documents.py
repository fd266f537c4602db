"""The REST API in-process: auth, roles, tenants, ACLs, problem+json errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.api.app import create_app
from appliance.config import Settings
from appliance.testing import Api, assert_problem


def test_health_needs_no_key(api: Api) -> None:
    assert api.call("GET", "/healthz", None).json() == {"status": "ok"}
    ready = api.call("GET", "/readyz", None).json()
    assert ready == {
        "status": "ready",
        "models": {"chat": "smollm2-135m-instruct@1", "embedding": "all-minilm-l6-v2@1"},
    }


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Basic abc", "Bearer apk_000000000000_" + "x" * 43, "Bearer junk"]
)
def test_missing_or_bad_keys_are_401(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    resp = api.client.get("/v1/documents", headers=headers)
    assert_problem(resp, 401)
    assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("who", "method", "path", "expected"),
    [
        ("analyst", "GET", "/v1/documents", 200),
        ("reviewer", "GET", "/v1/documents", 200),
        ("auditor", "GET", "/v1/documents", 403),
        ("admin", "GET", "/v1/documents", 200),
        ("analyst", "POST", "/v1/search", 200),
        ("reviewer", "POST", "/v1/search", 200),
        ("auditor", "POST", "/v1/search", 403),
        ("reviewer", "DELETE", "/v1/documents/{memo}", 403),
        ("auditor", "DELETE", "/v1/documents/{memo}", 403),
        ("analyst", "DELETE", "/v1/documents/{memo}", 204),
        ("root", "GET", "/v1/documents", 422),  # a global admin key names no tenant
    ],
)
def test_role_matrix(api: Api, who: str, method: str, path: str, expected: int) -> None:
    path = path.format(memo=api.docs["memo.txt"])
    kw = {"json": {"query": "office Lyon"}} if method == "POST" else {}
    resp = api.call(method, path, who, **kw)
    assert resp.status_code == expected, resp.text
    if expected >= 400:
        assert_problem(resp, expected)


def test_acl_groups_decide_what_a_key_sees(api: Api) -> None:
    merger = api.docs["merger.txt"]
    assert {d["source"] for d in api.call("GET", "/v1/documents", "analyst").json()} == {
        "memo.txt",
        "merger.txt",
    }
    assert [d["source"] for d in api.call("GET", "/v1/documents", "hr").json()] == ["memo.txt"]
    assert_problem(api.call("GET", f"/v1/documents/{merger}", "hr"), 404)
    hits = api.call("POST", "/v1/search", "hr", json={"query": "merger Initech", "k": 5}).json()
    assert "merger.txt" not in {h["source"] for h in hits}
    hits = api.call("POST", "/v1/search", "analyst", json={"query": "merger Initech"}).json()
    assert hits[0]["source"] == "merger.txt"


def test_another_tenants_document_is_404_never_403(api: Api) -> None:
    memo = api.docs["memo.txt"]
    assert_problem(api.call("GET", f"/v1/documents/{memo}", "globex"), 404, f"no document {memo}")
    assert_problem(api.call("DELETE", f"/v1/documents/{memo}", "globex"), 404)
    assert api.call("GET", "/v1/documents", "globex").json() == []
    assert api.call("GET", f"/v1/documents/{memo}", "analyst").status_code == 200  # still there


def test_deletion_is_audited_with_its_outcome(api: Api, home: Path) -> None:
    memo = api.docs["memo.txt"]
    assert api.call("DELETE", f"/v1/documents/{memo}", "analyst").status_code == 204
    assert_problem(api.call("DELETE", f"/v1/documents/{memo}", "analyst"), 404)
    with sqlite3.connect(home / "audit" / "audit.db") as db:
        rows = list(db.execute("SELECT action, resource, outcome, actor FROM entries ORDER BY seq"))
    key_id = api.keys["analyst"].split("_")[1]
    assert rows == [
        ("documents.delete", f"document:{memo}", "ok", key_id),
        ("documents.delete", f"document:{memo}", "refused", key_id),
    ]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"query": ""}, "body.query"),
        ({"query": "x", "k": 0}, "body.k"),
        ({"query": "x", "k": 201}, "body.k"),
        ({"query": "x", "mode": "fuzzy"}, "body.mode"),
        ({}, "body.query"),
    ],
)
def test_bad_search_requests_are_422(api: Api, body: dict[str, Any], detail: str) -> None:
    body_out = assert_problem(api.call("POST", "/v1/search", "analyst", json=body), 422, detail)
    assert body_out["errors"]


def test_every_error_has_the_problem_shape(api: Api) -> None:
    assert_problem(api.call("GET", "/v1/nowhere", "analyst"), 404)
    assert_problem(api.call("PUT", "/v1/documents", "analyst"), 405)
    assert_problem(api.call("GET", "/v1/documents/not-a-number", "analyst"), 422)
    assert_problem(
        api.client.post(
            "/v1/search",
            headers={"Authorization": f"Bearer {api.keys['analyst']}"},
            content=b"{not json",
        ),
        422,
    )


def test_an_unexpected_failure_is_a_500_without_internals(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals: /etc/shadow, key=abc123")

    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/boom")
    body = assert_problem(resp, 500, "failed unexpectedly")
    assert "secret" not in resp.text and "RuntimeError" not in resp.text
    assert body["type"] == "urn:appliance:problem:internal"
