"""The per-tenant vector index: real FAISS, sealed files in tmp_path, brute force as the oracle."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from appliance.corpus import sealed_file
from appliance.corpus.vectors import FETCH_BATCH, VectorIndex
from appliance.errors import ConfigurationError, DecryptionFailed, InvalidInput

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
DIM = 64
K = 10

Ids = npt.NDArray[np.int64]
Vecs = npt.NDArray[np.float32]


def unit(n: int, dim: int = DIM, seed: int = 0) -> Vecs:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def brute(ids: Ids, vecs: Vecs, q: Vecs, k: int) -> tuple[list[int], Vecs]:
    scores = vecs @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(i) for i in ids[order]], scores[order]


def hit_ids(index: VectorIndex, q: Vecs, k: int = K, allowed: Ids | None = None) -> list[int]:
    return [h.chunk_id for h in index.search(q, k, allowed=allowed)]


def filled(path: Path, n: int, **kwargs: object) -> tuple[VectorIndex, Ids, Vecs]:
    index = VectorIndex.open(path, KEY, DIM, **kwargs)  # type: ignore[arg-type]
    ids = np.arange(1, n + 1, dtype=np.int64) * 7  # ids are not positions
    vecs = unit(n)
    index.add(ids, vecs)
    return index, ids, vecs


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "acme" / "vectors.sealed"


# --- search ------------------------------------------------------------------------------


def test_flat_top_k_is_exact(path: Path) -> None:
    index, ids, vecs = filled(path, 2000)
    assert (index.kind, index.size, index.dim) == ("flat", 2000, DIM)
    for q in unit(20, seed=1):
        want, scores = brute(ids, vecs, q, K)
        hits = index.search(q, K)
        assert [h.chunk_id for h in hits] == want
        np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-5, atol=1e-6)
        assert hit_ids(index, q.reshape(1, DIM)) == want  # (1, dim) is accepted too


def test_k_beyond_size_and_empty_index(path: Path) -> None:
    index = VectorIndex.open(path, KEY, DIM)
    assert index.search(unit(1)[0], K) == []
    index.add(np.array([3, 5], dtype=np.int64), unit(2))
    assert sorted(hit_ids(index, unit(1, seed=2)[0], k=1_000_000)) == [3, 5]


@pytest.mark.parametrize(("kind", "fraction"), [("flat", 0.5), ("hnsw", 0.5), ("hnsw", 0.05)])
def test_allowed_gives_the_top_k_of_the_allowed_set(path: Path, kind: str, fraction: float) -> None:
    # fraction 0.5 on HNSW searches the graph with a selector; 0.05 scans the allowed exactly.
    index, ids, vecs = filled(path, 1000, kind=kind)
    q = unit(1, seed=3)[0]
    global_top, _ = brute(ids, vecs, q, K)
    rng = np.random.default_rng(4)
    pool = np.setdiff1d(ids, global_top)  # every global top-k id is disallowed
    allowed = rng.choice(pool, int(len(ids) * fraction), replace=False)
    mask = np.isin(ids, allowed)
    want, _ = brute(ids[mask], vecs[mask], q, K)
    got = hit_ids(index, q, allowed=allowed)
    assert len(got) == K and set(got) <= set(allowed.tolist())
    if kind == "flat" or fraction < 0.2:
        assert got == want
    else:
        assert len(set(got) & set(want)) >= K - 1


def test_allowed_empty_or_unknown(path: Path) -> None:
    index, ids, _ = filled(path, 50)
    q = unit(1, seed=5)[0]
    assert index.search(q, K, allowed=np.array([], dtype=np.int64)) == []
    assert hit_ids(index, q, allowed=np.array([999_999, int(ids[3])])) == [int(ids[3])]


@pytest.mark.parametrize("spacing", [1, 100, 10**8])  # dense mask, sparse bitmap, hash set
def test_allowed_with_ids_near_and_far_apart(path: Path, spacing: int) -> None:
    index = VectorIndex.open(path, KEY, DIM)
    ids = np.arange(1, 301, dtype=np.int64) * spacing
    vecs = unit(300, seed=6)
    index.add(ids, vecs)
    allowed = ids[1::3]
    for q in unit(5, seed=7):
        want, _ = brute(allowed, vecs[1::3], q, K)
        assert hit_ids(index, q, allowed=allowed) == want


# --- remove, tombstones, compact ---------------------------------------------------------


def test_remove_on_flat(path: Path) -> None:
    index, ids, vecs = filled(path, 300)
    gone = ids[:100]
    index.remove(int(i) for i in gone)
    index.remove([int(gone[0]), 123_456_789])  # already gone, never there: ignored
    assert index.size == 200 and index.tombstones == 0
    np.testing.assert_array_equal(index.ids(), ids[100:])
    for q in vecs[:100]:  # each removed vector's own query
        assert hit_ids(index, q) == brute(ids[100:], vecs[100:], q, K)[0]
    index.add(gone[:1], vecs[:1])  # a removed id can come back
    assert hit_ids(index, vecs[0], k=1) == [int(gone[0])]


def test_remove_on_hnsw_excludes_tombstones_until_compact(path: Path) -> None:
    index, ids, vecs = filled(path, 400, hnsw_threshold=200)
    assert index.kind == "hnsw"
    gone = ids[::4]
    index.remove(gone.tolist())
    assert (index.size, index.tombstones) == (300, 100)
    live = np.setdiff1d(ids, gone)
    np.testing.assert_array_equal(index.ids(), live)
    everything = np.concatenate([ids, gone])
    for q in vecs[::4]:  # the removed vectors' own queries: their best match is gone
        for allowed in (None, everything, gone[:30], np.concatenate([gone, live[:20]])):
            assert not set(hit_ids(index, q, allowed=allowed)) & set(gone.tolist())
    index.compact()
    assert (index.kind, index.size, index.tombstones) == ("hnsw", 300, 0)
    keep = ~np.isin(ids, gone)
    for q in vecs[keep][:20]:
        assert hit_ids(index, q, k=1) == brute(ids[keep], vecs[keep], q, 1)[0]


def test_hnsw_mostly_tombstones_is_searched_exactly(path: Path) -> None:
    index, ids, vecs = filled(path, 500, kind="hnsw")
    index.remove(ids[:460].tolist())  # 40 live of 500 in the graph: scanned exactly
    for q in unit(10, seed=8):
        assert hit_ids(index, q) == brute(ids[460:], vecs[460:], q, K)[0]


def test_re_adding_a_tombstoned_id_on_hnsw(path: Path) -> None:
    index, ids, _ = filled(path, 300, kind="hnsw")
    index.remove([int(ids[0])])
    fresh = unit(1, seed=9)
    index.add(ids[:1], fresh)
    assert (index.size, index.tombstones) == (300, 0)
    hits = index.search(fresh[0], 2)
    assert hits[0].chunk_id == int(ids[0]) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].chunk_id != int(ids[0])  # the old vector is not there under the same id


def test_compact_on_auto_falls_back_to_flat_when_small(path: Path) -> None:
    index, ids, _ = filled(path, 300, hnsw_threshold=200)
    index.remove(ids[:150].tolist())
    index.compact()
    assert (index.kind, index.size, index.tombstones) == ("flat", 150, 0)
    flat = VectorIndex.open(path.with_name("flat.sealed"), KEY, DIM, kind="flat")
    flat.compact()  # nothing to do
    assert flat.kind == "flat"


def test_flat_to_hnsw_switch_keeps_results(path: Path) -> None:
    index, ids, vecs = filled(path, 150, hnsw_threshold=200)
    queries = unit(20, seed=11)
    before = [hit_ids(index, q) for q in queries]
    more_ids = np.arange(10_001, 10_101, dtype=np.int64)
    index.add(more_ids, unit(100, seed=12))
    assert (index.kind, index.size) == ("hnsw", 250)
    all_ids, all_vecs = np.concatenate([ids, more_ids]), np.vstack([vecs, unit(100, seed=12)])
    recall = []
    for q, old in zip(queries, before, strict=True):
        want, _ = brute(all_ids, all_vecs, q, K)
        got = hit_ids(index, q)
        recall.append(len(set(got) & set(want)) / K)
        kept = [i for i in old if i in want]  # old hits not outranked by a new vector
        assert [i for i in got if i in kept] == kept
    assert np.mean(recall) >= 0.95
    for i, v in zip(all_ids, all_vecs, strict=True):
        assert hit_ids(index, v, k=1) == [int(i)]


# --- the sealed file -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_save_and_open_round_trip(path: Path, kind: str) -> None:
    index, ids, _ = filled(path, 400, kind=kind)
    index.remove(ids[:10].tolist())
    index.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = VectorIndex.open(path, KEY, DIM, kind="auto")
    assert (again.kind, again.size, again.tombstones) == (kind, 390, index.tombstones)
    np.testing.assert_array_equal(again.ids(), index.ids())
    for q in unit(10, seed=13):
        assert again.search(q, K) == index.search(q, K)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_open_with_another_explicit_kind_converts(path: Path) -> None:
    index, ids, vecs = filled(path, 300, kind="hnsw")
    index.remove(ids[:5].tolist())
    index.save()
    flat = VectorIndex.open(path, KEY, DIM, kind="flat")
    assert (flat.kind, flat.size, flat.tombstones) == ("flat", 295, 0)
    assert hit_ids(flat, vecs[7], k=1) == [int(ids[7])]


def test_file_holds_no_vector_bytes(path: Path) -> None:
    index, _, vecs = filled(path, 200)
    index.save()
    data = path.read_bytes()
    assert len(data) > vecs.nbytes  # the vectors are in there, sealed
    for v in vecs:
        assert v.tobytes()[:16] not in data


def test_wrong_key_or_altered_file_is_a_clear_error(path: Path) -> None:
    index, _, _ = filled(path, 200)
    index.save()
    good = path.read_bytes()
    with pytest.raises(DecryptionFailed, match="does not open with this tenant's key") as err:
        VectorIndex.open(path, OTHER_KEY, DIM)
    assert str(path) in str(err.value)
    middle = bytearray(good)
    middle[len(good) // 2] ^= 0x01
    for damaged in (bytes(middle), good[:-1], good[: len(good) // 2], good + b"\0"):
        path.write_bytes(damaged)
        with pytest.raises(DecryptionFailed, match="altered or damaged"):
            VectorIndex.open(path, KEY, DIM)
    path.write_bytes(b"junk" + good[4:])
    with pytest.raises(ConfigurationError, match="is not a sealed vector index"):
        VectorIndex.open(path, KEY, DIM)
    path.write_bytes(good)
    assert path.read_bytes() == good and VectorIndex.open(path, KEY, DIM).size == 200


def test_a_file_under_another_name_does_not_open(path: Path) -> None:
    index, _, _ = filled(path, 20)
    index.save()
    copy = path.with_name("other.sealed")
    copy.write_bytes(path.read_bytes())
    with pytest.raises(DecryptionFailed, match=r"other\.sealed"):
        VectorIndex.open(copy, KEY, DIM)


def records(data: bytes) -> tuple[bytes, list[bytes]]:
    """Split a sealed index file into its header and its records (length, flag, blob)."""
    head, rest, out = data[:24], data[24:], []
    while rest:
        size = 5 + struct.unpack("<I", rest[:4])[0]
        out.append(rest[:size])
        rest = rest[size:]
    return head, out


def test_segments_cannot_be_reordered_dropped_or_mixed(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealed_file, "_SEGMENT_BYTES", 4096)  # many segments from a small index
    index, ids, vecs = filled(path, 100, kind="hnsw")
    index.remove(ids[:3].tolist())
    index.save()
    head, recs = records(path.read_bytes())
    assert len(recs) > 8
    again = VectorIndex.open(path, KEY, DIM)
    assert again.size == 97 and hit_ids(again, vecs[50], k=1) == [int(ids[50])]
    index.save()  # the same content under a new save id
    other_head, other = records(path.read_bytes())
    for damaged in (
        head + b"".join([recs[0], recs[2], recs[1], *recs[3:]]),  # reordered
        head + b"".join(recs[:3] + recs[4:]),  # one dropped
        head + b"".join(recs[:-1]),  # the last dropped
        head + b"".join([*recs[:3], other[3], *recs[4:]]),  # one from another save
        other_head + b"".join(recs),  # another save's header
    ):
        path.write_bytes(damaged)
        with pytest.raises(DecryptionFailed, match="altered or damaged"):
            VectorIndex.open(path, KEY, DIM)


def test_wrong_dimension_is_a_configuration_error(path: Path) -> None:
    index, _, _ = filled(path, 20)
    index.save()
    with pytest.raises(ConfigurationError, match="holds 64-dimensional vectors, but the embedder"):
        VectorIndex.open(path, KEY, 384)


_KILLED_SAVE = """
import os, sys
import numpy as np
from pathlib import Path
from appliance.corpus.vectors import VectorIndex
index = VectorIndex.open(Path(sys.argv[1]), bytes(range(32)), 64)
index.add(np.array([999_999], dtype=np.int64), np.ones((1, 64), dtype=np.float32) / 8)
os.replace = lambda *args: os._exit(9)  # the process dies before the rename
index.save()
"""


def test_a_save_killed_before_the_rename_leaves_the_old_file(path: Path) -> None:
    index, _, _ = filled(path, 100)
    index.save()
    old = path.read_bytes()
    done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)], check=False)
    assert done.returncode == 9
    leftovers = [p for p in path.parent.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".vectors.sealed.")
    assert path.read_bytes() == old
    reopened = VectorIndex.open(path, KEY, DIM)  # removes the dead process's temp file
    assert reopened.size == 100 and 999_999 not in reopened.ids()
    assert list(path.parent.iterdir()) == [path]
    mine = path.with_name(f".vectors.sealed.{os.getpid()}.0000.tmp")  # a live writer's
    mine.write_bytes(b"partial")
    reopened.save()
    assert mine.exists()


# --- self-healing ----------------------------------------------------------------------------


class Store:
    """The document store's side of sync: live ids and their embeddings."""

    def __init__(self, ids: Ids, vecs: Vecs) -> None:
        self.vectors = dict(zip(ids.tolist(), vecs, strict=True))
        self.batches: list[int] = []

    def fetch(self, ids: Ids) -> Vecs:
        self.batches.append(len(ids))
        return np.stack([self.vectors[int(i)] for i in ids])


