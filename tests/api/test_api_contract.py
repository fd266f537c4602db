"""Every route x every role: allowed, 403 or 401; and every error is problem+json.

The table below must name every route the app serves: a new route without a row fails
``test_the_table_covers_every_route``, so nobody adds an endpoint without deciding who may
call it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from appliance.testing import Api, assert_problem

CALLERS = ("analyst", "reviewer", "auditor", "admin", "root")
PUBLIC = frozenset(CALLERS) | {None}
ANALYST = frozenset({"analyst", "admin", "root"})
READER = ANALYST | {"reviewer"}
AUDITOR = frozenset({"auditor", "admin", "root"})
ADMIN = frozenset({"admin", "root"})
GLOBAL_ADMIN = frozenset({"root"})  # a tenant's admin key may not change the appliance

# method, path template, concrete path, JSON body (or multipart files), who may call it.
# Bodies are chosen so an allowed call is cheap and changes nothing that matters.
ROUTES: list[tuple[str, str, str, dict[str, Any], frozenset[str | None]]] = [
    ("GET", "/healthz", "/healthz", {}, PUBLIC),
    ("GET", "/readyz", "/readyz", {}, PUBLIC),
    ("GET", "/metrics", "/metrics", {}, PUBLIC),
    ("GET", "/v1/documents", "/v1/documents", {}, READER),
    (
        "POST",
        "/v1/documents",
        "/v1/documents",
        {"files": {"file": ("m.txt", b"Hi there.")}},
        ANALYST,
    ),
    ("GET", "/v1/documents/{document_id}", "/v1/documents/999", {}, READER),
    ("DELETE", "/v1/documents/{document_id}", "/v1/documents/999", {}, ANALYST),
    ("POST", "/v1/search", "/v1/search", {"json": {"query": "lease"}}, READER),
    ("GET", "/v1/models", "/v1/models", {}, READER),
    (
        "POST",
        "/v1/chat/completions",
        "/v1/chat/completions",
        {"json": {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}},
        ANALYST,
    ),
    (
        "POST",
        "/v1/embeddings",
        "/v1/embeddings",
        {"json": {"model": "nope", "input": "x"}},
        ANALYST,
    ),
    ("GET", "/v1/admin/tenants", "/v1/admin/tenants", {}, ADMIN),
    ("POST", "/v1/admin/tenants", "/v1/admin/tenants", {"json": {"name": "acme"}}, GLOBAL_ADMIN),
    ("DELETE", "/v1/admin/tenants/{name}", "/v1/admin/tenants/nobody", {}, GLOBAL_ADMIN),
    ("GET", "/v1/admin/keys", "/v1/admin/keys", {}, ADMIN),
    ("POST", "/v1/admin/keys", "/v1/admin/keys", {"json": {"role": "analyst"}}, GLOBAL_ADMIN),
    ("DELETE", "/v1/admin/keys/{key_id}", "/v1/admin/keys/000000000000", {}, GLOBAL_ADMIN),
    ("GET", "/v1/admin/models", "/v1/admin/models", {}, ADMIN),
    (
        "POST",
        "/v1/admin/models/activate",
        "/v1/admin/models/activate",
        {"json": {"model": "nope@1"}},
        GLOBAL_ADMIN,
    ),
    (
        "POST",
        "/v1/admin/models/rollback",
        "/v1/admin/models/rollback",
        {"json": {"role": "chat"}},
        GLOBAL_ADMIN,
    ),
    ("POST", "/v1/taxonomies", "/v1/taxonomies", {"json": {"name": "t"}}, ADMIN),
    ("GET", "/v1/taxonomies", "/v1/taxonomies", {}, READER),
    ("GET", "/v1/taxonomies/{name}", "/v1/taxonomies/nope", {}, READER),
    ("DELETE", "/v1/taxonomies/{name}", "/v1/taxonomies/nope", {}, ADMIN),
    (
        "POST",
        "/v1/taxonomies/{name}/examples",
        "/v1/taxonomies/nope/examples",
        {"json": {"examples": [{"label": "a", "text": "x"}]}},
        ADMIN,
    ),
    ("POST", "/v1/taxonomies/{name}/train", "/v1/taxonomies/nope/train", {}, ADMIN),
    ("GET", "/v1/taxonomies/{name}/versions", "/v1/taxonomies/nope/versions", {}, READER),
    (
        "POST",
        "/v1/taxonomies/{name}/rollback",
        "/v1/taxonomies/nope/rollback",
        {"json": {"version": 1}},
        ADMIN,
    ),
    ("GET", "/v1/taxonomies/{name}/metrics", "/v1/taxonomies/nope/metrics", {}, READER),
    ("POST", "/v1/classify", "/v1/classify", {"json": {"taxonomy": "nope", "text": "x"}}, ANALYST),
    (
        "POST",
        "/v1/classify/batch",
        "/v1/classify/batch",
        {"json": {"taxonomy": "nope", "all": True}},
        ANALYST,
    ),
    ("GET", "/v1/classify/jobs/{job_id}", "/v1/classify/jobs/999", {}, ANALYST),
    ("GET", "/v1/review", "/v1/review", {}, frozenset({"reviewer", "admin", "root"})),
    (
        "POST",
        "/v1/review/{item_id}",
        "/v1/review/999",
        {"json": {"decision": "accept"}},
        frozenset({"reviewer", "admin", "root"}),
    ),
    ("POST", "/v1/ask", "/v1/ask", {"json": {"question": "zebra quantum"}}, READER),
    (
        "POST",
        "/v1/extract",
        "/v1/extract",
        {
            "json": {
                "document_id": 999,
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            }
        },
        ANALYST,
    ),
    ("GET", "/v1/audit", "/v1/audit", {}, AUDITOR),
    ("GET", "/v1/audit/verify", "/v1/audit/verify", {}, AUDITOR),
]


def test_the_table_covers_every_route(api: Api) -> None:
    spec = api.call("GET", "/openapi.json", None).json()
    served = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert served == {(method, template) for method, template, *_ in ROUTES}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "allowed"),
    [pytest.param(m, p, kw, ok, id=f"{m} {t}") for m, t, p, kw, ok in ROUTES],
)
def test_role_matrix(
    api: Api, method: str, path: str, kwargs: dict[str, Any], allowed: frozenset[str | None]
) -> None:
    for who in (*CALLERS, None):
        resp = api.call(method, path, who, **kwargs)
        if who in allowed:
            assert resp.status_code not in (401, 403), (who, resp.text)
        elif who is None:
            assert_problem(resp, 401, "Authorization: Bearer")
            assert resp.headers["www-authenticate"] == "Bearer"
        elif who == "admin":
            assert_problem(resp, 403, "a tenant's admin key cannot manage")
        else:
            assert_problem(resp, 403, f"a {who} key may not")
        if resp.status_code >= 400:
            assert_problem(resp, resp.status_code)


def test_a_bad_key_is_401_everywhere(api: Api) -> None:
    api.keys["forged"] = "apk_000000000000_" + "A" * 43
    for method, _, path, kwargs, allowed in ROUTES:
        if None not in allowed:
            assert_problem(api.call(method, path, "forged", **kwargs), 401, "unknown or revoked")


@pytest.mark.parametrize(
    ("method", "path"),
    [pytest.param(m, p, id=f"{m} {t}") for m, t, p, _, _ in ROUTES if m in ("POST",)],
)
def test_malformed_bodies_are_problem_json(api: Api, method: str, path: str) -> None:
    for body in (b"{not json", b"[]", b'{"unexpected": true}'):
        resp = api.call(
            method, path, "root", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= resp.status_code < 500, (path, body, resp.text)
        assert_problem(resp, resp.status_code)


def test_unknown_routes_and_methods_are_problem_json(api: Api) -> None:
    assert_problem(api.call("GET", "/v1/nothing-here", "analyst"), 404)
    assert_problem(api.call("PUT", "/v1/search", "analyst"), 405)
    assert_problem(api.call("GET", "/v1/documents/not-a-number", "analyst"), 422, "document_id")


def test_openapi_documents_every_route_with_examples(api: Api) -> None:
    spec = api.call("GET", "/openapi.json", None).json()
    for method, template, *_ in ROUTES:
        if template.startswith("/v1"):
            assert method.lower() in spec["paths"][template], template
    schemas = spec["components"]["schemas"]
    assert schemas["ChatRequest"]["examples"][0]["model"] == "smollm2-135m-instruct"
    assert "example" in str(spec["paths"]["/v1/documents"]["post"]["requestBody"])
    for page in ("/docs", "/redoc"):  # offline: every asset from the appliance itself
        html = api.call("GET", page, None).text
        assert "//" not in html.replace("http://testserver", "").split("<body>")[0], html
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/static-offline-docs/") for a in assets), assets
        assert all(api.call("GET", a, None).status_code == 200 for a in assets)
