"""A tenant's encrypted document database: documents, versions, chunks, BM25 index.

One SQLCipher file per tenant, keyed with the tenant's data key: every page on disk
(document text, chunk text, the FTS5 index, embeddings) is encrypted, and BM25 search
runs inside it. A document version is written in one transaction (its text, chunks,
embeddings and index rows, and the switch from the previous version), so a process
killed at any point leaves either the old state or the new one, never half a document.

Chunk ids are the vector index's ids. Only the chunks of the current version of a
document that is not deleted are *live*: in the FTS index, and expected in the vectors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlcipher3

from appliance.corpus.chunking import ChunkDraft
from appliance.corpus.filters import DocumentFilter
from appliance.corpus.lexical import bm25_sql, fts_query
from appliance.corpus.parsed import ParsedDocument
from appliance.encrypted_db import EncryptedDatabase
from appliance.errors import ConfigurationError, NotFound

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL UNIQUE,
        current_version INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE TABLE document_groups (
        document_id INTEGER NOT NULL REFERENCES documents(id),
        grp TEXT NOT NULL,
        PRIMARY KEY (document_id, grp)
    ) WITHOUT ROWID;
    CREATE TABLE versions (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id),
        number INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        status TEXT NOT NULL,
        text TEXT NOT NULL,
        metadata TEXT NOT NULL,
        warnings TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (document_id, number)
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        version_id INTEGER NOT NULL REFERENCES versions(id),
        document_id INTEGER NOT NULL REFERENCES documents(id),
        ordinal INTEGER NOT NULL,
        start INTEGER NOT NULL,
        "end" INTEGER NOT NULL,
        location TEXT NOT NULL,
        page INTEGER,
        cells TEXT,
        tokens INTEGER NOT NULL,
        live INTEGER NOT NULL
    );
    CREATE TABLE embeddings (
        chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id),
        vector BLOB NOT NULL
    );
    CREATE INDEX chunks_live ON chunks (live, document_id);
    CREATE INDEX chunks_version ON chunks (version_id);
    CREATE VIRTUAL TABLE chunks_fts USING fts5 (
        text, document_id UNINDEXED, tokenize = 'porter unicode61'
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta VALUES ('corpus_version', '0');
    """,
)


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: int
    source: str
    version: int
    sha256: str
    media_type: str
    size: int
    status: str
    acl: tuple[str, ...]
    chunks: int
    warnings: tuple[str, ...]
    metadata: dict[str, str]
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    id: int
    document_id: int
    source: str
    version: int
    ordinal: int
    start: int
    end: int
    location: str
    page: int | None
    cells: str | None
    text: str


