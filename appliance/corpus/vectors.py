"""A tenant's vector index: FAISS over chunk embeddings, sealed at rest, healed from the store.

The document store keeps every chunk's embedding, so this index is derived data: ``sync``
makes it hold exactly the store's live chunks and ``rebuild`` starts it over. Vectors are
L2-normalised float32, so inner product is cosine similarity.

Kinds. ``flat`` (``IndexIDMap2(IndexFlatIP)``) is exact; a query costs a scan of every
vector (~12 ms per 100k of dim 384 on 2 cores). ``hnsw`` (``IndexHNSWFlat``, inner product,
in an ``IndexIDMap2``) answers in about a millisecond but is approximate, and building it is
slow: 17-90 s per 100k vectors on 2 cores. ``auto`` is flat up to ``hnsw_threshold`` live
vectors and switches to HNSW when an add crosses it. FAISS cannot remove from HNSW, so
removed ids become tombstones, excluded inside every search and dropped by ``compact``.

Filtering. ``allowed`` (the chunks a caller may see) is an ID selector inside the FAISS
search, so the top k come from the allowed set, never from a global top k filtered later.
On HNSW a small allowed set (or a graph that is mostly tombstones) makes graph search slow
and lossy, so below ``_EXACT_FRACTION`` of the index the candidates are scanned exactly.

Concurrency. Searches run together (FAISS releases the GIL); a mutation takes a short
exclusive lock. Slow rebuilds (the switch to HNSW, ``compact``, ``rebuild``) are built
beside the live index, which keeps serving searches, and swapped in at the end.

File. ``MAGIC || save id (16 random bytes)``, then records ``u32 length, u8 last || sealed``:
segment 0 holds JSON metadata, the rest the serialised index then the tombstones, cut in
16 MiB pieces (AES-GCM takes < 2 GiB per call). Each segment's aad is ``b"vectors:" + file
name + b":" + save id + sequence number + last flag``, so segments cannot be reordered,
dropped or mixed between saves. A save writes a temporary file in the same folder, fsyncs
it, renames it over the old one and fsyncs the folder: a crash leaves the old file whole.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from appliance.corpus.sealed_file import damaged, read_sealed, remove_stale_temps, write_sealed
from appliance.crypto import KEY_BYTES
from appliance.errors import ConfigurationError, InvalidInput

IndexKind = Literal["auto", "flat", "hnsw"]
Ids = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]

FETCH_BATCH = 4096
"""Most ids passed to one ``fetch`` call in ``sync`` and ``rebuild``."""
# bench/faiss_index.py, HNSW 100k: below a tenth, graph search loses recall (<= 0.94) while an
# exact scan of the candidates costs <= 2 ms; above, the scan grows to 9 ms, the graph stays ~1.5.
_EXACT_FRACTION = 0.1
_MAGIC = b"APVECS\x00\x01"
_FORMAT = 1
_BITMAP_MIN_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class VectorHit:
    """A chunk near the query."""

    chunk_id: int
    score: float
    """Inner product with the query: cosine similarity for unit vectors."""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What ``VectorIndex.sync`` changed."""

    added: int
    removed: int


@dataclass(slots=True)
class _Contents:
    """One FAISS index and its bookkeeping, replaced as a whole by a rebuild."""

    index: faiss.IndexIDMap2
    kind: Literal["flat", "hnsw"]
    hnsw_m: int
    stored: Ids  # sorted ids held by FAISS, tombstones included
    deleted: Ids  # sorted tombstones (HNSW only)
    not_deleted: faiss.IDSelector | None = None

    @property
    def live(self) -> int:
        return len(self.stored) - len(self.deleted)

    def set_deleted(self, deleted: Ids) -> None:
        self.deleted = deleted
        self.not_deleted = faiss.IDSelectorNot(_selector(deleted)) if len(deleted) else None