def test_sync_heals_both_directions(path: Path) -> None:
    index, ids, vecs = filled(path, 300)
    index.save()
    index.add(np.arange(50_001, 50_011, dtype=np.int64), unit(10, seed=20))  # not in the store
    store_ids = np.concatenate([ids[20:], np.arange(90_001, 90_031, dtype=np.int64)])
    store = Store(store_ids, np.vstack([vecs[20:], unit(30, seed=21)]))
    report = index.sync(store_ids, store.fetch)
    assert (report.added, report.removed) == (30, 30)
    np.testing.assert_array_equal(index.ids(), np.sort(store_ids))
    assert hit_ids(index, store.vectors[90_005], k=1) == [90_005]
    again = index.sync(store_ids, store.fetch)
    assert (again.added, again.removed) == (0, 0)


def test_sync_fetches_in_bounded_batches(path: Path) -> None:
    index = VectorIndex.open(path, KEY, 8)
    index.add(np.array([1], dtype=np.int64), unit(1, 8))
    ids = np.arange(1, 9001, dtype=np.int64)
    store = Store(ids, unit(9000, 8, seed=22))
    assert index.sync(ids, store.fetch).added == 8999
    assert max(store.batches) <= FETCH_BATCH and sum(store.batches) == 8999
    assert index.size == 9000