@dataclass(frozen=True, slots=True)
class StoredVersion:
    document_id: int
    version: int
    new_chunk_ids: tuple[int, ...]
    retired_chunk_ids: tuple[int, ...]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class CorpusStore(EncryptedDatabase):
    """The document database of one tenant. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path, key: bytes) -> None:
        super().__init__(path, key, "document database", _MIGRATIONS)

    # --- writing ---------------------------------------------------------------------------

    @property
    def corpus_version(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key = 'corpus_version'")[0][0])

    def _bump(self, conn: sqlcipher3.Connection) -> None:
        conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'corpus_version'"
        )

    def meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def lookup(self, source: str) -> tuple[int, str] | None:
        """``(document id, sha256 of its current version)`` of a live document, or None."""
        rows = self._query(
            "SELECT d.id, v.sha256 FROM documents d JOIN versions v ON v.id = d.current_version "
            "WHERE d.source = ? AND d.deleted_at IS NULL",
            (source,),
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def store_version(
        self,
        *,
        source: str,
        sha256: str,
        size: int,
        parsed: ParsedDocument,
        chunks: Sequence[ChunkDraft],
        embeddings: npt.NDArray[np.float32],
        acl: Sequence[str],
    ) -> StoredVersion:
        """Write a new version of ``source`` (a new document when unknown), all or nothing."""
        if len(chunks) != len(embeddings):
            raise ValueError("one embedding per chunk")
        now = _now()
        with self.transaction() as conn:
            doc_id = self._document_row(conn, source, now)
            retired = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM chunks WHERE document_id = ? AND live = 1", (doc_id,)
                )
            ]
            self._retire(conn, retired)
            number = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE document_id = ?",
                (doc_id,),
            ).fetchone()[0]
            version_id = conn.execute(
                "INSERT INTO versions (document_id, number, sha256, media_type, size, status, "
                "text, metadata, warnings, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    doc_id,
                    number,
                    sha256,
                    parsed.media_type,
                    size,
                    parsed.status,
                    parsed.text,
                    json.dumps(parsed.metadata),
                    json.dumps(list(parsed.warnings)),
                    now,
                ),
            ).lastrowid
            new_ids = self._insert_chunks(conn, doc_id, version_id, chunks, embeddings)
            conn.execute(
                "UPDATE documents SET current_version = ?, updated_at = ?, deleted_at = NULL "
                "WHERE id = ?",
                (version_id, now, doc_id),
            )
            conn.execute("DELETE FROM document_groups WHERE document_id = ?", (doc_id,))
            conn.executemany(
                "INSERT INTO document_groups VALUES (?, ?)", [(doc_id, g) for g in sorted(set(acl))]
            )
            self._bump(conn)
        return StoredVersion(doc_id, int(number), tuple(new_ids), tuple(retired))

    def _document_row(self, conn: sqlcipher3.Connection, source: str, now: str) -> int:
        row = conn.execute("SELECT id FROM documents WHERE source = ?", (source,)).fetchone()
        if row:
            return int(row[0])
        return int(
            conn.execute(
                "INSERT INTO documents (source, created_at, updated_at) VALUES (?, ?, ?)",
                (source, now, now),
            ).lastrowid
        )

    def _insert_chunks(
        self,
        conn: sqlcipher3.Connection,
        doc_id: int,
        version_id: int,
        chunks: Sequence[ChunkDraft],
        embeddings: npt.NDArray[np.float32],
    ) -> list[int]:
        ids = []
        for chunk, vector in zip(chunks, embeddings, strict=True):
            chunk_id = int(
                conn.execute(
                    'INSERT INTO chunks (version_id, document_id, ordinal, start, "end", location, '
                    "page, cells, tokens, live) VALUES (?,?,?,?,?,?,?,?,?,1)",
                    (
                        version_id,
                        doc_id,
                        chunk.ordinal,
                        chunk.start,
                        chunk.end,
                        chunk.location,
                        chunk.page,
                        chunk.cells,
                        chunk.tokens,
                    ),
                ).lastrowid
            )
            conn.execute(
                "INSERT INTO embeddings VALUES (?, ?)",
                (chunk_id, np.ascontiguousarray(vector, dtype=np.float32).tobytes()),
            )
            conn.execute(
                "INSERT INTO chunks_fts (rowid, text, document_id) VALUES (?, ?, ?)",
                (chunk_id, chunk.text, doc_id),
            )
            ids.append(chunk_id)
        return ids

    def _retire(self, conn: sqlcipher3.Connection, chunk_ids: Sequence[int]) -> None:
        for chunk_id in chunk_ids:
            conn.execute("DELETE FROM chunks_fts WHERE rowid = ?", (chunk_id,))
            conn.execute("UPDATE chunks SET live = 0 WHERE id = ?", (chunk_id,))

    def delete_document(self, doc_id: int) -> list[int]:
        """Delete a document: its chunks leave both indexes; returns the retired chunk ids."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT id FROM documents WHERE id = ? AND deleted_at IS NULL", (doc_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no document {doc_id} in this tenant")
            retired = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM chunks WHERE document_id = ? AND live = 1", (doc_id,)
                )
            ]
            self._retire(conn, retired)
            # the text of every version goes: a deleted document is not kept readable
            conn.execute("UPDATE versions SET text = '' WHERE document_id = ?", (doc_id,))
            conn.execute(
                "UPDATE documents SET deleted_at = ?, current_version = NULL WHERE id = ?",
                (_now(), doc_id),
            )
            self._bump(conn)
        return retired

    def replace_embeddings(
        self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], model_ref: str
    ) -> None:
        """Swap every embedding for ``vectors`` of ``model_ref``, in one transaction.

        ``ids`` must be exactly the live chunks (what :meth:`live_chunk_ids` returned);
        the corpus is then recorded as embedded by ``model_ref``.
        """
        with self.transaction() as conn:
            live = {int(r[0]) for r in conn.execute("SELECT id FROM chunks WHERE live = 1")}
            if live != {int(i) for i in ids}:
                raise ConfigurationError(
                    "the tenant's documents changed while it was being re-embedded: run it again"
                )
            conn.execute("DELETE FROM embeddings")
            conn.executemany(
                "INSERT INTO embeddings VALUES (?, ?)",
                (
                    (int(i), v.astype(np.float32).tobytes())
                    for i, v in zip(ids, vectors, strict=True)
                ),
            )
            conn.execute(
                "INSERT INTO meta VALUES ('embedding_model', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (model_ref,),
            )
            self._bump(conn)

    # --- reading -----------------------------------------------------------------------------

    def live_chunk_ids(
        self, groups: frozenset[str] | None = None, filters: DocumentFilter | None = None
    ) -> npt.NDArray[np.int64]:
        """Ids of live chunks, only of documents a caller with ``groups`` may see (and that
        match ``filters``)."""
        where, params = _scope_clause("c.document_id", groups, filters)
        rows = self._query(f"SELECT c.id FROM chunks c WHERE c.live = 1 AND {where}", params)
        return np.array([r[0] for r in rows], dtype=np.int64)

    def embeddings(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """The stored embeddings of ``ids``, in that order (for rebuilding the index)."""
        marks = ",".join("?" * len(ids))
        rows = dict(
            self._query(
                f"SELECT chunk_id, vector FROM embeddings WHERE chunk_id IN ({marks})",
                [int(i) for i in ids],
            )
        )
        return np.stack([np.frombuffer(rows[int(i)], dtype=np.float32) for i in ids])

    def bm25(
        self,
        query: str,
        k: int,
        groups: frozenset[str] | None,
        filters: DocumentFilter | None = None,
    ) -> list[tuple[int, float]]:
        """Top-k live chunks by BM25, ACL- (and filter-) limited inside the query, before the
        limit."""
        match = fts_query(query)
        if match is None:
            return []
        where, params = _scope_clause("chunks_fts.document_id", groups, filters)
        rows = self._query(bm25_sql(where), [match, *params, k])
        return [(int(r[0]), float(r[1])) for r in rows]

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRecord]:
        ids = [int(i) for i in ids]  # numpy integers would be bound as blobs
        marks = ",".join("?" * len(ids))
        rows = self._query(
            'SELECT c.id, c.document_id, d.source, v.number, c.ordinal, c.start, c."end", '
            'c.location, c.page, c.cells, substr(v.text, c.start + 1, c."end" - c.start) '
            "FROM chunks c JOIN documents d ON d.id = c.document_id "
            f"JOIN versions v ON v.id = c.version_id WHERE c.id IN ({marks})",
            list(ids),
        )
        return {int(r[0]): ChunkRecord(*r) for r in rows}

    def documents(self, groups: frozenset[str] | None = None) -> list[DocumentInfo]:
        where, params = _acl_clause("d.id", groups)
        return self._document_infos(f"d.deleted_at IS NULL AND {where}", params)

    def document(self, doc_id: int, groups: frozenset[str] | None = None) -> DocumentInfo:
        """One live document the caller may see; otherwise NotFound (never 'forbidden')."""
        where, params = _acl_clause("d.id", groups)
        found = self._document_infos(
            f"d.deleted_at IS NULL AND d.id = ? AND {where}", [doc_id, *params]
        )
        if not found:
            raise NotFound(f"no document {doc_id} in this tenant")
        return found[0]

    def document_chunk_ids(self, doc_id: int) -> npt.NDArray[np.int64]:
        """Ids of a document's live chunks, in reading order."""
        rows = self._query(
            "SELECT id FROM chunks WHERE document_id = ? AND live = 1 ORDER BY ordinal", (doc_id,)
        )
        return np.array([r[0] for r in rows], dtype=np.int64)

    def document_text(self, doc_id: int, groups: frozenset[str] | None = None) -> str:
        info = self.document(doc_id, groups)
        rows = self._query(
            "SELECT v.text FROM versions v WHERE v.document_id = ? AND v.number = ?",
            (info.id, info.version),
        )
        return str(rows[0][0])

    def _document_infos(self, where: str, params: Sequence[Any]) -> list[DocumentInfo]:
        rows = self._query(
            "SELECT d.id, d.source, v.number, v.sha256, v.media_type, v.size, v.status, "
            "(SELECT group_concat(grp, char(31)) FROM document_groups g "
            "WHERE g.document_id = d.id), "
            "(SELECT COUNT(*) FROM chunks c WHERE c.version_id = v.id), v.warnings, v.metadata, "
            "d.created_at, d.updated_at FROM documents d "
            "JOIN versions v ON v.id = d.current_version "
            f"WHERE {where} ORDER BY d.id",
            params,
        )
        return [
            DocumentInfo(
                int(r[0]),
                r[1],
                int(r[2]),
                r[3],
                r[4],
                int(r[5]),
                r[6],
                tuple(r[7].split("\x1f")) if r[7] else (),
                int(r[8]),
                tuple(json.loads(r[9])),
                json.loads(r[10]),
                r[11],
                r[12],
            )
            for r in rows
        ]

    def has_acls(self) -> bool:
        return bool(self._query("SELECT EXISTS (SELECT 1 FROM document_groups)")[0][0])


