"""The keyring: the registry of tenants and their root keys, wrapped by the master key.

See :mod:`appliance.crypto` for the key hierarchy. A tenant's data keys derive from its root
key (:class:`TenantKeys`); destroying the root (crypto-shredding) makes them unrecoverable.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from appliance.crypto import (
    KEY_BYTES,
    MasterKey,
    create_file_once,
    derive_key,
    open_sealed,
    seal,
)
from appliance.errors import ConfigurationError, Conflict, DecryptionFailed, InvalidInput, NotFound

_TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KEYRING_SCHEMA = 1
_SYSTEM_AAD = b"keyring:system"


# --- tenant keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantKeys:
    """The data keys of one tenant (``tenant`` None: the system's own keys)."""

    tenant: str | None
    db_key: bytes = field(repr=False)
    """SQLCipher key of the tenant's document DB."""
    vectors_key: bytes = field(repr=False)
    """Seals the tenant's vector index files."""
    audit_key: bytes = field(repr=False)
    """Seals the payloads of the tenant's audit entries."""
    cache_key: bytes = field(repr=False)
    """Seals the tenant's caches."""

    @classmethod
    def derive(cls, tenant: str | None, root: bytes) -> TenantKeys:
        """Derive every data key from a root key; each label gives an independent key."""
        return cls(
            tenant=tenant,
            db_key=derive_key(root, "data/db"),
            vectors_key=derive_key(root, "data/vectors"),
            audit_key=derive_key(root, "data/audit"),
            cache_key=derive_key(root, "data/cache"),
        )


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """A tenant as the keyring registers it."""

    name: str
    created_at: datetime


def check_tenant_name(name: str) -> str:
    """Return ``name`` if it is a valid tenant name, else raise :class:`InvalidInput`."""
    if not isinstance(name, str) or _TENANT_NAME.fullmatch(name) is None:
        raise InvalidInput(
            f"invalid tenant name {name!r}: use 1-63 characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _tenant_aad(name: str) -> bytes:
    # Prefixed so a tenant named "system" can never share the system root's aad.
    return b"keyring:tenant:" + name.encode()


# --- keyring -------------------------------------------------------------------------------

_KEYRING_DDL = (
    "CREATE TABLE IF NOT EXISTS system ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), wrapped BLOB NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tenants ("
    " name TEXT PRIMARY KEY, wrapped BLOB NOT NULL, created_at TEXT NOT NULL)",
)


class KeyRing:
    """The registry of tenants and their root keys, wrapped by the master key, in SQLite.

    Thread-safe. Every lookup reads the file, so a tenant destroyed by another process is
    gone here too. Deleted rows are zeroed (``secure_delete``) and the file is vacuumed,
    so a destroyed tenant's wrapped key is not left in the file.

    Args:
        path: The keyring file, e.g. ``<home>/keys/keyring.db`` (created, mode 0600).
        master: The master key.

    Raises:
        ConfigurationError: The master key does not open this keyring, or the file is not a
            keyring.
    """

    def __init__(self, path: Path, master: MasterKey) -> None:
        self._path = path
        self._wrap_key = master.derive("keyring-wrap")
        self._lock = threading.Lock()
        self._derived: dict[str, tuple[bytes, TenantKeys]] = {}
        if not path.exists():
            create_file_once(path, b"")
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            self._conn.execute("PRAGMA secure_delete = ON")
            self._system_root = self._open_or_init()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise ConfigurationError(
                f"keyring {path} is not a readable keyring database ({exc}): restore it from backup"
            ) from None
        except BaseException:
            self._conn.close()
            raise

    def _open_or_init(self) -> bytes:
        with self._transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _KEYRING_SCHEMA:
                raise ConfigurationError(
                    f"keyring {self._path} was written by a newer appliance (schema {version})"
                )
            if version == 0:
                for statement in _KEYRING_DDL:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {_KEYRING_SCHEMA}")
            row = self._conn.execute("SELECT wrapped FROM system WHERE id = 1").fetchone()
            if row is not None:
                return self._unwrap(row[0], _SYSTEM_AAD)
            root = os.urandom(KEY_BYTES)
            self._conn.execute(
                "INSERT INTO system (id, wrapped, created_at) VALUES (1, ?, ?)",
                (seal(self._wrap_key, root, _SYSTEM_AAD), _now()),
            )
            return root

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return open_sealed(self._wrap_key, wrapped, aad)
        except DecryptionFailed:
            raise ConfigurationError(
                f"master key does not open the keyring at {self._path}: "
                "wrong passphrase or key file?"
            ) from None

    @property
    def path(self) -> Path:
        """The keyring file."""
        return self._path

    def create_tenant(self, name: str) -> TenantKeys:
        """Register a tenant with a new random root key.

        Raises:
            InvalidInput: The name breaks the rule ``^[a-z0-9][a-z0-9_-]{0,62}$``.
            Conflict: The tenant exists.
        """
        check_tenant_name(name)
        root = os.urandom(KEY_BYTES)
        wrapped = seal(self._wrap_key, root, _tenant_aad(name))
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO tenants (name, wrapped, created_at) VALUES (?, ?, ?)",
                    (name, wrapped, _now()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"tenant {name!r} already exists") from None
        return TenantKeys.derive(name, root)

    def tenant_keys(self, name: str) -> TenantKeys:
        """The data keys of a tenant.

        Raises:
            InvalidInput: Not a valid tenant name.
            NotFound: No such tenant (never created, or destroyed).
        """
        check_tenant_name(name)
        with self._lock:
            row = self._conn.execute(
                "SELECT wrapped FROM tenants WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                self._derived.pop(name, None)
                raise NotFound(f"tenant {name!r} does not exist")
            # The row is read every time, so a destroy in any process takes effect at once;
            # only the unwrap and derivation (~50 µs) are skipped while the row is unchanged.
            cached = self._derived.get(name)
            if cached is not None and cached[0] == row[0]:
                return cached[1]
            keys = TenantKeys.derive(name, self._unwrap(row[0], _tenant_aad(name)))
            self._derived[name] = (row[0], keys)
            return keys

    def tenants(self) -> list[TenantInfo]:
        """Every registered tenant, by name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, created_at FROM tenants ORDER BY name"
            ).fetchall()
        return [TenantInfo(name, datetime.fromisoformat(created)) for name, created in rows]

    def destroy_tenant(self, name: str) -> None:
        """Delete a tenant's root key for good (crypto-shredding), then vacuum the file.

        Raises:
            InvalidInput: Not a valid tenant name.
            NotFound: No such tenant.
        """
        check_tenant_name(name)
        with self._lock:
            cursor = self._conn.execute("DELETE FROM tenants WHERE name = ?", (name,))
            self._derived.pop(name, None)
            if cursor.rowcount == 0:
                raise NotFound(f"tenant {name!r} does not exist")
            self._conn.execute("VACUUM")

    def rotate_master(self, new: MasterKey) -> None:
        """Re-wrap every root key under ``new`` in one transaction; derived keys are unchanged.

        Afterwards only ``new`` opens the keyring, so persist it first: e.g. create it with
        ``MasterKey.from_file(new_path, create=True)``, rotate, then move it into place.

        Raises:
            ConfigurationError: A wrapped key does not open; nothing was changed.
        """
        new_wrap = new.derive("keyring-wrap")
        with self._lock:
            with self._transaction():
                rows = self._conn.execute("SELECT name, wrapped FROM tenants").fetchall()
                for name, wrapped in rows:
                    root = self._unwrap(wrapped, _tenant_aad(name))
                    self._conn.execute(
                        "UPDATE tenants SET wrapped = ? WHERE name = ?",
                        (seal(new_wrap, root, _tenant_aad(name)), name),
                    )
                self._conn.execute(
                    "UPDATE system SET wrapped = ? WHERE id = 1",
                    (seal(new_wrap, self._system_root, _SYSTEM_AAD),),
                )
            self._wrap_key = new_wrap
            # Roots wrapped by the old master must not linger in free pages.
            self._conn.execute("VACUUM")

    def system_keys(self) -> TenantKeys:
        """Data keys for what belongs to no tenant (e.g. audit entries without a tenant)."""
        return TenantKeys.derive(None, self._system_root)

    def system_key(self, purpose: str) -> bytes:
        """A 32-byte system key for one purpose (e.g. ``"audit-chain"``).

        Derived from the system root, so it survives a master key rotation.
        """
        if not purpose:
            raise InvalidInput("a system key needs a purpose")
        return derive_key(self._system_root, "system/" + purpose)

    def close(self) -> None:
        """Close the keyring file."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> KeyRing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
