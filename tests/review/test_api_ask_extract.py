"""`POST /v1/extract` on the real app: evidence checked in the document, audit, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.api.app import create_app
from appliance.config import Settings
from appliance.corpus.ingest import ingest_bytes
from appliance.services import Services
from appliance.testing import Api, assert_problem

LEASE = (
    "Warehouse lease. The lease of the Lyon warehouse ends on 30 June 2027. The landlord is "
    "Dupont SA. The tenant may renew the lease for five more years. Rent is 4,500 EUR."
)
MERGER = "Merger memo. The merger with Initech closes in March. The code name is Bluebird."
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "end_date": {"type": "string", "description": "when the lease ends"},
        "rent": {"type": "number"},
        "landlord_phone": {"type": "string"},
    },
}


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    setup = Services.from_settings(settings)
    setup.tenants().create("acme")
    corpus = setup.corpus("acme")
    docs = {
        "lease": ingest_bytes(corpus, "lease.txt", LEASE.encode()).ingested[0].document_id,
        "merger": ingest_bytes(corpus, "merger.txt", MERGER.encode(), acl=["legal"])
        .ingested[0]
        .document_id,
    }
    keys = {
        "analyst": setup.apikeys().create(role="analyst", tenant="acme", groups=("legal",))[0],
        "hr": setup.apikeys().create(role="analyst", tenant="acme", groups=("hr",))[0],
        "reviewer": setup.apikeys().create(role="reviewer", tenant="acme")[0],
        "auditor": setup.apikeys().create(role="auditor", tenant="acme")[0],
    }
    setup.close()
    with TestClient(create_app(settings)) as client:
        yield Api(client, keys, docs)


def audit_entries(api: Api) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = api.call("GET", "/v1/audit", "auditor").json()
    return [e for e in entries if e["resource"] != "/v1/audit"]


@pytest.mark.slow
def test_extract_returns_values_with_evidence_found_in_the_document(api: Api) -> None:
    body = {"document_id": api.docs["lease"], "schema": SCHEMA}
    result = api.call("POST", "/v1/extract", "analyst", json=body).json()
    assert result["source"] == "lease.txt" and set(result["data"]) == set(SCHEMA["properties"])
    assert set(result["timings"]) == {"prepare_ms", "generate_ms", "verify_ms"}
    for name, f in result["fields"].items():
        assert f["value"] == result["data"][name]
        if f["value"] is None:
            assert f["evidence"] is None and f["reason"]
            continue
        ev = f["evidence"]
        assert LEASE[ev["start"] : ev["end"]] == ev["quote"] and ev["quote"]
    [entry] = [e for e in audit_entries(api) if e["action"] == "review.extract"]
    assert entry["outcome"] == "ok" and entry["resource"] == f"document:{api.docs['lease']}"
    assert entry["models"] == result["models"]
    assert set(entry["payload"]["fields"]) == set(SCHEMA["properties"])


def test_bad_extractions_are_refused_and_never_logged_as_success(api: Api) -> None:
    lease, merger = api.docs["lease"], api.docs["merger"]
    nested = {"type": "object", "properties": {"parties": {"type": "array"}}}
    cases: list[tuple[str | None, dict[str, Any], int, str]] = [
        ("analyst", {"document_id": 999, "schema": SCHEMA}, 404, "no document 999"),
        ("hr", {"document_id": merger, "schema": SCHEMA}, 404, f"no document {merger}"),
        ("analyst", {"document_id": lease, "schema": {"type": 5}}, 422, "not a valid JSON Schema"),
        (
            "analyst",
            {"document_id": lease, "schema": {"properties": {"a": {"not": {}}}}},
            422,
            "cannot be expressed as a grammar",
        ),
        ("analyst", {"document_id": lease, "schema": nested}, 422, "no single evidence span"),
        ("analyst", {"document_id": lease}, 422, "schema"),
        ("analyst", {"document_id": 0, "schema": SCHEMA}, 422, "document_id"),
        ("analyst", {"document_id": lease, "schema": "x"}, 422, "schema"),
        ("reviewer", {"document_id": lease, "schema": SCHEMA}, 403, "reviewer key may not"),
        (None, {"document_id": lease, "schema": SCHEMA}, 401, "API key"),
    ]
    for who, body, status, detail in cases:
        assert_problem(api.call("POST", "/v1/extract", who, json=body), status, detail)
    entries = audit_entries(api)  # the key-less call has no tenant: a system entry
    assert [e["outcome"] for e in entries] == ["refused"] * 8 + ["denied"]
    assert [e["action"] for e in entries[:5]] == ["review.extract"] * 5
