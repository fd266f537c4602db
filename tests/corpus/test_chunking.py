"""Chunking: whole blocks, one page per chunk, token budget, overlap, exact offsets."""

from __future__ import annotations

import pytest

from appliance.corpus.chunking import ChunkingPolicy, chunk_document
from appliance.corpus.parsed import ParsedDocument, TextAssembly
from appliance.inference.embedder import HashEmbedder

count = HashEmbedder().count_tokens  # one token per word


def words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def doc(*blocks: tuple[str, str, str, int | None]) -> ParsedDocument:
    asm = TextAssembly()
    for kind, text, location, page in blocks:
        asm.add(kind, text, location, page)  # type: ignore[arg-type]
    return asm.build("text/plain")


def test_offsets_are_exact_and_cover_every_block() -> None:
    d = doc(
        ("heading", "Terms", "page 1", 1),
        ("paragraph", words(30, "a"), "page 1", 1),
        ("paragraph", words(30, "b"), "page 1", 1),
        ("paragraph", words(30, "c"), "page 2", 2),
    )
    chunks = chunk_document(d, count, ChunkingPolicy(max_tokens=50, overlap_tokens=10))
    for c in chunks:
        assert c.text == d.text[c.start : c.end]
        assert c.tokens <= 50
    covered = "".join(c.text for c in chunks)
    for block in d.blocks:
        assert d.block_text(block) in covered


def test_chunks_never_cross_a_page() -> None:
    d = doc(("paragraph", "one two", "page 1", 1), ("paragraph", "three four", "page 2", 2))
    chunks = chunk_document(d, count, ChunkingPolicy(max_tokens=100, overlap_tokens=0))
    assert [(c.text, c.page, c.location) for c in chunks] == [
        ("one two", 1, "page 1"),
        ("three four", 2, "page 2"),
    ]


def test_a_heading_starts_a_new_chunk_and_stays_with_its_text() -> None:
    d = doc(
        ("paragraph", "intro words here", "paragraph 1", None),
        ("heading", "Liability", "paragraph 2", None),
        ("paragraph", "the supplier is liable", "paragraph 3", None),
    )
    chunks = chunk_document(d, count, ChunkingPolicy(max_tokens=100, overlap_tokens=0))
    assert [c.text for c in chunks] == ["intro words here", "Liability\n\nthe supplier is liable"]
    assert chunks[1].location == "paragraph 2 – paragraph 3"


def test_budget_and_overlap_by_whole_blocks() -> None:
    blocks = [("paragraph", words(10, f"p{i}_"), f"paragraph {i}", None) for i in range(10)]
    d = doc(*blocks)  # type: ignore[arg-type]
    chunks = chunk_document(d, count, ChunkingPolicy(max_tokens=35, overlap_tokens=10))
    assert all(c.tokens <= 35 for c in chunks)
    assert [c.tokens for c in chunks][:2] == [30, 30]
    # the last block of a chunk opens the next one
    assert chunks[1].text.startswith(d.block_text(d.blocks[2]))
    assert chunks[-1].end == len(d.text)


def test_an_over_long_block_is_cut_at_sentence_ends() -> None:
    sentences = [f"Sentence {i} says {words(8, f's{i}_')}." for i in range(12)]
    d = doc(("paragraph", " ".join(sentences), "page 1", 1))
    chunks = chunk_document(d, count, ChunkingPolicy(max_tokens=40, overlap_tokens=12))
    assert len(chunks) > 2
    for c in chunks:
        assert c.tokens <= 40 and c.text == d.text[c.start : c.end]
        assert c.text.startswith("Sentence") and c.text.endswith(".")
    assert chunks[0].start == 0 and chunks[-1].end == len(d.text)


def test_a_run_on_sentence_is_cut_at_words() -> None:
    d = doc(("paragraph", words(500, "w"), "page 1", 1))
    chunks = chunk_document(d, count, ChunkingPolicy(max_tokens=64, overlap_tokens=8))
    assert all(c.tokens <= 64 for c in chunks)
    assert chunks[-1].end == len(d.text) and len(chunks) >= 8


def test_spreadsheet_rows_merge_their_cell_ranges() -> None:
    asm = TextAssembly()
    for row in range(3, 6):
        asm.add(
            "table_row",
            f"item {row} | 10 | 20",
            f"sheet Budget, row {row}",
            1,
            f"Budget!A{row}:C{row}",
        )
    chunks = chunk_document(asm.build("text/csv"), count, ChunkingPolicy(100, 0))
    assert [c.cells for c in chunks] == ["Budget!A3:C5"]


def test_empty_document_has_no_chunks() -> None:
    assert chunk_document(TextAssembly().build("application/pdf", status="needs_ocr"), count) == []


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        ChunkingPolicy(max_tokens=10, overlap_tokens=10)


def test_fts_query_is_safe_and_drops_stopwords() -> None:
    from appliance.corpus.lexical import fts_query

    assert fts_query("What is the monthly rent?") == '"monthly" OR "rent"'
    assert fts_query("the who") == '"the" OR "who"'  # only stopwords: keep them
    assert fts_query('NEAR("a" b) OR *') == '"b" OR "near"'  # FTS5 syntax is quoted away
    assert fts_query("!!! ???") is None
