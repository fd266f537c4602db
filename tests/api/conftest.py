"""Shared by the API tests: an app with two tenants, documents, and a key per role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from appliance.api.app import create_app
from appliance.config import Settings
from appliance.corpus.ingest import discover, ingest
from appliance.services import Services
from appliance.testing import Api


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[Api]:
    setup = Services.from_settings(settings)
    for tenant in ("acme", "globex"):
        setup.tenants().create(tenant)
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "memo.txt").write_text("The office moves to Lyon in March.")
    (tmp_path / "legal").mkdir()
    (tmp_path / "legal" / "merger.txt").write_text("Merger talks with Initech are confidential.")
    ingest(setup.corpus("acme"), discover([tmp_path / "pub"]))
    ingest(setup.corpus("acme"), discover([tmp_path / "legal"]), acl=["legal"])
    docs = {d.source: d.id for d in setup.corpus("acme").store.documents()}
    keys = {}
    for name, role, tenant, groups in [
        ("analyst", "analyst", "acme", ("legal",)),
        ("hr", "analyst", "acme", ("hr",)),
        ("reviewer", "reviewer", "acme", ("legal",)),
        ("auditor", "auditor", "acme", ()),
        ("admin", "admin", "acme", ()),
        ("globex", "analyst", "globex", ("legal",)),
        ("root", "admin", None, ()),
    ]:
        keys[name] = setup.apikeys().create(role=role, tenant=tenant, groups=groups)[0]
    setup.close()
    with TestClient(create_app(settings)) as client:
        yield Api(client, keys, docs)