def _scope_clause(
    doc_column: str, groups: frozenset[str] | None, filters: DocumentFilter | None
) -> tuple[str, list[Any]]:
    """The ACL clause, and the filter's as a subquery: a filter matching 100k documents
    binds a handful of values, not 100k ids."""
    where, params = _acl_clause(doc_column, groups)
    if filters is None or filters.empty:
        return where, list(params)
    condition, values = filters.sql()
    return (
        f"{where} AND {doc_column} IN (SELECT d.id FROM documents d JOIN versions v "
        f"ON v.id = d.current_version WHERE d.deleted_at IS NULL AND {condition})",
        [*params, *values],
    )


def _acl_clause(doc_column: str, groups: frozenset[str] | None) -> tuple[str, list[str]]:
    """SQL that keeps documents visible to a caller: no ACL, or one of the caller's groups.

    ``groups`` None means unrestricted (an admin, or the CLI run by the operator).
    """
    if groups is None:
        return "1", []
    marks = ",".join("?" * len(groups))
    no_acl = f"NOT EXISTS (SELECT 1 FROM document_groups g WHERE g.document_id = {doc_column})"
    if not groups:
        return no_acl, []
    member = (
        f"EXISTS (SELECT 1 FROM document_groups g WHERE g.document_id = {doc_column} "
        f"AND g.grp IN ({marks}))"
    )
    return f"({no_acl} OR {member})", sorted(groups)
