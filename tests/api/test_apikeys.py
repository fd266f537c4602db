"""API keys: shown once, stored hashed, constant-time checks, revocation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.apikeys import ApiKeys
from appliance.errors import InvalidInput, NotFound, Unauthorized


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[ApiKeys]:
    store = ApiKeys(tmp_path / "apikeys.db")
    yield store
    store.close()


def test_create_and_authenticate(keys: ApiKeys) -> None:
    key, info = keys.create(
        role="analyst", tenant="acme", groups=("legal", "hr", "legal"), name="etl"
    )
    assert key.startswith(f"apk_{info.id}_") and len(key) == 4 + 12 + 1 + 43
    who = keys.authenticate(key)
    assert (who.role, who.tenant, who.groups, who.name) == (
        "analyst",
        "acme",
        frozenset({"hr", "legal"}),
        "etl",
    )
    assert who.acl_groups == frozenset({"hr", "legal"})
    admin_key, _ = keys.create(role="admin", tenant=None)
    assert keys.authenticate(admin_key).acl_groups is None


def test_the_secret_is_not_stored(keys: ApiKeys, tmp_path: Path) -> None:
    key, _ = keys.create(role="auditor", tenant="acme")
    secret = key.rsplit("_", 1)[1].encode()
    for path in tmp_path.iterdir():
        assert secret not in path.read_bytes()


@pytest.mark.parametrize(
    "presented",
    ["", "Bearer x", "apk_short_secret", "apk_000000000000_" + "A" * 43],
)
def test_bad_keys_are_unauthorized(keys: ApiKeys, presented: str) -> None:
    with pytest.raises(Unauthorized, match="missing, malformed, unknown or revoked"):
        keys.authenticate(presented)


def test_a_wrong_secret_for_a_real_id_is_unauthorized(keys: ApiKeys) -> None:
    key, _ = keys.create(role="analyst", tenant="acme")
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(Unauthorized):
        keys.authenticate(forged)


def test_revoked_keys_stop_working(keys: ApiKeys) -> None:
    key, info = keys.create(role="reviewer", tenant="acme")
    assert keys.revoke(info.id).revoked_at is not None
    with pytest.raises(Unauthorized):
        keys.authenticate(key)
    with pytest.raises(NotFound, match="no active API key"):
        keys.revoke(info.id)
    assert [k.id for k in keys.list()] == [info.id]


def test_bad_key_requests(keys: ApiKeys) -> None:
    with pytest.raises(InvalidInput, match="unknown role 'root'"):
        keys.create(role="root", tenant="acme")
    with pytest.raises(InvalidInput, match="an analyst key needs a tenant"):
        keys.create(role="analyst", tenant=None)
    with pytest.raises(InvalidInput, match="invalid tenant name"):
        keys.create(role="analyst", tenant="../etc")
    with pytest.raises(InvalidInput, match="invalid group name 'a b'"):
        keys.create(role="analyst", tenant="acme", groups=("a b",))
    assert keys.list() == []
