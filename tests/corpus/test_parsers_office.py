"""Word and PowerPoint: documents built here for structure, python-docx's own test files."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import docx
import pptx
from docx.oxml import OxmlElement
from pptx.util import Inches

from appliance.corpus.parsed import ParsedDocument, ParseLimits
from appliance.corpus.parsers import parse
from appliance.errors import (
    CorruptDocument,
    DocumentError,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    UnsupportedDocument,
)

WellFormed = Callable[[ParsedDocument], ParsedDocument]
Rejects = Callable[..., DocumentError]


def build_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Quarterly review"
    document.core_properties.author = "R. Analyst"
    section = document.sections[0]
    section.header.paragraphs[0].text = "ACME Confidential"
    section.footer.paragraphs[0].text = "Page footer text"
    document.add_heading("Budget overview", level=1)
    document.add_paragraph("Spending rose in the third quarter.")
    table = document.add_table(rows=3, cols=3)
    for row, values in enumerate(
        [("Item", "Q2", "Q3"), ("Rent", "100", "110"), ("Travel", "5", "")]
    ):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    table.cell(0, 1).merge(table.cell(0, 2)).text = "Quarters"  # horizontal merge
    table.cell(1, 0).merge(table.cell(2, 0)).text = "Costs"  # vertical merge
    document.add_heading("Outlook", level=2)
    document.add_paragraph("Flat.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_docx_structure(well_formed: WellFormed) -> None:
    document = well_formed(parse(build_docx(), filename="review.docx"))
    rows = [(b.kind, b.location, document.block_text(b)) for b in document.blocks]
    assert rows == [
        ("header", "header", "ACME Confidential"),
        ("heading", "paragraph 1", "Budget overview"),
        ("paragraph", "paragraph 2", "Spending rose in the third quarter."),
        ("table_row", "table 1, row 1", "Item | Quarters"),
        ("table_row", "table 1, row 2", "Costs | 100 | 110"),
        ("table_row", "table 1, row 3", "| 5"),
        ("heading", "paragraph 3", "Outlook"),
        ("paragraph", "paragraph 4", "Flat."),
        ("footer", "footer", "Page footer text"),
    ]
    assert document.text.count("Costs") == 1, "a merged cell's value appears once"
    assert document.metadata["title"] == "Quarterly review"
    assert document.metadata["author"] == "R. Analyst"
    assert all(block.page is None for block in document.blocks)


def test_docx_content_controls(well_formed: WellFormed) -> None:
    document = docx.Document()
    document.add_paragraph("Before the form")
    control, content = OxmlElement("w:sdt"), OxmlElement("w:sdtContent")
    control.append(content)
    content.append(document.add_paragraph("Inside a content control")._p)  # moves it
    document.element.body.sectPr.addprevious(control)
    buffer = io.BytesIO()
    document.save(buffer)
    parsed = well_formed(parse(buffer.getvalue(), filename="form.docx"))
    assert texts(parsed) == ["Before the form", "Inside a content control"]


def texts(document: ParsedDocument) -> list[str]:
    return [document.block_text(block) for block in document.blocks]


def test_real_docx_files(docx_files: Path, well_formed: WellFormed) -> None:
    document = well_formed(parse((docx_files / "test.docx").read_bytes(), filename="test.docx"))
    assert [document.block_text(b) for b in document.blocks] == [
        "python-docx was here!",
        "python-docx was here too!",
    ]
    assert document.metadata["author"] == "Cisco Employee"
    inner = parse((docx_files / "sct-inner-content.docx").read_bytes(), filename="s.docx")
    texts = [inner.block_text(b) for b in inner.blocks]
    assert texts[:4] == ["P1", "T2", "P3", "T4"]  # paragraphs and tables in document order


def test_docx_with_only_images(docx_files: Path, rejects: Rejects) -> None:
    data = (docx_files / "having-images.docx").read_bytes()
    rejects(data, "pictures.docx", EmptyDocument, "pictures.docx: the Word document holds no text")


def test_truncated_docx(rejects: Rejects) -> None:
    data = build_docx()
    rejects(
        data[: len(data) // 2],
        "cut.docx",
        CorruptDocument,
        "cut.docx: is a truncated or corrupt zip",
    )


def test_docx_with_broken_xml(rejects: Rejects) -> None:
    source = zipfile.ZipFile(io.BytesIO(build_docx()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as broken:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "word/document.xml":
                data = data[: len(data) // 2]  # secret text in here must not reach the message
            broken.writestr(item, data)
    error = rejects(
        buffer.getvalue(), "b.docx", CorruptDocument, "b.docx: is a corrupt Word document"
    )
    assert "Spending" not in str(error)


def zip_bomb_docx(inflated: int) -> bytes:
    """A valid docx plus one part of zeros that deflates ~1000:1."""
    source = zipfile.ZipFile(io.BytesIO(build_docx()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in source.infolist():
            bomb.writestr(item, source.read(item))
        bomb.writestr("word/media/padding.bin", bytes(inflated), zipfile.ZIP_DEFLATED, 9)
    return buffer.getvalue()


def test_zip_bomb_by_ratio(rejects: Rejects) -> None:
    data = zip_bomb_docx(20 * 2**20)
    assert len(data) < 64 * 1024, "a few KB on disk"
    rejects(data, "bomb.docx", DocumentTooLarge, "over max_compression_ratio=100 (a zip bomb?)")


def test_zip_bomb_by_unpacked_size(rejects: Rejects) -> None:
    limits = ParseLimits(max_unpacked_bytes=10 * 2**20, max_compression_ratio=10_000)
    error = rejects(
        zip_bomb_docx(20 * 2**20),
        "big.docx",
        DocumentTooLarge,
        "max_unpacked_bytes=10,485,760",
        limits,
    )
    assert "unpacks to 2" in str(error)


def test_unsupported_office_types(ocrmypdf_resources: Path, rejects: Rejects) -> None:
    data = (ocrmypdf_resources / "tagged.odt").read_bytes()
    error = rejects(
        data, "tagged.odt", UnsupportedDocument, "application/vnd.oasis.opendocument.text"
    )
    assert error.extensions["media_type"] == "application/vnd.oasis.opendocument.text"


def build_pptx() -> bytes:
    deck = pptx.Presentation()
    title = deck.slides.add_slide(deck.slide_layouts[0])
    title.shapes.title.text = "Annual results"
    title.placeholders[1].text = "Board meeting"
    body = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    body.shapes.title.text = "Regional sales"
    box = body.shapes.add_textbox(Inches(1), Inches(2), Inches(4), Inches(1))
    box.text_frame.text = "North grew fastest."
    table = body.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
    for row, values in enumerate([("Region", "Sales"), ("North", "12")]):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    group = body.shapes.add_group_shape()
    grouped = group.shapes.add_textbox(Inches(1), Inches(6), Inches(2), Inches(1))
    grouped.text_frame.text = "Grouped note"
    body.notes_slide.notes_text_frame.text = "Mention the new office."
    buffer = io.BytesIO()
    deck.save(buffer)
    return buffer.getvalue()


def test_pptx_structure(well_formed: WellFormed) -> None:
    document = well_formed(parse(build_pptx(), filename="results.pptx"))
    rows = [(b.kind, b.location, b.page, document.block_text(b)) for b in document.blocks]
    assert rows == [
        ("heading", "slide 1", 1, "Annual results"),
        ("paragraph", "slide 1", 1, "Board meeting"),
        ("heading", "slide 2", 2, "Regional sales"),
        ("paragraph", "slide 2", 2, "North grew fastest."),
        ("table_row", "slide 2", 2, "Region | Sales"),
        ("table_row", "slide 2", 2, "North | 12"),
        ("paragraph", "slide 2", 2, "Grouped note"),
        ("paragraph", "slide 2 notes", 2, "Mention the new office."),
    ]


def test_too_many_slides(rejects: Rejects) -> None:
    rejects(
        build_pptx(),
        "deck.pptx",
        DocumentTooLarge,
        "2 slides, over max_pages=1",
        ParseLimits(max_pages=1),
    )


def test_empty_presentation(rejects: Rejects) -> None:
    buffer = io.BytesIO()
    pptx.Presentation().save(buffer)
    rejects(
        buffer.getvalue(),
        "blank.pptx",
        EmptyDocument,
        "blank.pptx: no slide of the presentation holds text",
    )


def compound_file(streams: list[str]) -> bytes:
    """A minimal OLE2 compound file whose root holds empty streams of these names.

    Password-protected .docx/.xlsx files are such containers, with EncryptionInfo and
    EncryptedPackage streams; old .doc files hold a WordDocument stream.
    """
    free, end, fat_sector = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
    header = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(16)
    header += struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6) + bytes(6)
    header += struct.pack("<IIIIIIII", 0, 1, 1, 0, 4096, end, 0, end) + bytes(4)
    header += struct.pack("<109I", 0, *([free] * 108))
    fat = struct.pack("<128I", fat_sector, end, *([free] * 126))

    def entry(name: str, kind: int, right: int, child: int) -> bytes:
        raw = name.encode("utf-16-le") + b"\0\0"
        fields = struct.pack("<HBBiii", len(raw), kind, 1, -1, right, child)
        return raw.ljust(64, b"\0") + fields + bytes(36) + struct.pack("<iII", -2, 0, 0)

    entries = [entry("Root Entry", 5, -1, 1)]
    for number, name in enumerate(streams, start=1):
        entries.append(entry(name, 2, number + 1 if number < len(streams) else -1, -1))
    return header + fat + b"".join(entries).ljust(512, b"\0")


def test_password_protected_office_file(rejects: Rejects) -> None:
    data = compound_file(["EncryptionInfo", "EncryptedPackage"])
    rejects(
        data,
        "locked.xlsx",
        EncryptedDocument,
        "locked.xlsx: the Office document is password-protected",
    )


def test_old_word_format_is_unsupported(rejects: Rejects) -> None:
    error = rejects(
        compound_file(["WordDocument"]), "old.doc", UnsupportedDocument, "application/msword"
    )
    assert error.extensions["media_type"] == "application/msword"


def test_truncated_compound_file(rejects: Rejects) -> None:
    data = compound_file(["WordDocument"])[:700]
    rejects(data, "old.doc", CorruptDocument, "old.doc: is a truncated or corrupt OLE2")
