"""Uploads, tenant/key/model administration and the audit endpoints, in-process."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.services import Services
from appliance.testing import Api, assert_problem

MEMO = b"The warehouse lease ends on 30 June and renews for five years."


def upload(api: Api, who: str, name: str, data: bytes, **fields: str) -> object:
    return api.call("POST", "/v1/documents", who, files={"file": (name, data)}, data=fields)


def sources(api: Api, who: str) -> set[str]:
    return {d["source"] for d in api.call("GET", "/v1/documents", who).json()}


def test_upload_ingests_and_is_searchable(api: Api) -> None:
    resp = upload(api, "analyst", "lease.txt", MEMO, acl="legal")
    assert resp.status_code == 201, resp.text  # type: ignore[attr-defined]
    doc = resp.json()  # type: ignore[attr-defined]
    assert (doc["source"], doc["acl"], doc["unchanged"], doc["chunks"]) == (
        "lease.txt",
        ["legal"],
        False,
        1,
    )
    hits = api.call("POST", "/v1/search", "analyst", json={"query": "warehouse lease"}).json()
    assert hits[0]["document_id"] == doc["id"]
    assert "lease.txt" not in sources(api, "hr")  # ACL: hr is not in group legal
    again = upload(api, "analyst", "lease.txt", MEMO, acl="legal")
    assert again.status_code == 200 and again.json()["unchanged"] is True  # type: ignore[attr-defined]
    newer = upload(api, "analyst", "lease.txt", MEMO + b" Amended.", acl="legal")
    assert newer.json()["version"] == 2  # type: ignore[attr-defined]


def test_upload_file_name_is_only_a_label(api: Api, settings: Settings) -> None:
    resp = upload(api, "analyst", "../../../../etc/evil.txt", MEMO)
    assert resp.json()["source"] == "evil.txt"  # type: ignore[attr-defined]
    resp = upload(api, "analyst", "C:\\Users\\x\\..\\win.txt", MEMO)
    assert resp.json()["source"] == "win.txt"  # type: ignore[attr-defined]
    assert not any(p.name in ("evil.txt", "win.txt") for p in settings.home.rglob("*"))


@pytest.mark.parametrize(
    ("who", "kwargs", "status", "detail"),
    [
        ("reviewer", {"files": {"file": ("a.txt", MEMO)}}, 403, "a reviewer key may not"),
        (None, {"files": {"file": ("a.txt", MEMO)}}, 401, "API key"),
        ("analyst", {"data": {"acl": "legal"}}, 422, "multipart/form-data with a 'file' field"),
        ("analyst", {"files": {"other": ("a.txt", MEMO)}}, 422, "exactly one 'file' part (got 0)"),
        ("analyst", {"files": {"file": ("..", MEMO)}}, 422, "needs a file name"),
        (
            "analyst",
            {"files": {"file": ("a.txt", MEMO)}, "data": {"acl": "a b"}},
            422,
            "invalid group name 'a b'",
        ),
        (
            "analyst",
            {"files": {"file": ("a.txt", MEMO)}, "data": {"acl": "hr"}},
            403,
            "groups your key belongs to",
        ),
        ("analyst", {"files": {"file": ("a.exe", b"MZ\x90\x00" * 10)}}, 415, ""),
        ("analyst", {"files": {"file": ("a.txt", b"   \n ")}}, 422, ""),
        ("root", {"files": {"file": ("a.txt", MEMO)}}, 422, "use a key created with --tenant"),
    ],
)
def test_bad_uploads_are_refused_and_store_nothing(
    api: Api, who: str | None, kwargs: dict[str, object], status: int, detail: str
) -> None:
    before = sources(api, "admin")
    resp = api.call("POST", "/v1/documents", who, **kwargs)  # type: ignore[arg-type]
    assert_problem(resp, status, detail)
    assert sources(api, "admin") == before


def test_upload_over_the_cap_is_413_and_stores_nothing(settings: Settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app

    small = settings.model_copy(update={"max_document_mb": 0.01})  # 10 KiB
    setup = Services.from_settings(small)
    setup.tenants().create("acme")
    key = setup.apikeys().create(role="analyst", tenant="acme")[0]
    setup.close()
    with TestClient(create_app(small)) as client:
        headers = {"Authorization": f"Bearer {key}"}
        resp = client.post(
            "/v1/documents", headers=headers, files={"file": ("big.txt", b"word " * 5000)}
        )
        assert_problem(resp, 413, "over the 0 MB limit")  # type: ignore[arg-type]
        assert client.get("/v1/documents", headers=headers).json() == []
        ok = client.post("/v1/documents", headers=headers, files={"file": ("s.txt", MEMO)})
        assert ok.status_code == 201


def test_admin_manages_tenants_and_keys(api: Api) -> None:
    created = api.call("POST", "/v1/admin/tenants", "root", json={"name": "initech"})
    assert created.status_code == 201 and created.json()["name"] == "initech"
    assert_problem(api.call("POST", "/v1/admin/tenants", "root", json={"name": "initech"}), 409)
    assert_problem(
        api.call("POST", "/v1/admin/tenants", "root", json={"name": "../x"}), 422, "tenant name"
    )
    names = [t["name"] for t in api.call("GET", "/v1/admin/tenants", "root").json()]
    assert names == ["acme", "globex", "initech"]
    assert [t["name"] for t in api.call("GET", "/v1/admin/tenants", "admin").json()] == ["acme"]

    body = {"role": "analyst", "tenant": "initech", "groups": ["hr"], "name": "dms"}
    key = api.call("POST", "/v1/admin/keys", "root", json=body).json()
    assert key["key"].startswith("apk_") and key["groups"] == ["hr"]
    listed = api.call("GET", "/v1/admin/keys", "root").json()
    assert all("key" not in k and "secret" not in str(k) for k in listed)
    api.keys["initech"] = key["key"]
    assert api.call("GET", "/v1/documents", "initech").json() == []

    assert api.call("DELETE", "/v1/admin/tenants/initech", "root").status_code == 204
    assert_problem(api.call("GET", "/v1/documents", "initech"), 401)  # its keys are revoked
    assert_problem(api.call("DELETE", "/v1/admin/tenants/initech", "root"), 404)
    assert_problem(
        api.call("POST", "/v1/admin/keys", "root", json={**body, "tenant": "initech"}),
        422,
        "unknown tenant",
    )


def test_a_tenant_admin_cannot_manage_the_appliance(api: Api) -> None:
    for method, path, body in [
        ("POST", "/v1/admin/tenants", {"name": "x"}),
        ("DELETE", "/v1/admin/tenants/globex", None),
        ("POST", "/v1/admin/keys", {"role": "admin"}),
        ("POST", "/v1/admin/models/rollback", {"role": "chat"}),
    ]:
        assert_problem(api.call(method, path, "admin", json=body), 403, "tenant's admin key")
    assert [t["name"] for t in api.call("GET", "/v1/admin/tenants", "root").json()] == [
        "acme",
        "globex",
    ]


def test_revoked_key_stops_at_once(api: Api) -> None:
    key_id = api.keys["hr"].split("_")[1]
    assert api.call("DELETE", f"/v1/admin/keys/{key_id}", "root").status_code == 204
    assert_problem(api.call("GET", "/v1/documents", "hr"), 401, "revoked")
    assert_problem(api.call("DELETE", f"/v1/admin/keys/{key_id}", "root"), 404)


def test_model_activation_and_rollback(api: Api) -> None:
    models = api.call("GET", "/v1/admin/models", "root").json()
    int8 = next(m for m in models if m["name"] == "all-minilm-l6-v2-int8")
    assert not int8["active"]
    done = api.call("POST", "/v1/admin/models/activate", "root", json={"model": int8["ref"]})
    assert done.json() == {"role": "embedding", "active": int8["ref"]}
    active = {m["role"]: m["id"] for m in api.call("GET", "/v1/models", "analyst").json()["data"]}
    assert active["embedding"] == "all-minilm-l6-v2-int8"
    back = api.call("POST", "/v1/admin/models/rollback", "root", json={"role": "embedding"})
    assert back.json() == {"role": "embedding", "active": "all-minilm-l6-v2@1"}
    assert_problem(
        api.call("POST", "/v1/admin/models/activate", "root", json={"model": "nope@1"}), 404
    )
    assert_problem(
        api.call("POST", "/v1/admin/models/rollback", "root", json={"role": "chat"}),
        422,
        "no earlier chat model",
    )


def test_auditor_reads_its_tenant_decrypted_and_verifies(api: Api) -> None:
    upload(api, "analyst", "lease.txt", MEMO)
    api.call("POST", "/v1/search", "analyst", json={"query": "lease"})
    api.call("POST", "/v1/search", "globex", json={"query": "secret globex question"})
    entries = api.call("GET", "/v1/audit", "auditor").json()
    uploads = [e for e in entries if e["action"] == "documents.upload"]
    assert uploads and uploads[0]["payload"]["source"] == "lease.txt"
    assert uploads[0]["outcome"] == "ok" and uploads[0]["tenant"] == "acme"
    assert all(e["tenant"] == "acme" for e in entries)
    assert "secret globex question" not in str(entries)
    paged = api.call("GET", "/v1/audit", "auditor", params={"after_seq": entries[0]["seq"]})
    assert [e["seq"] for e in paged.json()][:1] == [entries[1]["seq"]]
    assert_problem(api.call("GET", "/v1/audit", "auditor", params={"tenant": "globex"}), 404)
    assert_problem(api.call("GET", "/v1/audit", "auditor", params={"since": "2026-01-01"}), 422)
    report = api.call("GET", "/v1/audit/verify", "auditor").json()
    assert report["ok"] is True and report["entries"] > 3
    assert_problem(api.call("GET", "/v1/audit", "analyst"), 403)


def test_audit_verify_over_the_api_names_a_tampered_entry(api: Api, settings: Settings) -> None:
    upload(api, "analyst", "lease.txt", MEMO)
    db = settings.audit_dir / "audit.db"
    with sqlite3.connect(db) as conn:
        seq = conn.execute("SELECT min(seq) FROM entries WHERE action = 'documents.upload'")
        target = seq.fetchone()[0]
        conn.execute("UPDATE entries SET outcome = 'refused' WHERE seq = ?", (target,))
    report = api.call("GET", "/v1/audit/verify", "auditor").json()
    assert report["ok"] is False and report["first_bad_seq"] == target


def test_deleted_tenant_entries_stay_verifiable_but_unreadable(api: Api) -> None:
    upload(api, "globex", "plan.txt", b"Globex plans to expand into Lyon next year.")
    assert api.call("DELETE", "/v1/admin/tenants/globex", "root").status_code == 204
    entries = api.call("GET", "/v1/audit", "root", params={"tenant": "globex"}).json()
    assert entries and all(e["payload_unreadable"] for e in entries)
    assert api.call("GET", "/v1/audit/verify", "root").json()["ok"] is True


def test_every_request_is_audited_with_its_outcome(api: Api, settings: Settings) -> None:
    api.call("GET", "/v1/documents", None)
    api.call("GET", "/v1/documents/999", "analyst")
    api.call("GET", "/v1/audit", "analyst")
    with sqlite3.connect(settings.audit_dir / "audit.db") as conn:
        rows = conn.execute("SELECT actor, action, outcome FROM entries ORDER BY seq").fetchall()
    analyst = api.keys["analyst"].split("_")[1]
    assert rows[-3:] == [
        ("anonymous", "GET /v1/documents", "denied"),
        (analyst, "GET /v1/documents/{document_id}", "refused"),
        (analyst, "audit.read", "denied"),  # refused before the route ran, by its name
    ]
