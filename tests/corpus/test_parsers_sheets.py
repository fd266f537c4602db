"""Spreadsheets: workbooks built here with openpyxl, xlrd's real .xls/.xlsx samples, CSV."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl
import pytest

from appliance.corpus.parsed import ParsedDocument, ParseLimits
from appliance.corpus.parsers import parse
from appliance.errors import CorruptDocument, DocumentError, DocumentTooLarge, EmptyDocument

WellFormed = Callable[[ParsedDocument], ParsedDocument]
Rejects = Callable[..., DocumentError]


def build_xlsx() -> bytes:
    workbook = openpyxl.Workbook()
    budget = workbook.active
    budget.title = "Budget"
    budget["A1"] = "Budget 2024"
    budget.merge_cells("A1:D1")
    budget.append(["Item", "Amount", "Due", "Paid"])
    budget.append(["Rent", 1200.5, dt.datetime(2024, 3, 1), True])
    budget.append([])
    budget.append([None, 3, None, None])
    notes = workbook.create_sheet("Notes 2024")
    notes["B2"] = "  spaced\ntext  "
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_xlsx_rows_and_ranges(well_formed: WellFormed) -> None:
    document = well_formed(parse(build_xlsx(), filename="budget.xlsx"))
    rows = [(b.kind, b.location, b.page, b.cells, document.block_text(b)) for b in document.blocks]
    assert rows == [
        ("heading", "sheet Budget", 1, None, "Budget"),
        ("table_row", "sheet Budget, row 1", 1, "Budget!A1", "Budget 2024"),
        ("table_row", "sheet Budget, row 2", 1, "Budget!A2:D2", "Item | Amount | Due | Paid"),
        (
            "table_row",
            "sheet Budget, row 3",
            1,
            "Budget!A3:D3",
            "Rent | 1200.5 | 2024-03-01 | TRUE",
        ),
        ("table_row", "sheet Budget, row 5", 1, "Budget!B5", "3"),
        ("heading", "sheet Notes 2024", 2, None, "Notes 2024"),
        ("table_row", "sheet Notes 2024, row 2", 2, "'Notes 2024'!B2", "spaced text"),
    ]
    assert document.metadata["sheets"] == "Budget, Notes 2024"


def test_merged_range_shows_its_value_once(well_formed: WellFormed) -> None:
    """Writers such as LibreOffice keep stale values in hidden merged cells."""
    source = zipfile.ZipFile(io.BytesIO(build_xlsx()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as patched:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                stale = b'<c r="B1" t="inlineStr"><is><t>stale copy</t></is></c>'
                data = re.sub(rb'(<c r="A1".*?</c>)', rb"\1" + stale, data, count=1)
                assert stale in data
            patched.writestr(item, data)
    document = well_formed(parse(buffer.getvalue(), filename="merged.xlsx"))
    assert "stale copy" not in document.text
    assert document.text.count("Budget 2024") == 1


def test_real_xlsx_with_merged_cells(xlrd_samples: Path, well_formed: WellFormed) -> None:
    data = (xlrd_samples / "merged_cells.xlsx").read_bytes()
    document = well_formed(parse(data, filename="merged_cells.xlsx"))
    rows = {b.cells: document.block_text(b) for b in document.blocks if b.kind == "table_row"}
    assert rows["Sheet3!A1:C1"] == "Foo |  | Bar"
    assert rows["Sheet4!C2"] == "Baz"


def test_real_xls_merged_and_unicode(xlrd_samples: Path, well_formed: WellFormed) -> None:
    document = well_formed(parse((xlrd_samples / "Formate.xls").read_bytes(), filename="f.xls"))
    assert document.media_type == "application/vnd.ms-excel"
    rows = {b.cells: document.block_text(b) for b in document.blocks if b.kind == "table_row"}
    assert rows["Blätt1!A2:B2"] == "Äcker | 2005-02-23"
    assert rows["Blätt1!A4:B4"] == "Morgen | 06:34:00"  # a time of day without a date
    assert rows["ÖÄÜ!C3"] == "MERGED CELLS"
    assert document.text.count("MERGED CELLS") == 1
    sheet_pages = {b.location: b.page for b in document.blocks if b.kind == "heading"}
    assert sheet_pages == {"sheet Blätt1": 1, "sheet ÖÄÜ": 2, "sheet Blätt3": 3, "sheet Formate": 4}


def test_old_biff4_worksheet(xlrd_samples: Path, well_formed: WellFormed) -> None:
    data = (xlrd_samples / "biff4_no_format_no_window2.xls").read_bytes()
    document = well_formed(parse(data, filename="old.xls"))
    assert document.media_type == "application/vnd.ms-excel"
    assert sum(b.kind == "table_row" for b in document.blocks) > 10


@pytest.mark.parametrize("name", ["profiles.xls", "reveng1.xlsx"])
def test_truncated_workbooks(xlrd_samples: Path, rejects: Rejects, name: str) -> None:
    data = (xlrd_samples / name).read_bytes()
    rejects(data[: len(data) // 2], name, CorruptDocument, f"{name}: is a ")


def test_too_many_sheets(rejects: Rejects) -> None:
    limits = ParseLimits(max_pages=1)
    rejects(build_xlsx(), "b.xlsx", DocumentTooLarge, "2 sheets, over max_pages=1", limits)


def test_workbook_without_values(rejects: Rejects) -> None:
    buffer = io.BytesIO()
    openpyxl.Workbook().save(buffer)
    rejects(buffer.getvalue(), "blank.xlsx", EmptyDocument, "no cell of the workbook holds a value")


def test_csv_delimiter_encoding_and_quoted_newlines(well_formed: WellFormed) -> None:
    text = 'Name;City;Note\r\nJürgen;Köln;"two\r\nlines"\r\n\r\n;;\r\nZoë;Ærø;ok\r\n'
    document = well_formed(parse(text.encode("cp1252"), filename="people.csv"))
    assert document.media_type == "text/csv"
    assert document.metadata["delimiter"] == ";"
    rows = [(b.location, b.cells, document.block_text(b)) for b in document.blocks]
    assert rows == [
        ("row 1", "A1:C1", "Name | City | Note"),
        ("row 2", "A2:C2", "Jürgen | Köln | two lines"),
        ("row 5", "A5:C5", "Zoë | Ærø | ok"),
    ]


def test_tsv_by_name(well_formed: WellFormed) -> None:
    document = well_formed(parse(b"a,b\tc\n1,2\t3\n", filename="data.tsv"))
    assert [document.block_text(b) for b in document.blocks] == ["a,b | c", "1,2 | 3"]


def test_csv_without_values(rejects: Rejects) -> None:
    rejects(b",,,\n , ,\n", "empty.csv", EmptyDocument, "empty.csv: the CSV file holds no values")


def test_csv_field_over_the_csv_module_limit(rejects: Rejects) -> None:
    data = b"name,notes\nbig," + b"x" * 200_000 + b"\n"
    rejects(
        data, "big.csv", CorruptDocument, "big.csv: cannot be read as CSV near line 2: field larger"
    )


@pytest.mark.filterwarnings("ignore:Print area cannot be set:UserWarning")
def test_real_xlsx_with_escaped_control_characters(
    xlrd_samples: Path, well_formed: WellFormed
) -> None:
    """openpyxl warns about this file's print areas: ordinary warnings, not parse failures."""
    document = well_formed(parse((xlrd_samples / "reveng1.xlsx").read_bytes(), filename="r.xlsx"))
    rows = {b.cells: document.block_text(b) for b in document.blocks if b.kind == "table_row"}
    assert rows["ControlChars!A1"] == "1", "_x0001_ is a control character, dropped"
