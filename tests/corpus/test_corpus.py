"""The corpus end to end: real documents, the real embedder, SQLCipher, FAISS, ACLs, tenants."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.config import Settings
from appliance.corpus.ingest import discover, ingest
from appliance.corpus.search import search
from appliance.errors import ConfigurationError, InvalidInput, NotFound
from appliance.services import Services

MARKER = "ZEBRA-QUOKKA-7731"  # must never appear in plaintext on disk


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    services = Services.from_settings(settings)
    services.tenants().create("acme")
    yield services
    services.close()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def library(tmp_path: Path, pypdf_resources: Path, docx_files: Path, xlrd_samples: Path) -> Path:
    """A folder of real documents nobody here wrote, plus a few written here."""
    folder = tmp_path / "library"
    (folder / "letters").mkdir(parents=True)
    shutil.copy(pypdf_resources / "crazyones.pdf", folder / "crazyones.pdf")
    shutil.copy(docx_files / "test.docx", folder / "letters" / "test.docx")
    shutil.copy(xlrd_samples / "profiles.xls", folder / "profiles.xls")
    write(folder, "notes/lease.md", "# Lease\n\nThe tenant pays a monthly rent of 1200 euros.\n")
    write(folder, "notes/marker.txt", f"The secret project code is {MARKER}.\n")
    return folder


def test_ingest_a_folder_of_real_documents(svc: Services, library: Path) -> None:
    corpus = svc.corpus("acme")
    report = ingest(corpus, discover([library]))
    assert report.failed == [] and report.unchanged == []
    sources = sorted(d.source for d in report.ingested)
    assert sources == [
        "crazyones.pdf",
        "letters/test.docx",
        "notes/lease.md",
        "notes/marker.txt",
        "profiles.xls",
    ]
    assert report.summary() == "5 ingested, 0 unchanged, 0 failed"
    assert all(d.chunks > 0 for d in report.ingested)
    assert corpus.vectors.size == len(corpus.store.live_chunk_ids())

    hits = search(corpus, "crazy ones misfits rebels troublemakers", k=3)
    assert hits[0].source == "crazyones.pdf" and hits[0].page == 1
    assert hits[0].bm25_rank is not None and hits[0].vector_rank is not None
    text = corpus.store.document_text(hits[0].document_id)
    for h in hits:  # offsets point at the text the hit shows
        assert corpus.store.document_text(h.document_id)[h.start : h.end] == h.text
    assert "misfits" in text.lower()


def test_reingest_is_idempotent_and_new_bytes_make_a_new_version(
    svc: Services, library: Path
) -> None:
    corpus = svc.corpus("acme")
    ingest(corpus, discover([library]))
    again = ingest(corpus, discover([library]))
    assert again.summary() == "0 ingested, 5 unchanged, 0 failed"
    write(library, "notes/lease.md", "# Lease\n\nThe monthly rent rises to 1350 euros in May.\n")
    third = ingest(corpus, discover([library]))
    assert third.summary() == "1 ingested, 4 unchanged, 0 failed"
    assert third.ingested[0].version == 2
    doc = next(d for d in corpus.store.documents() if d.source == "notes/lease.md")
    assert doc.version == 2 and "1350" in corpus.store.document_text(doc.id)
    hits = search(corpus, "monthly rent euros", k=5)
    lease = [h for h in hits if h.source == "notes/lease.md"]
    assert lease and all("1350" in h.text for h in lease)  # the old version is not searchable
    assert corpus.vectors.size == len(corpus.store.live_chunk_ids())


def test_bad_files_fail_alone_and_nothing_partial_is_stored(
    svc: Services, tmp_path: Path, pypdf_resources: Path
) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    write(folder, "good.txt", "Invoices are due within thirty days.")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "junk.txt").write_bytes(bytes(range(256)) * 40)
    pdf = (pypdf_resources / "crazyones.pdf").read_bytes()
    (folder / "cut.pdf").write_bytes(pdf[: len(pdf) // 2])
    (folder / "program.exe").write_bytes(b"MZ\x90\x00" + b"\x00" * 500)
    corpus = svc.corpus("acme")
    report = ingest(corpus, discover([folder]))
    assert report.summary() == "1 ingested, 0 unchanged, 4 failed"
    problems = {f.source: f.problem for f in report.failed}
    assert problems == {
        "cut.pdf": "corrupt-document",
        "empty.txt": "empty-document",
        "junk.txt": "corrupt-document",
        "program.exe": "unsupported-document",
    }
    assert [d.source for d in corpus.store.documents()] == ["good.txt"]
    assert len(corpus.store.live_chunk_ids()) == corpus.vectors.size == 1


def test_size_cap_from_settings(home: Path, models_dir: Path, tmp_path: Path) -> None:
    settings = Settings(home=home, models_dir=models_dir, threads=2, max_document_mb=0.001)
    services = Services.from_settings(settings)
    services.tenants().create("small")
    big = write(tmp_path, "big.txt", "word " * 1000)
    from appliance.corpus.ingest import IngestOptions

    report = ingest(
        services.corpus("small"), discover([big]), options=IngestOptions.from_settings(settings)
    )
    assert report.failed[0].problem == "document-too-large"
    assert "over the 0 MB limit" in report.failed[0].reason
    services.close()


def _acl_corpus(svc: Services, tmp_path: Path) -> None:
    corpus = svc.corpus("acme")
    legal = tmp_path / "legal"
    for i in range(30):  # strong matches, visible to legal only
        write(
            legal,
            f"merger-{i}.txt",
            f"Merger agreement draft {i}: merger terms, merger price, merger date.",
        )
    ingest(corpus, discover([legal]), acl=["legal"])
    write(
        tmp_path / "pub", "memo.txt", "A short memo mentions the merger once, among office matters."
    )
    ingest(corpus, discover([tmp_path / "pub"]))
    write(
        tmp_path / "hr", "salaries.txt", "Salary bands for engineers and the merger bonus policy."
    )
    ingest(corpus, discover([tmp_path / "hr"]), acl=["hr"])


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
def test_acl_filters_inside_each_retriever_before_top_k(
    svc: Services, tmp_path: Path, mode: str
) -> None:
    _acl_corpus(svc, tmp_path)
    corpus = svc.corpus("acme")
    hr_view = search(corpus, "merger agreement terms", k=3, groups=frozenset({"hr"}), mode=mode)  # type: ignore[arg-type]
    # 30 legal documents outrank these two; filtering after the top 3 would leave nothing
    assert {h.source for h in hr_view} == {"memo.txt", "salaries.txt"}
    nobody = search(corpus, "merger agreement terms", k=10, groups=frozenset(), mode=mode)  # type: ignore[arg-type]
    assert [h.source for h in nobody] == ["memo.txt"]
    legal = search(corpus, "merger agreement terms", k=5, groups=frozenset({"legal"}), mode=mode)  # type: ignore[arg-type]
    assert all(h.source.startswith("merger-") for h in legal)
    everyone = search(corpus, "salary bands", k=40, mode=mode)  # type: ignore[arg-type]
    assert "salaries.txt" in {h.source for h in everyone}


def test_acl_hides_documents_from_listing_and_lookup(svc: Services, tmp_path: Path) -> None:
    _acl_corpus(svc, tmp_path)
    store = svc.corpus("acme").store
    hr_docs = {d.source for d in store.documents(frozenset({"hr"}))}
    assert hr_docs == {"memo.txt", "salaries.txt"}
    secret = next(d for d in store.documents() if d.source == "merger-0.txt")
    with pytest.raises(NotFound):
        store.document(secret.id, frozenset({"hr"}))
    assert store.document(secret.id, frozenset({"legal"})).acl == ("legal",)


def test_tenants_are_isolated(svc: Services, tmp_path: Path) -> None:
    svc.tenants().create("globex")
    write(tmp_path / "a", "acme.txt", "Acme's confidential roadmap for rockets.")
    ingest(svc.corpus("acme"), discover([tmp_path / "a"]))
    other = svc.corpus("globex")
    assert search(other, "confidential roadmap rockets", k=5) == []
    acme_doc = svc.corpus("acme").store.documents()[0]
    with pytest.raises(NotFound):
        other.store.document(acme_doc.id)
    assert (svc.settings.index_dir / "acme").is_dir() and (
        svc.settings.index_dir / "globex"
    ).is_dir()


def test_delete_document_removes_it_everywhere(svc: Services, library: Path) -> None:
    corpus = svc.corpus("acme")
    ingest(corpus, discover([library]))
    lease = next(d for d in corpus.store.documents() if d.source == "notes/lease.md")
    corpus.delete_document(lease.id)
    for mode in ("bm25", "vector", "hybrid"):
        hits = search(corpus, "tenant pays monthly rent euros", k=10, mode=mode)  # type: ignore[arg-type]
        assert "notes/lease.md" not in {h.source for h in hits}
    assert "notes/lease.md" not in {d.source for d in corpus.store.documents()}
    with pytest.raises(NotFound):
        corpus.store.document(lease.id)
    with pytest.raises(NotFound):
        corpus.delete_document(lease.id)
    assert corpus.vectors.size == len(corpus.store.live_chunk_ids())


def test_index_survives_a_restart_and_heals_from_the_store(svc: Services, library: Path) -> None:
    corpus = svc.corpus("acme")
    ingest(corpus, discover([library]))
    live = len(corpus.store.live_chunk_ids())
    sealed = corpus.folder / "vectors.sealed"
    svc.close()
    sealed.unlink()  # as if the process died before it ever saved the index
    reopened = Services.from_settings(svc.settings)
    corpus = reopened.corpus("acme")
    assert corpus.vectors.size == live
    assert search(corpus, "crazy ones misfits", k=1, mode="vector")[0].source == "crazyones.pdf"
    reopened.close()


def test_no_plaintext_on_disk(svc: Services, library: Path) -> None:
    corpus = svc.corpus("acme")
    ingest(corpus, discover([library]))
    search(corpus, f"project code {MARKER}", k=3)
    svc.close()
    needles = [MARKER.encode(), MARKER.lower().encode(), b"misfits", b"monthly rent"]
    for path in svc.settings.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), path


def test_deleting_a_tenant_destroys_its_key_and_files(svc: Services, library: Path) -> None:
    ingest(svc.corpus("acme"), discover([library]))
    svc.tenants().delete("acme")
    assert not (svc.settings.index_dir / "acme").exists()
    assert [t.name for t in svc.tenants().list()] == []
    with pytest.raises(NotFound, match="tenant 'acme' does not exist"):
        svc.corpus("acme")


def test_bad_queries(svc: Services) -> None:
    corpus = svc.corpus("acme")
    with pytest.raises(InvalidInput, match="the query is empty"):
        search(corpus, "   ")
    with pytest.raises(InvalidInput, match="limit is 4000"):
        search(corpus, "x" * 4001)
    with pytest.raises(InvalidInput, match="k must be between 1 and 200"):
        search(corpus, "rent", k=0)
    # punctuation only: no BM25 terms (no FTS5 syntax error), and an empty corpus has no hits
    assert search(corpus, "!!! ??? *** AND OR NEAR(", k=3) == []


def test_vectors_are_the_stored_embeddings(svc: Services, library: Path) -> None:
    corpus = svc.corpus("acme")
    ingest(corpus, discover([library]))
    ids = corpus.store.live_chunk_ids()[:3]
    stored = corpus.store.embeddings(ids)
    fresh = corpus.embedder.embed([corpus.store.chunks(list(ids))[int(i)].text for i in ids])
    assert np.allclose(stored, fresh, atol=1e-5)


def test_hnsw_corpus_deletes_and_compacts(home: Path, models_dir: Path, tmp_path: Path) -> None:
    settings = Settings(home=home, models_dir=models_dir, threads=2, index_kind="hnsw")
    services = Services.from_settings(settings)
    services.tenants().create("big")
    corpus = services.corpus("big")
    for i in range(10):
        write(
            tmp_path / "h",
            f"note-{i}.txt",
            f"Note {i} about shipment {i} of turbines to plant {i}.",
        )
    ingest(corpus, discover([tmp_path / "h"]))
    assert corpus.vectors.kind == "hnsw"
    for doc in corpus.store.documents()[:5]:
        corpus.delete_document(doc.id)  # each deletion saves; past 20% removed, it compacts
        # removed ids left in the graph never exceed 20% of the live ones after a save
        assert corpus.vectors.tombstones <= 0.2 * corpus.vectors.size
    assert corpus.vectors.size == 5
    hits = search(corpus, "shipment of turbines", k=10, mode="vector")
    assert {h.source for h in hits} == {f"note-{i}.txt" for i in range(5, 10)}
    services.close()


def test_a_tenant_refuses_a_different_embedding_model(
    svc: Services, library: Path, settings: Settings
) -> None:
    ingest(svc.corpus("acme"), discover([library]))
    svc.close()
    svc.catalog.activate("all-minilm-l6-v2-int8")
    other = Services.from_settings(settings)
    with pytest.raises(
        ConfigurationError,
        match=(
            r"tenant 'acme' was indexed with embedding model all-minilm-l6-v2@1, "
            r"but the active one is all-minilm-l6-v2-int8@1"
        ),
    ):
        other.corpus("acme")
    other.close()


@pytest.mark.parametrize("groups", [None, frozenset(), frozenset({"hr", "legal"})])
def test_bm25_scans_the_fts_index_first(svc: Services, groups: frozenset[str] | None) -> None:
    from appliance.corpus.lexical import bm25_sql
    from appliance.corpus.store import _acl_clause

    store = svc.corpus("acme").store
    where, params = _acl_clause("chunks_fts.document_id", groups)
    plan = store._query("EXPLAIN QUERY PLAN " + bm25_sql(where), ['"rent"', *params, 10])
    steps = [row[-1] for row in plan]
    # the FTS5 match drives the query and the chunks table is never read per match
    assert steps[0].startswith("SCAN chunks_fts VIRTUAL TABLE"), steps
    assert not any(" chunks " in f" {s} " or "SEARCH c " in s for s in steps), steps