class _SharedLock:
    """Many readers or one writer; a waiting writer holds back new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class VectorIndex:
    """The vector index of one tenant, stored sealed in one file.

    Build it with :meth:`open`. Thread-safe: searches run concurrently, mutations one at
    a time. Changes reach the file only on :meth:`save`.
    """

    def __init__(
        self, path: Path, key: bytes, dim: int, kind: IndexKind, tuning: tuple[int, int, int]
    ) -> None:
        self._path = path
        self._key = key
        self._dim = dim
        self._kind_setting = kind
        self._threshold, self._hnsw_m, self._ef_search = tuning
        self._contents = self._empty(self._kind_for(0))
        self._mutating = threading.Lock()
        self._shared = _SharedLock()

    @classmethod
    def open(
        cls,
        path: Path,
        key: bytes,
        dim: int,
        *,
        kind: IndexKind = "auto",
        hnsw_threshold: int = 100_000,
        hnsw_m: int = 32,
        ef_search: int = 128,
    ) -> VectorIndex:
        """Load the index sealed at ``path``, or start an empty one if there is no file.

        An explicit ``kind`` that differs from the file's converts the index now (to HNSW:
        17-90 s per 100k vectors); ``auto`` keeps the file's kind until an add crosses the
        threshold or a rebuild. A changed ``hnsw_m`` applies from the next rebuild.

        Args:
            path: The sealed index file, e.g. ``index/<tenant>/vectors.sealed``.
            key: The tenant's 32-byte vectors key.
            dim: Dimension of the embeddings.
            kind: ``flat``, ``hnsw``, or ``auto`` (flat up to ``hnsw_threshold`` vectors).
            hnsw_threshold: Live vectors above which ``auto`` switches to HNSW.
            hnsw_m: Graph degree of a new HNSW index.
            ef_search: HNSW candidate list size at search time (raised to k when smaller).

        Raises:
            ConfigurationError: A bad setting; a file of another dimension, not an index
                file, or written by a newer appliance.
            DecryptionFailed: The key does not open the file, or it was altered or damaged.
        """
        _check_settings(key, dim, kind, hnsw_threshold, hnsw_m, ef_search)
        index = cls(path, key, dim, kind, (hnsw_threshold, hnsw_m, ef_search))
        remove_stale_temps(path)
        if path.exists():
            contents = _read_file(path, key, dim)
            if kind != "auto" and contents.kind != kind:
                contents = index._build(kind, *_live_vectors(contents))
            index._contents = contents
        return index

    @property
    def path(self) -> Path:
        """The sealed index file."""
        return self._path

    @property
    def dim(self) -> int:
        """Dimension of the vectors."""
        return self._dim

    @property
    def kind(self) -> Literal["flat", "hnsw"]:
        """``flat`` or ``hnsw``: the kind of FAISS index in use now."""
        return self._contents.kind

    @property
    def size(self) -> int:
        """Number of live vectors."""
        with self._shared.read():
            return self._contents.live

    @property
    def tombstones(self) -> int:
        """Removed ids still inside an HNSW graph; :meth:`compact` drops them."""
        with self._shared.read():
            return len(self._contents.deleted)

    def ids(self) -> Ids:
        """The live ids, sorted."""
        with self._shared.read():
            c = self._contents
            return np.setdiff1d(c.stored, c.deleted, assume_unique=True)

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add vectors under new ids. Crossing ``hnsw_threshold`` (kind ``auto``) rebuilds
        the index as HNSW, which takes 17-90 s per 100k vectors; searches go on meanwhile.

        Args:
            ids: Distinct positive int64 ids not live in the index.
            vectors: float32 array of shape ``(len(ids), dim)``.

        Raises:
            InvalidInput: Bad ids or vectors; nothing was added.
        """
        with self._mutating:
            self._add(_check_ids(ids, "ids", unique=True), vectors)

    def remove(self, ids: Iterable[int]) -> None:
        """Remove ids; ids that are not live are ignored.

        Raises:
            InvalidInput: Something that is not an integer id; nothing was removed.
        """
        with self._mutating:
            self._remove(_check_ids(_from_iterable(ids), "ids", unique=False))

    def search(
        self, query: npt.ArrayLike, k: int, allowed: npt.ArrayLike | None = None
    ) -> list[VectorHit]:
        """The ``k`` live vectors with the largest inner product with ``query``, best first.

        Args:
            query: float32 vector of shape ``(dim,)`` or ``(1, dim)``.
            k: Number of hits wanted (fewer when fewer vectors qualify).
            allowed: The only ids the caller may see (``None``: every live id). The
                selection happens inside the index search, before the top k.

        Raises:
            InvalidInput: A bad query, k or allowed set.
        """
        q = _check_query(query, self._dim)
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
            raise InvalidInput(f"k must be a positive integer, got {k!r}")
        subset = None if allowed is None else _check_ids(allowed, "allowed ids", unique=False)
        if subset is not None and not len(subset):
            return []
        with self._shared.read():
            scores, labels = _search(self._contents, q, int(k), subset, self._ef_search)
        return [VectorHit(int(i), float(s)) for s, i in zip(scores, labels, strict=True) if i >= 0]

    def save(self) -> None:
        """Seal the index into its file atomically (temporary file, fsync, rename)."""
        with self._mutating:
            remove_stale_temps(self._path)
            _write_file(self._path, self._key, self._dim, self._contents)

    def sync(self, live_ids: npt.ArrayLike, fetch: Callable[[Ids], npt.ArrayLike]) -> SyncReport:
        """Make the index hold exactly ``live_ids`` (after a crash, or another writer).

        Args:
            live_ids: The ids the document store says are live.
            fetch: Returns the stored vectors of the ids it is given, in that order;
                called with at most ``FETCH_BATCH`` ids at a time.

        Raises:
            InvalidInput: Bad ids, or ``fetch`` returned vectors of the wrong shape.
        """
        want = _check_ids(live_ids, "live ids", unique=True)
        with self._mutating:
            have = np.setdiff1d(self._contents.stored, self._contents.deleted, True)
            extra = np.setdiff1d(have, want, assume_unique=True)
            missing = np.setdiff1d(want, have, assume_unique=True)
            if not len(have) and len(missing):
                self._swap(self._build_fetched(missing, fetch))
                return SyncReport(len(missing), 0)
            self._remove(extra)
            for start in range(0, len(missing), FETCH_BATCH):
                batch = missing[start : start + FETCH_BATCH]
                self._add(batch, fetch(batch))
        return SyncReport(len(missing), len(extra))

    def rebuild(self, live_ids: npt.ArrayLike, fetch: Callable[[Ids], npt.ArrayLike]) -> None:
        """Build the index anew from ``live_ids``, its kind chosen by their number.

        The old index serves searches until the new one is complete. Arguments as in
        :meth:`sync`.
        """
        want = _check_ids(live_ids, "live ids", unique=True)
        with self._mutating:
            self._swap(self._build_fetched(want, fetch))

    def compact(self) -> None:
        """Rebuild an HNSW index without its tombstones (17-90 s per 100k vectors).

        With kind ``auto`` the rebuilt index is flat when few enough vectors remain. A flat
        index has no tombstones: nothing to do.
        """
        with self._mutating:
            if self._contents.kind == "hnsw":
                ids, vectors = _live_vectors(self._contents)
                self._swap(self._build(self._kind_for(len(ids)), ids, vectors))

    # --- under self._mutating ----------------------------------------------------------

    def _add(self, ids: Ids, vectors: npt.ArrayLike) -> None:
        vecs = _check_vectors(vectors, len(ids), self._dim)
        c = self._contents
        clash = ids[np.isin(ids, c.stored, assume_unique=True)]
        if len(live := np.setdiff1d(clash, c.deleted, assume_unique=True)):
            raise InvalidInput(f"ids already in the vector index: {_some(live)}")
        if not len(ids):
            return
        if len(clash) or (c.kind == "flat" and self._kind_for(c.live + len(ids)) == "hnsw"):
            # A tombstoned id cannot be re-added next to its old vector: rebuild without it.
            old_ids, old_vecs = _live_vectors(c)
            all_ids = np.concatenate([old_ids, ids])
            new = self._build(self._kind_for(len(all_ids)), all_ids, np.vstack([old_vecs, vecs]))
            self._swap(new)
            return
        with self._shared.write():
            c.index.add_with_ids(vecs, ids)
            c.stored = np.union1d(c.stored, ids)

    def _remove(self, ids: Ids) -> None:
        c = self._contents
        ids = np.setdiff1d(np.intersect1d(ids, c.stored), c.deleted, assume_unique=True)
        if not len(ids):
            return
        with self._shared.write():
            if c.kind == "flat":
                c.index.remove_ids(faiss.IDSelectorBatch(ids))
                c.stored = np.setdiff1d(c.stored, ids, assume_unique=True)
            else:
                c.set_deleted(np.union1d(c.deleted, ids))

    def _swap(self, contents: _Contents) -> None:
        with self._shared.write():
            self._contents = contents

    def _kind_for(self, count: int) -> Literal["flat", "hnsw"]:
        if self._kind_setting != "auto":
            return self._kind_setting
        return "hnsw" if count > self._threshold else "flat"

    def _empty(self, kind: Literal["flat", "hnsw"]) -> _Contents:
        if kind == "flat":
            inner: faiss.Index = faiss.IndexFlatIP(self._dim)
        else:
            inner = faiss.IndexHNSWFlat(self._dim, self._hnsw_m, faiss.METRIC_INNER_PRODUCT)
        empty = np.empty(0, dtype=np.int64)
        return _Contents(faiss.IndexIDMap2(inner), kind, self._hnsw_m, empty, empty)

    def _build(self, kind: Literal["flat", "hnsw"], ids: Ids, vectors: Vectors) -> _Contents:
        contents = self._empty(kind)
        contents.index.add_with_ids(vectors, ids)
        contents.stored = np.sort(ids)
        return contents

    def _build_fetched(self, ids: Ids, fetch: Callable[[Ids], npt.ArrayLike]) -> _Contents:
        contents = self._empty(self._kind_for(len(ids)))
        for start in range(0, len(ids), FETCH_BATCH):
            batch = ids[start : start + FETCH_BATCH]
            contents.index.add_with_ids(_check_vectors(fetch(batch), len(batch), self._dim), batch)
        contents.stored = np.sort(ids)
        return contents


