"""One tenant's corpus: its document store, its vector index and the embedder they share.

The store is the source of truth. The vector index is derived from it and kept in step:
after each stored document version in this process, and, when another process (say a CLI
ingest beside the server) changed the store, by a sync on the next read. A process killed
between the two is healed the same way when the corpus is next opened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from appliance.config import Settings
from appliance.corpus.filters import DocumentFilter
from appliance.corpus.store import CorpusStore, StoredVersion
from appliance.corpus.vectors import VectorHit, VectorIndex
from appliance.crypto import fsync_dir
from appliance.errors import ConfigurationError
from appliance.inference.embedder import Embedder
from appliance.keyring import TenantKeys

_SAVE_EVERY_S = 30.0
# HNSW cannot delete: removed ids stay in the graph, filtered at search time, until a
# compaction rebuilds it (a full build: tens of seconds at 100k vectors).
_COMPACT_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class IndexSettings:
    kind: Literal["auto", "flat", "hnsw"] = "auto"
    hnsw_threshold: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexSettings:
        return cls(settings.index_kind, settings.hnsw_threshold)


@dataclass
class TenantCorpus:
    name: str
    folder: Path
    store: CorpusStore
    vectors: VectorIndex
    embedder: Embedder
    embedder_ref: str
    _synced: int = -1
    _saved_at: float = field(default_factory=time.monotonic)
    _dirty: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _allowed: dict[tuple[frozenset[str], int], npt.NDArray[np.int64]] = field(
        default_factory=dict, repr=False
    )

    @classmethod
    def open(
        cls,
        name: str,
        folder: Path,
        keys: TenantKeys,
        embedder: Embedder,
        embedder_ref: str,
        index: IndexSettings = IndexSettings(),
    ) -> TenantCorpus:
        store = CorpusStore(folder / "corpus.db", keys.db_key)
        _check_embedder(store, name, embedder_ref)
        vectors = VectorIndex.open(
            folder / "vectors.sealed",
            keys.vectors_key,
            embedder.dim,
            kind=index.kind,
            hnsw_threshold=index.hnsw_threshold,
        )
        corpus = cls(name, folder, store, vectors, embedder, embedder_ref)
        corpus.refresh()
        return corpus

    def refresh(self) -> None:
        """Bring the vector index in step with the store if the store moved on."""
        with self._lock:
            version = self.store.corpus_version
            if version == self._synced:
                return
            report = self.vectors.sync(self.store.live_chunk_ids(), self.store.embeddings)
            self._synced = version
            self._allowed.clear()
            if report.added or report.removed:
                self.vectors.save()

    def record_embedder(self) -> None:
        """Remember which model embedded this corpus (set on the first ingest)."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('embedding_model', ?)", (self.embedder_ref,)
            )

    def apply(self, stored: StoredVersion, vectors: npt.NDArray[np.float32]) -> None:
        """Mirror a stored version in the vector index (the store already committed it)."""
        with self._lock:
            if stored.retired_chunk_ids:
                self.vectors.remove(stored.retired_chunk_ids)
            if stored.new_chunk_ids:
                self.vectors.add(np.array(stored.new_chunk_ids, dtype=np.int64), vectors)
            self._synced = self.store.corpus_version
            self._allowed.clear()
            self._dirty = True
            if time.monotonic() - self._saved_at > _SAVE_EVERY_S:
                self.save()

    def delete_document(self, doc_id: int) -> None:
        with self._lock:
            retired = self.store.delete_document(doc_id)
            self.vectors.remove(retired)
            self._synced = self.store.corpus_version
            self._allowed.clear()
            self.save()

    def save(self) -> None:
        with self._lock:
            if self.vectors.tombstones > _COMPACT_SHARE * max(self.vectors.size, 1):
                self.vectors.compact()
            self.vectors.save()
            self._dirty = False
            self._saved_at = time.monotonic()

    def vector_search(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        groups: frozenset[str] | None,
        filters: DocumentFilter | None = None,
    ) -> list[VectorHit]:
        """Nearest live chunks the caller may see: the ACL (and ``filters``) select inside
        the index search."""
        self.refresh()
        if filters is not None and not filters.empty:  # per request: not worth caching
            return self.vectors.search(query, k, allowed=self.store.live_chunk_ids(groups, filters))
        return self.vectors.search(query, k, allowed=self._allowed_ids(groups))

    def _allowed_ids(self, groups: frozenset[str] | None) -> npt.NDArray[np.int64] | None:
        if groups is None or not self.store.has_acls():
            return None
        key = (groups, self._synced)
        with self._lock:
            if key not in self._allowed:
                if len(self._allowed) > 64:
                    self._allowed.clear()
                self._allowed[key] = self.store.live_chunk_ids(groups)
            return self._allowed[key]

    def close(self) -> None:
        with self._lock:
            if self._dirty:
                self.save()
            self.store.close()


def reembed(
    name: str,
    folder: Path,
    keys: TenantKeys,
    embedder: Embedder,
    embedder_ref: str,
    *,
    batch: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Re-embed every live chunk of a tenant with ``embedder`` (after a new model's activation).

    The corpus must not be open elsewhere. The new vectors are computed first, in memory;
    then the sealed vector index is removed (it is derived data) and the store swaps its
    embeddings and records ``embedder_ref`` in one transaction; the index is rebuilt from the
    store when the corpus next opens. Interrupted at any point, the tenant is either still on
    the old model (reindex again, or roll the model back) or on the new one with its index
    rebuilt on open. Returns the number of chunks embedded.
    """
    store = CorpusStore(folder / "corpus.db", keys.db_key)
    try:
        ids = store.live_chunk_ids()
        vectors = np.empty((len(ids), embedder.dim), dtype=np.float32)
        for start in range(0, len(ids), batch):
            part = ids[start : start + batch]
            records = store.chunks(part.tolist())
            vectors[start : start + len(part)] = embedder.embed(
                [records[int(i)].text for i in part]
            )
            if progress is not None:
                progress(start + len(part), len(ids))
        index_file = folder / "vectors.sealed"
        index_file.unlink(missing_ok=True)
        fsync_dir(folder)
        store.replace_embeddings(ids, vectors, embedder_ref)
    finally:
        store.close()
    return len(ids)


def _check_embedder(store: CorpusStore, tenant: str, embedder_ref: str) -> None:
    recorded = store.meta("embedding_model")
    if recorded is not None and recorded != embedder_ref:
        store.close()
        raise ConfigurationError(
            f"tenant {tenant!r} was indexed with embedding model {recorded}, but the active one "
            f"is {embedder_ref}: activate {recorded} again (`appliance models activate`), or "
            f"re-embed the tenant with `appliance reindex --tenant {tenant}`"
        )
