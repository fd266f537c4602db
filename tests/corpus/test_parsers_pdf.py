"""PDF and OCR on real documents from pypdf's and OCRmyPDF's test resources.

Similarity measure: difflib's ratio over the lower-cased word sequences (``\\w+``) of the
extracted text and the gold text shipped next to the PDF.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from appliance.corpus.parsed import ParsedDocument, ParseLimits
from appliance.corpus.parsers import parse
from appliance.errors import (
    CorruptDocument,
    DocumentError,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
)

WellFormed = Callable[[ParsedDocument], ParsedDocument]
Rejects = Callable[..., DocumentError]
NO_OCR = ParseLimits(ocr=False)


def similarity(extracted: str, gold: str) -> float:
    words = re.compile(r"\w+")
    return difflib.SequenceMatcher(
        None, words.findall(extracted.lower()), words.findall(gold.lower()), autojunk=False
    ).ratio()


def read(folder: Path, name: str, limits: ParseLimits = NO_OCR) -> ParsedDocument:
    return parse((folder / name).read_bytes(), filename=name, limits=limits)


def test_text_matches_gold_text(pypdf_resources: Path, well_formed: WellFormed) -> None:
    document = well_formed(read(pypdf_resources, "crazyones.pdf"))
    gold = (pypdf_resources / "crazyones.txt").read_text(encoding="utf-8")
    assert similarity(document.text, gold) >= 0.95
    assert document.media_type == "application/pdf"
    assert document.status == "ok" and document.warnings == ()
    texts = [document.block_text(block) for block in document.blocks]
    # Paragraphs come from the page geometry: a one-line paragraph stays on its own.
    assert "Maybe they have to be crazy." in texts
    assert document.blocks[0].kind == "heading"
    assert texts[0] == "The Crazy Ones"
    assert {(block.location, block.page) for block in document.blocks} == {("page 1", 1)}
    assert document.metadata["created"] == "2015-06-04T13:34:06-06:00"


def test_pages_and_running_headers(pypdf_resources: Path, well_formed: WellFormed) -> None:
    document = well_formed(read(pypdf_resources, "GeoBase_NHNC1_Data_Model_UML_EN.pdf"))
    pages = {block.page for block in document.blocks}
    assert pages == set(range(1, 20))
    for block in document.blocks:
        assert block.location == f"page {block.page}"
    headers = [b for b in document.blocks if b.kind == "header"]
    footers = [b for b in document.blocks if b.kind == "footer"]
    assert len(headers) >= 10 and len(footers) >= 10
    assert {document.block_text(b) for b in headers} == {
        "National Hydro Network, Data Model – Edition 1.0 2004-06"
    }
    assert document.block_text(footers[0]).startswith("GeoBase®")
    body = [b for b in document.blocks if b.kind == "paragraph" and b.page == 6]
    assert any("smallest common denominator" in document.block_text(b) for b in body)


def test_metadata(pypdf_resources: Path) -> None:
    document = read(pypdf_resources, "metadata.pdf")
    assert document.metadata["title"] == "The Title"
    assert document.metadata["author"] == "Martin Thoma"


def test_empty_user_password_opens(pypdf_resources: Path) -> None:
    document = read(pypdf_resources / "encryption", "r6-empty-password.pdf")
    assert "pdf encryption test" in document.text


@pytest.mark.parametrize(
    "name", ["encryption/r6-user-password.pdf", "encryption/r2-user-password.pdf"]
)
def test_password_protected(pypdf_resources: Path, rejects: Rejects, name: str) -> None:
    data = (pypdf_resources / name).read_bytes()
    rejects(
        data,
        "secret.pdf",
        EncryptedDocument,
        "secret.pdf: the PDF is encrypted and needs a password",
    )


def test_truncated_pdf(pypdf_resources: Path, rejects: Rejects) -> None:
    data = (pypdf_resources / "GeoBase_NHNC1_Data_Model_UML_EN.pdf").read_bytes()
    rejects(data[: len(data) // 2], "report.pdf", CorruptDocument, "report.pdf: is a truncated PDF")


def test_not_a_readable_pdf(ocrmypdf_resources: Path, rejects: Rejects) -> None:
    # A header, then the end marker, and nothing between.
    data = (ocrmypdf_resources / "invalid.pdf").read_bytes()
    rejects(data, "invalid.pdf", CorruptDocument, "invalid.pdf: is not a readable PDF")


def test_too_many_pages(pypdf_resources: Path, rejects: Rejects) -> None:
    data = (pypdf_resources / "GeoBase_NHNC1_Data_Model_UML_EN.pdf").read_bytes()
    limits = ParseLimits(max_pages=5)
    rejects(data, "geo.pdf", DocumentTooLarge, "19 pages, over max_pages=5", limits)


def test_pdf_without_any_text(ocrmypdf_resources: Path, rejects: Rejects) -> None:
    data = (ocrmypdf_resources / "trivial.pdf").read_bytes()
    rejects(data, "trivial.pdf", EmptyDocument, "trivial.pdf: the PDF has no text")


def test_scan_without_ocr_needs_ocr(ocrmypdf_resources: Path) -> None:
    document = read(ocrmypdf_resources, "linn.pdf")
    assert document.status == "needs_ocr"
    assert document.text == "" and document.blocks == ()
    assert document.warnings == (
        "page 1: no text layer, not read: OCR is off (ParseLimits.ocr=False)",
    )


def test_mixed_document_keeps_text_and_flags_scans(ocrmypdf_resources: Path) -> None:
    document = read(ocrmypdf_resources, "multipage.pdf")
    assert document.status == "needs_ocr"
    assert document.blocks, "pages with a text layer are still read"
    flagged = [w for w in document.warnings if "no text layer" in w]
    assert flagged and all(w.startswith("page ") for w in flagged)


def test_missing_ocr_language_needs_ocr(ocrmypdf_resources: Path, tesseract: str) -> None:
    limits = ParseLimits(ocr_languages="zzz")
    document = read(ocrmypdf_resources, "linn.pdf", limits)
    assert document.status == "needs_ocr"
    assert "Tesseract lacks language data for zzz" in document.warnings[0]


def test_ocr_of_a_real_scan(
    ocrmypdf_resources: Path, tesseract: str, well_formed: WellFormed
) -> None:
    document = well_formed(read(ocrmypdf_resources, "linn.pdf", ParseLimits()))
    gold = (ocrmypdf_resources / "linn.txt").read_text(encoding="utf-8")
    score = similarity(document.text, gold)
    print(f"linn.pdf OCR word-sequence similarity to gold text: {score:.3f}")
    assert score >= 0.9
    assert document.status == "ok"
    assert document.warnings == ("page 1: no text layer, OCR applied",)
    assert document.blocks[0].location == "page 1"


def test_concurrent_parses_agree(pypdf_resources: Path) -> None:
    """PDFium is not thread-safe; parsing from threads must still give the same results."""
    names = ["crazyones.pdf", "GeoBase_NHNC1_Data_Model_UML_EN.pdf", "issue-301.pdf", "toy.pdf"]
    expected = {name: read(pypdf_resources, name).text for name in names}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda name: (name, read(pypdf_resources, name).text), names * 3))
    assert all(text == expected[name] for name, text in results)


def test_tesseract_missing_needs_ocr(
    ocrmypdf_resources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    document = read(ocrmypdf_resources, "linn.pdf", ParseLimits())
    assert document.status == "needs_ocr"
    assert document.warnings == ("page 1: no text layer, not read: Tesseract is not installed",)


def test_tesseract_failure_needs_ocr(
    ocrmypdf_resources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Tesseract that lists its languages, then crashes on the page."""
    broken = tmp_path / "tesseract"
    broken.write_text('#!/bin/sh\n[ "$1" = --list-langs ] && { echo eng; exit 0; }\nexit 3\n')
    broken.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    document = read(ocrmypdf_resources, "linn.pdf", ParseLimits())
    assert document.status == "needs_ocr"
    assert document.warnings == (
        "page 1: no text layer and OCR failed: Tesseract exited with status 3",
    )
