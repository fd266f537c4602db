"""One SQLCipher database of a tenant: opened with its raw key, migrated, one lock.

The document store and the classification store share this: the key pragma, WAL with full
synchronous commits, foreign keys, numbered migration scripts tracked in ``user_version``,
explicit ``BEGIN IMMEDIATE`` transactions, and one connection behind one lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlcipher3

from appliance.errors import ConfigurationError


class EncryptedDatabase:
    """Thread-safe access to one encrypted database (one connection, one lock).

    Args:
        path: The database file (created when missing).
        key: The 32-byte raw SQLCipher key.
        what: How errors name it, e.g. ``"document database"``.
        migrations: Scripts (statements separated by ``;\\n``); the ones past the file's
            ``user_version`` are applied, in order, on open.
    """

    def __init__(self, path: Path, key: bytes, what: str, migrations: Sequence[str]) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlcipher3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            self._conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._migrate(migrations)
        except sqlcipher3.DatabaseError as exc:
            self._conn.close()
            raise ConfigurationError(
                f"{what} {path} cannot be opened with this tenant's key ({exc}): "
                "the file is damaged or belongs to another key"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _migrate(self, migrations: Sequence[str]) -> None:
        with self.transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(migrations[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";\n")):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlcipher3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return list(self._conn.execute(sql, params))
