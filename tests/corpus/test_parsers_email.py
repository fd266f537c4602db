"""Email (.eml, .mbox): headers, bodies, attachments parsed recursively, nesting caps."""

from __future__ import annotations

import io
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import openpyxl

from appliance.corpus.parsed import ParsedDocument, ParseLimits
from appliance.corpus.parsers import parse
from appliance.errors import DocumentError, DocumentTooLarge

WellFormed = Callable[[ParsedDocument], ParsedDocument]
Rejects = Callable[..., DocumentError]


def message(subject: str, body: str = "Hello team,\n\nnumbers attached.") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Ana Lyst <ana@example.org>"
    mail["To"] = "team@example.org"
    mail["Subject"] = subject
    mail["Date"] = "Tue, 05 Mar 2024 10:00:00 +0000"
    mail.set_content(body)
    return mail


def xlsx_bytes() -> bytes:
    workbook = openpyxl.Workbook()
    workbook.active.title = "Q1"
    workbook.active.append(["Region", "Sales"])
    workbook.active.append(["North", 12])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_email_with_attachments(pypdf_resources: Path, well_formed: WellFormed) -> None:
    mail = message("Q1 figures")
    mail.add_alternative("<p>Hello <b>team</b>, HTML twin.</p>", subtype="html")
    mail.add_attachment(
        xlsx_bytes(),
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        filename="q1.xlsx",
    )
    crazy = (pypdf_resources / "crazyones.pdf").read_bytes()
    mail.add_attachment(crazy, maintype="application", subtype="pdf", filename="essay.pdf")
    mail.add_attachment(crazy[:3000], maintype="application", subtype="pdf", filename="cut.pdf")
    document = well_formed(parse(bytes(mail), filename="q1.eml"))

    assert document.media_type == "message/rfc822"
    assert document.metadata["subject"] == "Q1 figures"
    assert document.metadata["from"] == "Ana Lyst <ana@example.org>"
    first = document.blocks[0]
    assert (first.kind, first.location) == ("metadata", "headers")
    assert document.block_text(first) == (
        "From: Ana Lyst <ana@example.org>\nTo: team@example.org\nSubject: Q1 figures\n"
        "Date: Tue, 05 Mar 2024 10:00:00 +0000"
    )
    body = [document.block_text(b) for b in document.blocks if b.location.startswith("body")]
    assert body == ["Hello team,", "numbers attached."], "text/plain is preferred"
    row = next(b for b in document.blocks if b.cells == "'Q1'!A2:B2")  # looks like a cell: quoted
    assert (row.location, document.block_text(row)) == (
        "attachment q1.xlsx > sheet Q1, row 2",
        "North | 12",
    )
    essay = [b for b in document.blocks if b.location == "attachment essay.pdf > page 1"]
    assert essay and essay[0].page == 1
    assert "Maybe they have to be crazy." in document.text
    assert document.warnings == (
        "attachment cut.pdf: not read: cut.pdf: is a truncated PDF: it has no %%EOF end marker "
        "(cut short?)",
    )
    assert document.status == "ok"


def test_html_only_email(well_formed: WellFormed) -> None:
    mail = message("Newsletter")
    mail.set_content("<html><body><h1>News</h1><p>Item one</p></body></html>", subtype="html")
    document = well_formed(parse(bytes(mail), filename="news.eml"))
    rows = [(b.kind, b.location, document.block_text(b)) for b in document.blocks[1:]]
    assert rows == [
        ("heading", "body > paragraph 1", "News"),
        ("paragraph", "body > paragraph 2", "Item one"),
    ]


def test_html_part_without_tags() -> None:
    mail = message("Short")
    mail.set_content("see report.pdf", subtype="html")
    assert "see report.pdf" in parse(bytes(mail), filename="short.eml").text


def test_legacy_charset_body() -> None:
    raw = (
        b"From: a@example.org\nTo: b@example.org\nSubject: =?iso-8859-1?q?Gr=FC=DFe?=\n"
        b"MIME-Version: 1.0\nContent-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: 8bit\n\nViele Gr\xfc\xdfe aus K\xf6ln\n"
    )
    document = parse(raw, filename="old.eml")
    assert document.metadata["subject"] == "Grüße"
    assert "Viele Grüße aus Köln" in document.text


def nested(levels: int) -> bytes:
    """Message 0 carries message 1 as an attachment, which carries message 2..."""
    inner = message(f"level {levels}", f"body of level {levels}")
    for level in range(levels - 1, -1, -1):
        outer = message(f"level {level}", f"body of level {level}")
        outer.add_attachment(inner)
        inner = outer
    return bytes(inner)


def test_nesting_beyond_max_email_depth_is_cut(well_formed: WellFormed) -> None:
    document = well_formed(parse(nested(8), filename="chain.eml"))
    bodies = [document.block_text(b) for b in document.blocks if "body" in b.location]
    assert bodies == [f"body of level {level}" for level in range(6)]
    deepest = next(b for b in document.blocks if document.block_text(b) == "body of level 5")
    assert deepest.location == " > ".join(["attachment part 1"] * 5) + " > body, line 1"
    assert len(document.warnings) == 1
    assert document.warnings[0].endswith("nested deeper than max_email_depth=5, not read")


def test_smaller_depth_limit() -> None:
    document = parse(nested(3), filename="chain.eml", limits=ParseLimits(max_email_depth=1))
    assert "body of level 1" in document.text
    assert "body of level 2" not in document.text
    assert "max_email_depth=1" in document.warnings[0]


def test_absurdly_deep_mime_is_refused(rejects: Rejects) -> None:
    # Built by hand: the stdlib generator cannot write this deep either.
    inner = "Content-Type: text/plain\r\n\r\nbottom\r\n"
    for level in range(3000):
        inner = (
            f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'
            f"{inner}\r\n--b{level}--\r\n"
        )
    data = ("From: a@example.org\r\nTo: b@example.org\r\nSubject: deep\r\n" + inner).encode()
    rejects(data, "deep.eml", DocumentTooLarge, "deep.eml: MIME parts nested too deeply")


def test_mbox(well_formed: WellFormed) -> None:
    first = bytes(message("First", "One.\n>From the archive, escaped."))
    second = bytes(message("Second", "Two."))
    data = b"From ana@example.org Tue Mar  5 10:00:00 2024\n" + first + b"\n"
    data += b"From ana@example.org Tue Mar  5 11:00:00 2024\n" + second + b"\n"
    document = well_formed(parse(data, filename="inbox.mbox"))
    assert document.media_type == "application/mbox"
    assert document.metadata == {"messages": "2"}
    headers = [b for b in document.blocks if b.kind == "metadata"]
    assert [b.location for b in headers] == ["message 1 > headers", "message 2 > headers"]
    assert "Subject: Second" in document.block_text(headers[1])
    assert "From the archive, escaped." in document.text
    assert ">From" not in document.text
