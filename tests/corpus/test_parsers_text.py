"""Plain text, HTML, Markdown and content sniffing, with the generic bad inputs."""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from appliance.corpus.parsed import ParsedDocument, ParseLimits
from appliance.corpus.parsers import parse
from appliance.errors import (
    CorruptDocument,
    DocumentError,
    DocumentTooLarge,
    EmptyDocument,
    UnsupportedDocument,
)

WellFormed = Callable[[ParsedDocument], ParsedDocument]
Rejects = Callable[..., DocumentError]


def texts(document: ParsedDocument) -> list[str]:
    return [document.block_text(block) for block in document.blocks]


def test_plain_text_paragraphs_by_line(well_formed: WellFormed) -> None:
    data = "Title line\r\n\r\nFirst paragraph\nstill first\n\n\n  Second \u00e9t\u00e9\n".encode()
    document = well_formed(parse(data, filename="notes.txt"))
    assert document.media_type == "text/plain"
    assert texts(document) == ["Title line", "First paragraph\nstill first", "Second été"]
    assert [b.location for b in document.blocks] == ["line 1", "lines 3-4", "line 7"]


@pytest.mark.parametrize(
    ("encoding", "sample"),
    [
        ("cp1251", "Отчёт о расходах за третий квартал: всё в порядке."),
        ("utf-16", "Bericht über die Ausgaben: alles in Ordnung."),
        ("cp1252", "Résumé des dépenses du trimestre, payées à l'échéance."),
    ],
)
def test_text_encodings(encoding: str, sample: str) -> None:
    document = parse(sample.encode(encoding), filename="report.txt")
    assert document.text == sample


def test_binary_junk_named_txt(rejects: Rejects) -> None:
    junk = random.Random(7).randbytes(4096)
    rejects(junk, "notes.txt", CorruptDocument, "notes.txt: named .txt but holds binary data")


def test_binary_junk_without_a_promising_name(rejects: Rejects) -> None:
    junk = random.Random(8).randbytes(4096)
    error = rejects(junk, "blob", UnsupportedDocument, "application/octet-stream documents")
    assert error.status == 415


def test_empty_file(rejects: Rejects) -> None:
    rejects(b"", "empty.pdf", EmptyDocument, "empty.pdf: the file is empty (0 bytes)")


def test_whitespace_only(rejects: Rejects) -> None:
    rejects(
        b" \n\t\r\n  \n", "blank.txt", EmptyDocument, "blank.txt: the file holds only whitespace"
    )


def test_file_over_max_bytes(rejects: Rejects) -> None:
    limits = ParseLimits(max_bytes=1000)
    rejects(b"a" * 1001, "huge.txt", DocumentTooLarge, "1,001 bytes, over max_bytes=1,000", limits)


def test_unsupported_type_is_named(rejects: Rejects) -> None:
    data = gzip.compress(b"secret payload")
    error = rejects(
        data, "archive.gz", UnsupportedDocument, "archive.gz: application/gzip documents"
    )
    assert error.extensions == {"media_type": "application/gzip"}


def test_hostile_filename_stays_on_one_line(rejects: Rejects) -> None:
    rejects(b"", "evil\nname\r.txt", EmptyDocument, "evil name .txt: the file is empty")


def test_content_decides_not_the_name(pypdf_resources: Path) -> None:
    document = parse((pypdf_resources / "crazyones.pdf").read_bytes(), filename="notes.txt")
    assert document.media_type == "application/pdf"
    assert document.warnings[0] == "named .txt but the content is application/pdf; parsed as such"


HTML = b"""<!DOCTYPE html><html lang="en"><head><meta charset="windows-1252">
<title>Quarterly \x96 report</title><meta name="author" content="Finance team">
<style>p { color: red }</style><script>var secret = "do not index";</script></head>
<body><nav><a href="/">Home</a> <a href="/about">About</a></nav>
<header>Site banner</header>
<main><h1>Results</h1><p>Revenue <b>grew</b>   by 5%.<br>Costs fell.</p>
<ul><li>North</li><li>South <span hidden>hidden text</span></li></ul>
<div>Loose text in a div<p>nested paragraph</p>tail text</div>
<table><tr><th>Region</th><th>Sales</th></tr><tr><td>North</td><td>12</td></tr></table>
<pre>  code   block
  kept</pre></main><footer>Copyright footer</footer></body></html>"""


