"""API keys: random, shown once, stored hashed, compared in constant time.

A key reads ``apk_<id>_<secret>``: the id finds the row, the secret is checked against
its stored SHA-256 with :func:`secrets.compare_digest`. The secret has 256 bits of
entropy, so a plain hash is as strong as a slow password hash here and costs nothing per
request. Each key carries a role, a tenant (None for an admin of the whole appliance)
and ACL groups.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from appliance.crypto import create_file_once
from appliance.errors import InvalidInput, NotFound, Unauthorized
from appliance.keyring import check_tenant_name

Role = Literal["admin", "analyst", "reviewer", "auditor"]
ROLES: tuple[Role, ...] = ("admin", "analyst", "reviewer", "auditor")
_KEY = re.compile(r"apk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    secret_sha256 BLOB NOT NULL,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant TEXT,
    groups TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
)
"""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, role, tenant and groups."""

    key_id: str
    name: str
    role: Role
    tenant: str | None
    groups: frozenset[str]

    @property
    def acl_groups(self) -> frozenset[str] | None:
        """Groups for document ACLs; None (sees everything) for an admin."""
        return None if self.role == "admin" else self.groups


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    name: str
    role: Role
    tenant: str | None
    groups: tuple[str, ...]
    created_at: str
    revoked_at: str | None


def parse_groups(value: str | None) -> tuple[str, ...]:
    """``"legal, hr"`` -> ``("hr", "legal")``: a comma-separated group list, checked."""
    if value is None:
        return ()
    return check_groups([g.strip() for g in value.split(",") if g.strip()])


def check_groups(groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    for group in groups:
        if not _GROUP.fullmatch(group):
            raise InvalidInput(
                f"invalid group name {group!r}: use letters, digits, '.', '_' or '-'"
            )
    return tuple(sorted(set(groups)))


class ApiKeys:
    """The API key table (``<home>/keys/apikeys.db``, mode 0600). Thread-safe."""

    def __init__(self, path: Path) -> None:
        if not path.exists():
            create_file_once(path, b"")
        self._conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def create(
        self, *, role: str, tenant: str | None, groups: tuple[str, ...] = (), name: str = ""
    ) -> tuple[str, ApiKeyInfo]:
        """A new key; returns ``(the key itself, shown this once; its record)``."""
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
        if role != "admin" and tenant is None:
            article = "an" if role[0] in "aeiou" else "a"
            raise InvalidInput(f"{article} {role} key needs a tenant (--tenant)")
        if tenant is not None:
            check_tenant_name(tenant)
        groups = check_groups(groups)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            self._conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    key_id,
                    hashlib.sha256(secret.encode()).digest(),
                    name or key_id,
                    role,
                    tenant,
                    json.dumps(list(groups)),
                    now,
                ),
            )
        info = ApiKeyInfo(key_id, name or key_id, role, tenant, groups, now, None)
        return f"apk_{key_id}_{secret}", info

    def authenticate(self, presented: str) -> Principal:
        """The principal of a valid, unrevoked key; ``Unauthorized`` otherwise."""
        match = _KEY.fullmatch(presented.strip())
        with self._lock:
            row = (
                self._conn.execute(
                    "SELECT secret_sha256, name, role, tenant, groups, revoked_at FROM api_keys "
                    "WHERE id = ?",
                    (match.group(1),),
                ).fetchone()
                if match
                else None
            )
        digest = hashlib.sha256(match.group(2).encode() if match else b"").digest()
        # compare even when nothing matched, so timing does not tell which case it was
        expected = row[0] if row else hashlib.sha256(b"\x00").digest()
        if not secrets.compare_digest(digest, expected) or row is None or row[5] is not None:
            raise Unauthorized("the API key is missing, malformed, unknown or revoked")
        assert match is not None
        return Principal(match.group(1), row[1], row[2], row[3], frozenset(json.loads(row[4])))

    def list(self) -> list[ApiKeyInfo]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, name, role, tenant, groups, created_at, revoked_at FROM api_keys "
                "ORDER BY created_at, id"
            ).fetchall()
        return [
            ApiKeyInfo(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6]) for r in rows
        ]

    def revoke(self, key_id: str) -> ApiKeyInfo:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            done = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, key_id),
            ).rowcount
        if not done:
            raise NotFound(f"no active API key {key_id!r}: see `appliance keys list`")
        return next(k for k in self.list() if k.id == key_id)

    def revoke_tenant(self, tenant: str) -> int:
        """Revoke every active key of a tenant (when it is deleted); returns how many."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            done: int = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND revoked_at IS NULL",
                (now, tenant),
            ).rowcount
        return done
