"""Document filters in search: inside both retrievers, beside the ACL, never widening it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.config import Settings
from appliance.corpus.filters import DocumentFilter
from appliance.corpus.ingest import ingest_bytes
from appliance.corpus.search import search
from appliance.errors import InvalidInput
from appliance.services import Services

TEXTS = {
    "leases/lyon.txt": "The lease of the Lyon warehouse ends in June. Rent is due monthly.",
    "leases/paris.md": "# Paris lease\n\nThe lease of the Paris office ends in March.",
    "memos/merger.txt": "The merger memo: the lease portfolio moves to Initech in March.",
}


@pytest.fixture
def svc(settings: Settings) -> Iterator[Services]:
    services = Services.from_settings(settings)
    services.tenants().create("acme")
    corpus = services.corpus("acme")
    for source, text in TEXTS.items():
        acl = ["legal"] if source.startswith("memos/") else []
        ingest_bytes(corpus, source, text.encode(), acl=acl)
    yield services
    services.close()


def sources(
    svc: Services, f: DocumentFilter | None, mode: str = "hybrid", **kw: object
) -> set[str]:
    hits = search(svc.corpus("acme"), "lease ends", k=10, mode=mode, filters=f, **kw)  # type: ignore[arg-type]
    return {h.source for h in hits}


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "vector"])
def test_each_retriever_keeps_only_matching_documents(svc: Services, mode: str) -> None:
    assert sources(svc, None, mode) == set(TEXTS)
    assert sources(svc, DocumentFilter.of(sources=["leases/*"]), mode) == {
        "leases/lyon.txt",
        "leases/paris.md",
    }
    assert sources(svc, DocumentFilter.of(media_types=["text/markdown"]), mode) == {
        "leases/paris.md"
    }
    lyon = svc.corpus("acme").store.lookup("leases/lyon.txt")
    assert lyon is not None
    assert sources(svc, DocumentFilter.of(document_ids=[lyon[0]]), mode) == {"leases/lyon.txt"}


def test_fields_combine_with_and_values_with_or(svc: Services) -> None:
    both = DocumentFilter.of(sources=["leases/*", "memos/*"], media_types=["text/plain"])
    assert sources(svc, both) == {"leases/lyon.txt", "memos/merger.txt"}


def test_a_filter_never_widens_what_the_acl_allows(svc: Services) -> None:
    merger = svc.corpus("acme").store.lookup("memos/merger.txt")
    assert merger is not None
    only = DocumentFilter.of(document_ids=[merger[0]])
    assert sources(svc, only, groups=frozenset({"hr"})) == set()
    assert sources(svc, only, groups=frozenset({"legal"})) == {"memos/merger.txt"}


def test_dates_bound_when_documents_last_changed(svc: Services) -> None:
    assert sources(svc, DocumentFilter.of(updated_after="2000-01-01")) == set(TEXTS)
    assert sources(svc, DocumentFilter.of(updated_before="2000-01-01")) == set()
    assert sources(svc, DocumentFilter.of(updated_after="2999-01-01T00:00:00+02:00")) == set()


def test_a_deleted_document_is_not_found_through_its_id(svc: Services) -> None:
    corpus = svc.corpus("acme")
    lyon = corpus.store.lookup("leases/lyon.txt")
    assert lyon is not None
    corpus.delete_document(lyon[0])
    assert sources(svc, DocumentFilter.of(document_ids=[lyon[0]])) == set()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"document_ids": [0]}, "filters.document_ids: positive integers"),
        ({"document_ids": [True]}, "filters.document_ids: positive integers"),
        ({"document_ids": list(range(1, 1002))}, "filters.document_ids: at most 1000 values"),
        ({"sources": [" "]}, "filters.sources: non-empty strings"),
        ({"media_types": ["x" * 301]}, "filters.media_types: at most 300 characters each"),
        ({"updated_after": "last week"}, "filters.updated_after: an ISO 8601 date or time"),
        (
            {"updated_after": "2026-02-01", "updated_before": "2026-01-31"},
            "filters: updated_after must be earlier than updated_before",
        ),
    ],
)
def test_bad_filters_are_refused_with_the_field_named(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        DocumentFilter.of(**fields)  # type: ignore[arg-type]
    assert str(refused.value.detail).startswith(message)


def test_a_filter_is_normalised_for_cache_keys() -> None:
    a = DocumentFilter.of(sources=["b*", "a*", "a*"], media_types=["Text/Plain"])
    b = DocumentFilter.of(sources=["a*", "b*"], media_types=["text/plain"])
    assert a.canonical() == b.canonical() and not a.empty
    assert DocumentFilter.of().empty
    naive = DocumentFilter.of(updated_after="2026-03-31")
    assert naive.updated_after == "2026-03-31T00:00:00+00:00"