def test_html_structure_without_boilerplate(well_formed: WellFormed) -> None:
    document = well_formed(parse(HTML, filename="report.html"))
    assert document.media_type == "text/html"
    assert texts(document) == [
        "Results",
        "Revenue grew by 5%.\nCosts fell.",
        "North",
        "South",
        "Loose text in a div",
        "nested paragraph",
        "tail text",
        "Region | Sales",
        "North | 12",
        "code   block\n  kept",
    ]
    assert document.blocks[0].kind == "heading"
    assert [b.location for b in document.blocks if b.kind == "table_row"] == [
        "table 1, row 1",
        "table 1, row 2",
    ]
    assert document.metadata == {
        "title": "Quarterly – report",
        "author": "Finance team",
        "language": "en",
    }
    for boilerplate in ("secret", "Home", "banner", "Copyright", "color", "hidden text"):
        assert boilerplate not in document.text


def test_html_without_visible_text(rejects: Rejects) -> None:
    page = b"<html><head><title>t</title><script>x()</script></head><body> </body></html>"
    rejects(page, "blank.html", EmptyDocument, "blank.html: the HTML page has no visible text")


MARKDOWN = """# Release notes

Version **2.0** adds [search](docs/search.md) and `grep`.
Second line.

Setext heading
--------------

- first item
- second item

| Name | Value |
|------|-------|
| a    | 1     |

```
print("hi")
```
"""


def test_markdown_structure(well_formed: WellFormed) -> None:
    document = well_formed(parse(MARKDOWN.encode(), filename="NOTES.md"))
    assert document.media_type == "text/markdown"
    rows = [(b.kind, b.location, document.block_text(b)) for b in document.blocks]
    assert rows == [
        ("heading", "line 1", "Release notes"),
        ("paragraph", "lines 3-4", "Version 2.0 adds search and grep.\nSecond line."),
        ("heading", "line 6", "Setext heading"),
        ("paragraph", "line 9", "first item"),
        ("paragraph", "line 10", "second item"),
        ("table_row", "line 12", "Name | Value"),
        ("table_row", "line 14", "a | 1"),
        ("paragraph", "lines 16-18", 'print("hi")'),
    ]


def test_scanned_image_is_ocred(tesseract: str, well_formed: WellFormed) -> None:
    image = Image.new("L", (1400, 300), 255)
    font = ImageFont.load_default(size=64)
    ImageDraw.Draw(image).text((40, 100), "Invoice number 4711 paid", fill=0, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    document = well_formed(parse(buffer.getvalue(), filename="scan.png"))
    assert document.media_type == "image/png"
    assert "Invoice number 4711 paid" in document.text
    assert document.blocks[0].location == "page 1"
    assert document.warnings == ("page 1: image, OCR applied",)


def test_image_without_ocr_needs_ocr() -> None:
    buffer = io.BytesIO()
    Image.new("L", (50, 50), 255).save(buffer, format="PNG")
    document = parse(buffer.getvalue(), filename="scan.png", limits=ParseLimits(ocr=False))
    assert document.status == "needs_ocr" and document.blocks == ()
    assert "OCR is off" in document.warnings[0]


def test_truncated_image(rejects: Rejects) -> None:
    buffer = io.BytesIO()
    Image.new("L", (400, 400), 128).save(buffer, format="PNG")
    data = buffer.getvalue()
    limits = ParseLimits(ocr=False)
    rejects(
        data[: len(data) // 2],
        "scan.png",
        CorruptDocument,
        "scan.png: is a truncated or corrupt image",
        limits,
    )


def test_memo_with_header_like_lines_is_plain_text() -> None:
    document = parse(b"Date: 2024-01-01\nAuthor: Finance\n\nMemo text.", filename="memo")
    assert document.media_type == "text/plain"
    assert "Author: Finance" in document.text


def test_markdown_without_text(rejects: Rejects) -> None:
    rejects(
        b"<!-- -->\n\n---\n", "empty.md", EmptyDocument, "empty.md: the Markdown file holds no text"
    )


def test_xhtml(well_formed: WellFormed) -> None:
    page = (
        b'<?xml version="1.0" encoding="utf-8"?>\n<html lang="en">'
        b"<head><title>X</title></head><body><p>Strict markup.</p></body></html>"
    )
    document = well_formed(parse(page, filename="page.xhtml"))
    assert document.media_type == "text/html"
    assert texts(document) == ["Strict markup."]


def test_default_size_cap() -> None:
    cap = ParseLimits().max_bytes
    with pytest.raises(DocumentTooLarge) as caught:
        parse(bytes(cap + 1), filename="dump.bin")
    assert caught.value.detail == "dump.bin: 104,857,601 bytes, over max_bytes=104,857,600"