# --- searching ---------------------------------------------------------------------------


def _search(
    c: _Contents, q: Vectors, k: int, allowed: Ids | None, ef_search: int
) -> tuple[npt.NDArray[np.float32], Ids]:
    k = min(k, c.index.ntotal)
    if not k:
        return np.empty(0, np.float32), np.empty(0, np.int64)
    if c.kind == "flat":
        # Each selector is held by a local: FAISS keeps only a raw pointer to it.
        flat_sel = None if allowed is None else _selector(allowed)
        params = faiss.SearchParameters()
        params.sel = flat_sel
        scores, labels = c.index.search(q, k, params=params)
        return scores[0], labels[0]
    sel = c.not_deleted
    if allowed is not None:
        sel = _selector(allowed) if sel is None else faiss.IDSelectorAnd(_selector(allowed), sel)
    candidates = c.live if allowed is None else min(len(allowed), c.live)
    if sel is not None and candidates < _EXACT_FRACTION * c.index.ntotal:
        return _scan_hnsw_storage(c, q, k, sel)
    hnsw_params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
    hnsw_params.efSearch = max(ef_search, k)
    if sel is not None:
        hnsw_params.sel = sel
    scores, labels = c.index.search(q, k, params=hnsw_params)
    return scores[0], labels[0]