def test_sync_into_an_empty_index_builds_the_right_kind(path: Path) -> None:
    index = VectorIndex.open(path, KEY, DIM, hnsw_threshold=200)
    ids = np.arange(1, 301, dtype=np.int64)
    store = Store(ids, unit(300))
    assert index.sync(ids, store.fetch).added == 300
    assert (index.kind, index.size) == ("hnsw", 300)


def test_rebuild_chooses_the_kind_by_size(path: Path) -> None:
    index, ids, vecs = filled(path, 300, hnsw_threshold=200)
    index.remove(ids[:3].tolist())
    store = Store(ids[:100], vecs[:100])
    index.rebuild(ids[:100], store.fetch)
    assert (index.kind, index.size, index.tombstones) == ("flat", 100, 0)
    assert hit_ids(index, vecs[5], k=1) == [int(ids[5])]


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "vectors", "fragment"),
    [
        ([1, 1], unit(2), "ids repeat: 1"),
        ([0, 2], unit(2), "ids must be positive, got 0"),
        ([1.0, 2.0], unit(2), "ids must be a 1-D array of integers"),
        ([1, 2], unit(3), "vectors must be floats of shape (2, 64)"),
        ([1, 2], unit(2, 32), "vectors must be floats of shape (2, 64)"),
        ([1, 2], np.full((2, DIM), np.nan, dtype=np.float32), "NaN or infinite"),
        ([1, 7], unit(2), "ids already in the vector index: 7"),
        ([1], np.ones((1, DIM), dtype=np.int64), "vectors must be floats"),
    ],
)
def test_bad_adds_change_nothing(
    path: Path, ids: list[object], vectors: Vecs, fragment: str
) -> None:
    index, _, vecs = filled(path, 20)
    before = index.search(vecs[0], K)
    with pytest.raises(InvalidInput, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        index.add(np.array(ids), vectors)
    assert index.size == 20 and index.search(vecs[0], K) == before


@pytest.mark.parametrize(
    ("query", "k", "allowed", "fragment"),
    [
        (unit(1, 32)[0], K, None, r"query must have shape \(64,\) or \(1, 64\), got \(32,\)"),
        (unit(2), K, None, r"got \(2, 64\)"),
        (unit(1)[0], 0, None, "k must be a positive integer, got 0"),
        (unit(1)[0], True, None, "k must be a positive integer, got True"),
        (unit(1)[0], K, np.array([1.5]), "allowed ids must be a 1-D array of integers"),
        (unit(1)[0], K, np.array([-3, 7]), "allowed ids must be positive, got -3"),
        (np.full(DIM, np.inf, dtype=np.float32), K, None, "NaN or infinite"),
    ],
)
def test_bad_searches(path: Path, query: Vecs, k: int, allowed: Ids | None, fragment: str) -> None:
    index, _, _ = filled(path, 20)
    with pytest.raises(InvalidInput, match=fragment):
        index.search(query, k, allowed=allowed)


def test_bad_removes_change_nothing(path: Path) -> None:
    index, _, _ = filled(path, 20)
    for bad in (["7"], [7.5], [-7]):
        with pytest.raises(InvalidInput, match="ids must be"):
            index.remove(bad)  # type: ignore[arg-type]
    assert index.size == 20


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"key": b"short"}, "vectors key must be 32 bytes, got 5"),
        ({"dim": 0}, "dim must be an integer >= 1"),
        ({"kind": "ivf"}, "index kind must be auto, flat or hnsw, got 'ivf'"),
        ({"hnsw_threshold": 0}, "hnsw_threshold must be an integer >= 1"),
        ({"hnsw_m": 1}, "hnsw_m must be an integer >= 2"),
        ({"ef_search": 0}, "ef_search must be an integer >= 1"),
    ],
)
def test_bad_settings(path: Path, kwargs: dict[str, object], fragment: str) -> None:
    args: dict[str, object] = {"key": KEY, "dim": DIM} | kwargs
    with pytest.raises(ConfigurationError, match=fragment):
        VectorIndex.open(path, **args)  # type: ignore[arg-type]
    assert not path.parent.exists()


