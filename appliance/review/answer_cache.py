"""The answer cache: identical questions answered again without the model.

One cache per tenant (``answers.db`` beside its corpus). The key is an HMAC, under the
tenant's cache key, of the normalised question, everything else that shapes the answer
(k, the caller's groups, filters, mode, the abstention threshold), the corpus version and
the models with their sha256: any ingest or deletion changes the corpus version, so an old
answer is never served, and two callers whose groups differ never share an entry. Answers
are sealed (AES-GCM); the question is not stored, not even as a plain hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.crypto import open_sealed, seal

if TYPE_CHECKING:
    from appliance.services import Services


class AnswerCache:
    """Sealed answers of one tenant, in ``answers.db`` beside its corpus."""

    def __init__(self, path: Path, key: bytes) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, corpus_version INTEGER "
            "NOT NULL, value BLOB NOT NULL, created_at REAL NOT NULL)"
        )

    def key(
        self, question: str, options: list[Any], corpus_version: int, models: dict[str, str]
    ) -> str:
        """The entry's key: ``options`` is everything besides the question that shapes it."""
        material = json.dumps([question.lower(), options, corpus_version, sorted(models.items())])
        return hmac.new(self._key, material.encode(), hashlib.sha256).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = json.loads(open_sealed(self._key, row[0], key.encode()))
        return {**value, "cached": True}

    def put(self, key: str, corpus_version: int, value: dict[str, Any]) -> None:
        blob = seal(self._key, json.dumps(value).encode(), key.encode())
        with self._lock:
            # answers over an older corpus can never be asked for again: drop them
            self._conn.execute("DELETE FROM answers WHERE corpus_version < ?", (corpus_version,))
            self._conn.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                (key, corpus_version, blob, time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def answer_cache(services: Services, tenant: str) -> AnswerCache:
    return services.tenant_state(
        tenant, "answers", lambda folder, keys: AnswerCache(folder / "answers.db", keys.cache_key)
    )