def _scan_hnsw_storage(
    c: _Contents, q: Vectors, k: int, sel: faiss.IDSelector
) -> tuple[npt.NDArray[np.float32], Ids]:
    """Exact search of the selected vectors in the HNSW's flat storage, skipping the graph."""
    hnsw = faiss.downcast_index(c.index.index)
    assert isinstance(hnsw, faiss.IndexHNSW)
    # Storage positions are translated to ids before the selector sees them.
    translated = faiss.IDSelectorTranslated(c.index, sel)  # type: ignore[arg-type]
    params = faiss.SearchParameters()
    params.sel = translated
    scores, positions = faiss.downcast_index(hnsw.storage).search(q, k, params=params)
    return scores[0], np.where(positions[0] >= 0, _id_map(c.index)[positions[0]], -1)


def _selector(ids: Ids) -> faiss.IDSelector:
    """A membership test for ``ids``: a bitmap where it stays small, else a hash set."""
    top = int(ids.max())
    if top // 8 > max(_BITMAP_MIN_BYTES, 64 * len(ids)):
        return faiss.IDSelectorBatch(ids)
    if top < 32 * len(ids):  # dense: packing a mask is cheaper than setting bits one by one
        mask = np.zeros(top + 1, dtype=bool)
        mask[ids] = True
        bitmap = np.packbits(mask, bitorder="little")
    else:
        bitmap = np.zeros(top // 8 + 1, dtype=np.uint8)
        np.bitwise_or.at(bitmap, ids >> 3, np.left_shift(1, ids & 7).astype(np.uint8))
    # The one-argument form keeps the bitmap alive with the selector; the stubs lack it.
    return faiss.IDSelectorBitmap(bitmap)  # type: ignore[call-arg, arg-type]


def _id_map(index: faiss.IndexIDMap2) -> Ids:
    """The id of each stored vector by position: a view, valid until the index changes."""
    if not index.ntotal:
        return np.empty(0, dtype=np.int64)
    return faiss.rev_swig_ptr(index.id_map.data(), index.ntotal)


def _live_vectors(c: _Contents) -> tuple[Ids, Vectors]:
    ids = _id_map(c.index).copy()
    vectors = faiss.downcast_index(c.index.index).reconstruct_n(0, c.index.ntotal)
    keep = ~np.isin(ids, c.deleted)
    return ids[keep], vectors[keep]


# --- checks ------------------------------------------------------------------------------


def _check_settings(
    key: bytes, dim: int, kind: str, threshold: int, hnsw_m: int, ef_search: int
) -> None:
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"the vectors key must be {KEY_BYTES} bytes, got {len(key)}")
    if kind not in ("auto", "flat", "hnsw"):
        raise ConfigurationError(f"index kind must be auto, flat or hnsw, got {kind!r}")
    for name, value, least in (
        ("dim", dim, 1),
        ("hnsw_threshold", threshold, 1),
        ("hnsw_m", hnsw_m, 2),
        ("ef_search", ef_search, 1),
    ):
        if not isinstance(value, int) or value < least:
            raise ConfigurationError(f"vector index {name} must be an integer >= {least}")