def test_a_failed_fetch_keeps_the_old_index(path: Path) -> None:
    index, ids, vecs = filled(path, 50)

    def bad_fetch(batch: Ids) -> Vecs:
        return unit(len(batch), 32)

    with pytest.raises(InvalidInput, match=r"vectors must be floats of shape \(60, 64\)"):
        index.rebuild(np.arange(1, 61, dtype=np.int64), bad_fetch)
    np.testing.assert_array_equal(index.ids(), ids)
    with pytest.raises(InvalidInput, match="live ids repeat"):
        index.sync(np.array([1, 1]), bad_fetch)
    assert hit_ids(index, vecs[3], k=1) == [int(ids[3])]


# --- threads ---------------------------------------------------------------------------------


def test_searches_run_while_the_index_changes(path: Path) -> None:
    index, ids, vecs = filled(path, 250, hnsw_threshold=400)
    removed: set[int] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher(seed: int) -> None:
        queries = unit(50, seed=seed)
        try:
            while not stop.is_set():
                for q in queries:
                    gone = set(removed)  # removed before this search started
                    assert not gone & set(hit_ids(index, q))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in (30, 31, 32)]
    for t in threads:
        t.start()
    for start in range(0, 200, 20):  # crosses the threshold: the switch to HNSW happens live
        batch = ids[start : start + 20]
        index.remove(batch.tolist())
        removed.update(batch.tolist())
        index.add(batch + 100_000, vecs[start : start + 20])
        index.add(np.arange(1, 21, dtype=np.int64) + 200_000 + start, unit(20, seed=start))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert index.kind == "hnsw" and index.size == 450
