"""The key hierarchy: sealing, master key files and passphrases, the keyring."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from appliance.crypto import KEY_BYTES, MasterKey, create_file_once, open_sealed, seal
from appliance.errors import (
    ConfigurationError,
    Conflict,
    DecryptionFailed,
    InvalidInput,
    NotFound,
)
from appliance.keyring import KeyRing, TenantKeys

KEY = bytes(range(32))


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _wrapped(keyring_path: Path, tenant: str) -> bytes:
    with sqlite3.connect(keyring_path) as conn:
        row = conn.execute("SELECT wrapped FROM tenants WHERE name = ?", (tenant,)).fetchone()
    conn.close()
    return bytes(row[0])


def _all_keys(keys: TenantKeys) -> list[bytes]:
    return [keys.db_key, keys.vectors_key, keys.audit_key, keys.cache_key]


# --- seal / open ---------------------------------------------------------------------------


def test_seal_round_trip_and_blob_format() -> None:
    blob = seal(KEY, b"secret text", b"aad")
    assert blob[0] == 1
    assert len(blob) == 1 + 12 + len(b"secret text") + 16
    assert b"secret text" not in blob
    assert open_sealed(KEY, blob, b"aad") == b"secret text"
    assert seal(KEY, b"secret text", b"aad")[1:13] != blob[1:13]  # a fresh nonce every time


@pytest.mark.parametrize("position", [0 + 1, 5, 13, 20, -1])
def test_any_altered_byte_fails_to_open(position: int) -> None:
    blob = bytearray(seal(KEY, b"payload bytes", b"aad"))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionFailed, match="wrong key, or the data was altered"):
        open_sealed(KEY, bytes(blob), b"aad")


def test_wrong_key_or_aad_fails_to_open() -> None:
    blob = seal(KEY, b"x", b"tenant:a")
    with pytest.raises(DecryptionFailed, match="did not open"):
        open_sealed(bytes(32), blob, b"tenant:a")
    with pytest.raises(DecryptionFailed, match="did not open"):
        open_sealed(KEY, blob, b"tenant:b")


def test_truncated_or_unknown_version_blob() -> None:
    blob = seal(KEY, b"x", b"")
    with pytest.raises(DecryptionFailed, match="truncated"):
        open_sealed(KEY, blob[:20], b"")
    with pytest.raises(DecryptionFailed, match="unknown format version 2"):
        open_sealed(KEY, b"\x02" + blob[1:], b"")


def test_key_of_wrong_length_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="32-byte key, got 16 bytes"):
        seal(bytes(16), b"x", b"")
    with pytest.raises(ConfigurationError, match="32-byte key, got 31 bytes"):
        open_sealed(bytes(31), b"x" * 40, b"")


# --- master key file -----------------------------------------------------------------------


def test_key_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    first = MasterKey.from_file(path, create=True)
    assert path.stat().st_size == KEY_BYTES
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    again = MasterKey.from_file(path, create=False)
    assert first.derive("x") == again.derive("x")
    assert "secret" in repr(first)
    assert path.read_bytes().hex() not in repr(first)
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temp file left


def test_missing_key_file_without_create(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    with pytest.raises(ConfigurationError, match=f"master key file {path} does not exist"):
        MasterKey.from_file(path, create=False)
    assert not path.parent.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    MasterKey.from_file(path, create=True)
    content = path.read_bytes()
    path.chmod(mode)
    with pytest.raises(ConfigurationError, match=rf"{path} .*mode 0{mode:o}.*chmod 600 {path}"):
        MasterKey.from_file(path, create=True)
    assert path.read_bytes() == content
    assert _mode(path) == mode


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_key_file_of_wrong_length_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "master.key"
    create_file_once(path, b"k" * size)
    with pytest.raises(ConfigurationError, match=f"{path} holds {size} bytes, expected 32"):
        MasterKey.from_file(path, create=True)
    assert path.read_bytes() == b"k" * size


def test_key_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a regular file"):
        MasterKey.from_file(tmp_path, create=True)


def test_racing_creators_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    keys: list[bytes] = []
    threads = [
        threading.Thread(
            target=lambda: keys.append(MasterKey.from_file(path, create=True).derive("a"))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8
    assert len(set(keys)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]


# --- passphrase ----------------------------------------------------------------------------


def test_passphrase_with_its_salt_gives_the_same_key(tmp_path: Path) -> None:
    salt = tmp_path / "keys" / "master.salt"
    one = MasterKey.from_passphrase("correct horse", salt)
    assert salt.stat().st_size == 16
    salt_bytes = salt.read_bytes()
    assert MasterKey.from_passphrase("correct horse", salt).derive("x") == one.derive("x")
    assert MasterKey.from_passphrase("correct horsE", salt).derive("x") != one.derive("x")
    assert salt.read_bytes() == salt_bytes  # created once
    other_salt = tmp_path / "other.salt"
    assert MasterKey.from_passphrase("correct horse", other_salt).derive("x") != one.derive("x")


def test_empty_passphrase_or_bad_salt(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="passphrase is empty"):
        MasterKey.from_passphrase("", tmp_path / "salt")
    assert not (tmp_path / "salt").exists()
    bad = tmp_path / "bad.salt"
    bad.write_bytes(b"short")
    with pytest.raises(ConfigurationError, match=f"salt file {bad} holds 5 bytes, expected 16"):
        MasterKey.from_passphrase("pw", bad)


# --- keyring -------------------------------------------------------------------------------


@pytest.fixture
def master(tmp_path: Path) -> MasterKey:
    return MasterKey.from_file(tmp_path / "keys" / "master.key", create=True)


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.db"


def test_tenant_keys_are_distinct_stable_and_survive_reopening(
    keyring_path: Path, master: MasterKey
) -> None:
    with KeyRing(keyring_path, master) as ring:
        acme = ring.create_tenant("acme")
        beta = ring.create_tenant("beta")
        assert ring.tenant_keys("acme") == acme
    assert _mode(keyring_path) == 0o600
    with KeyRing(keyring_path, master) as ring:
        assert ring.tenant_keys("acme") == acme
        assert [t.name for t in ring.tenants()] == ["acme", "beta"]
        assert all(t.created_at.tzinfo is not None for t in ring.tenants())
        system = ring.system_keys()
    every = _all_keys(acme) + _all_keys(beta) + _all_keys(system)
    assert len(set(every)) == 12
    assert all(len(k) == 32 for k in every)
    assert system.tenant is None
    assert acme.tenant == "acme"
    assert acme.audit_key.hex() not in repr(acme)


@pytest.mark.parametrize(
    "name", ["", "Acme", "-acme", "_acme", "a" * 64, "a b", "acme\n", "acme/x", "ácme", "a.b"]
)
def test_invalid_tenant_names(keyring_path: Path, master: MasterKey, name: str) -> None:
    with KeyRing(keyring_path, master) as ring:
        with pytest.raises(InvalidInput, match="invalid tenant name"):
            ring.create_tenant(name)
        with pytest.raises(InvalidInput, match="invalid tenant name"):
            ring.tenant_keys(name)
        assert ring.tenants() == []


@pytest.mark.parametrize("name", ["a", "0", "a" * 63, "a_b-c", "system", "9-tenant"])
def test_valid_tenant_names(keyring_path: Path, master: MasterKey, name: str) -> None:
    with KeyRing(keyring_path, master) as ring:
        assert ring.create_tenant(name).tenant == name


def test_duplicate_and_unknown_tenants(keyring_path: Path, master: MasterKey) -> None:
    with KeyRing(keyring_path, master) as ring:
        keys = ring.create_tenant("acme")
        with pytest.raises(Conflict, match="tenant 'acme' already exists"):
            ring.create_tenant("acme")
        assert ring.tenant_keys("acme") == keys  # the first key was kept
        with pytest.raises(NotFound, match="tenant 'nobody' does not exist"):
            ring.tenant_keys("nobody")
        with pytest.raises(NotFound, match="tenant 'nobody' does not exist"):
            ring.destroy_tenant("nobody")


def test_wrong_master_key_is_a_clear_configuration_error(
    tmp_path: Path, keyring_path: Path, master: MasterKey
) -> None:
    KeyRing(keyring_path, master).close()
    before = keyring_path.read_bytes()
    expected = (
        f"master key does not open the keyring at {keyring_path}: wrong passphrase or key file?"
    )
    with pytest.raises(ConfigurationError) as caught:
        KeyRing(keyring_path, MasterKey.generate())
    assert caught.value.detail == expected
    assert keyring_path.read_bytes() == before


def test_wrong_passphrase_is_a_clear_configuration_error(tmp_path: Path) -> None:
    salt, path = tmp_path / "keys" / "salt", tmp_path / "keys" / "keyring.db"
    KeyRing(path, MasterKey.from_passphrase("right", salt)).close()
    with pytest.raises(ConfigurationError, match="wrong passphrase or key file"):
        KeyRing(path, MasterKey.from_passphrase("wrong", salt))
    KeyRing(path, MasterKey.from_passphrase("right", salt)).close()


def test_a_file_that_is_not_a_keyring(keyring_path: Path, master: MasterKey) -> None:
    keyring_path.parent.mkdir(parents=True, exist_ok=True)
    keyring_path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ConfigurationError, match=f"keyring {keyring_path} is not a readable"):
        KeyRing(keyring_path, master)
    assert keyring_path.read_bytes() == b"not a database at all" * 100


def test_destroy_tenant_shreds_its_wrapped_key(keyring_path: Path, master: MasterKey) -> None:
    with KeyRing(keyring_path, master) as ring:
        old = ring.create_tenant("acme")
        ring.create_tenant("beta")
        wrapped = _wrapped(keyring_path, "acme")
        assert wrapped in keyring_path.read_bytes()
        ring.destroy_tenant("acme")
        files = list(keyring_path.parent.iterdir())
        assert all(wrapped not in f.read_bytes() for f in files)
        with pytest.raises(NotFound, match="tenant 'acme' does not exist"):
            ring.tenant_keys("acme")
        assert [t.name for t in ring.tenants()] == ["beta"]
        assert set(_all_keys(ring.create_tenant("acme"))).isdisjoint(_all_keys(old))


def test_destroy_in_another_process_takes_effect_here(
    keyring_path: Path, master: MasterKey
) -> None:
    with KeyRing(keyring_path, master) as ring, KeyRing(keyring_path, master) as other:
        ring.create_tenant("acme")
        assert ring.tenant_keys("acme") == other.tenant_keys("acme")
        other.destroy_tenant("acme")
        with pytest.raises(NotFound):
            ring.tenant_keys("acme")


def test_rotate_master_rewraps_and_keeps_derived_keys(
    tmp_path: Path, keyring_path: Path, master: MasterKey
) -> None:
    new = MasterKey.generate()
    with KeyRing(keyring_path, master) as ring:
        acme = ring.create_tenant("acme")
        system, chain = ring.system_keys(), ring.system_key("audit-chain")
        old_wrapped = _wrapped(keyring_path, "acme")
        ring.rotate_master(new)
        assert ring.tenant_keys("acme") == acme
        assert old_wrapped not in keyring_path.read_bytes()
    with pytest.raises(ConfigurationError, match="wrong passphrase or key file"):
        KeyRing(keyring_path, master)
    with KeyRing(keyring_path, new) as ring:
        assert ring.tenant_keys("acme") == acme
        assert ring.system_keys() == system
        assert ring.system_key("audit-chain") == chain


def test_rotation_is_all_or_nothing(keyring_path: Path, master: MasterKey) -> None:
    with KeyRing(keyring_path, master) as ring:
        for name in ("a1", "a2", "a3"):
            ring.create_tenant(name)
    with sqlite3.connect(keyring_path) as conn:  # one wrapped key damaged on disk
        conn.execute("UPDATE tenants SET wrapped = ? WHERE name = 'a3'", (b"\x01" + bytes(40),))
    conn.close()
    before = {name: _wrapped(keyring_path, name) for name in ("a1", "a2")}
    with KeyRing(keyring_path, master) as ring:
        with pytest.raises(ConfigurationError, match="does not open the keyring"):
            ring.rotate_master(MasterKey.generate())
        assert {name: _wrapped(keyring_path, name) for name in ("a1", "a2")} == before
        assert ring.tenant_keys("a1").tenant == "a1"  # the old master still opens them


def test_system_keys_by_purpose(keyring_path: Path, master: MasterKey) -> None:
    with KeyRing(keyring_path, master) as ring:
        assert ring.system_key("a") != ring.system_key("b")
        assert ring.system_key("a") not in _all_keys(ring.system_keys())
        with pytest.raises(InvalidInput, match="needs a purpose"):
            ring.system_key("")