def _from_iterable(ids: Iterable[int]) -> npt.NDArray[Any]:
    if isinstance(ids, np.ndarray):
        return ids
    try:
        return np.array(list(ids))
    except (TypeError, ValueError):
        raise InvalidInput("ids must be integers") from None


def _check_ids(ids: npt.ArrayLike, what: str, *, unique: bool) -> Ids:
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInput(f"{what} must be a 1-D array of integers, got {arr.dtype} {arr.shape}")
    if arr.min() < 1:
        raise InvalidInput(f"{what} must be positive, got {int(arr.min())}")
    arr = arr.astype(np.int64, copy=False)
    if unique:
        values, counts = np.unique(arr, return_counts=True)
        if len(values) != len(arr):
            raise InvalidInput(f"{what} repeat: {_some(values[counts > 1])}")
    return arr


def _check_vectors(vectors: npt.ArrayLike, n: int, dim: int) -> Vectors:
    arr = np.asarray(vectors)
    if arr.shape != (n, dim) or not np.issubdtype(arr.dtype, np.floating):
        raise InvalidInput(
            f"vectors must be floats of shape ({n}, {dim}), got {arr.dtype} {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise InvalidInput("vectors hold NaN or infinite values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_query(query: npt.ArrayLike, dim: int) -> Vectors:
    arr = np.asarray(query)
    if arr.shape not in ((dim,), (1, dim)):
        raise InvalidInput(f"query must have shape ({dim},) or (1, {dim}), got {arr.shape}")
    return _check_vectors(arr.reshape(1, dim), 1, dim)


def _some(ids: Ids) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


# --- the sealed file -----------------------------------------------------------------------


_WHAT = "vector index"


def _write_file(path: Path, key: bytes, dim: int, c: _Contents) -> None:
    data = faiss.serialize_index(c.index)
    header = {"format": _FORMAT, "dim": dim, "kind": c.kind, "hnsw_m": c.hnsw_m}
    header |= {"index_bytes": len(data), "deleted": len(c.deleted)}
    write_sealed(path, key, _MAGIC, header, [data, c.deleted.astype("<i8").view(np.uint8)])


def _read_file(path: Path, key: bytes, dim: int) -> _Contents:
    meta, buffer = read_sealed(path, key, _MAGIC, _WHAT)
    _check_meta(meta, path, dim)
    if len(buffer) != meta["index_bytes"] + 8 * meta["deleted"]:
        raise damaged(path, _WHAT)
    index = faiss.deserialize_index(buffer[: meta["index_bytes"]])
    if not isinstance(index, faiss.IndexIDMap2) or index.d != dim:
        raise damaged(path, _WHAT)
    deleted = buffer[meta["index_bytes"] :].view("<i8").astype(np.int64)
    contents = _Contents(index, meta["kind"], meta["hnsw_m"], np.sort(_id_map(index)), deleted)
    contents.set_deleted(deleted)
    return contents


def _check_meta(meta: dict[str, Any], path: Path, dim: int) -> None:
    if meta.get("format") != _FORMAT:
        raise ConfigurationError(
            f"vector index {path} has format {meta.get('format')}, written by a newer "
            "appliance: upgrade, or move the file away to rebuild it from the document store"
        )
    if meta["dim"] != dim:
        raise ConfigurationError(
            f"vector index {path} holds {meta['dim']}-dimensional vectors, but the embedder "
            f"makes {dim}: move the file away to rebuild it from the document store"
        )
