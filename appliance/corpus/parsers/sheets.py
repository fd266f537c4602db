"""Spreadsheets: a block per non-empty row, located by sheet and cell range.

A row block's text is its cells from the first to the last non-empty one, joined with
" | "; a merged range shows its value once, in its top-left cell.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

from appliance.corpus.parsed import ParsedDocument, TextAssembly
from appliance.corpus.parsers.sniff import TSV, XLS
from appliance.corpus.parsers.source import Source
from appliance.errors import CorruptDocument, DocumentTooLarge, EmptyDocument, EncryptedDocument

_MERGE = re.compile(rb"<(?:\w+:)?mergeCell\s[^>]*?ref=\"([A-Z]+[0-9]+):([A-Z]+[0-9]+)\"")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_OOXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_CHUNK = 1 << 20
_CSV_SAMPLE = 64 * 1024


def column_letter(index: int) -> str:
    """1 -> "A", 27 -> "AA"."""
    letters = ""
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def cell_range(sheet: str | None, row: int, first: int, last: int) -> str:
    """ "Budget!A3:D3" (sheet names needing it are quoted as Excel does)."""
    span = f"{column_letter(first)}{row}"
    if last != first:
        span += f":{column_letter(last)}{row}"
    if sheet is None:
        return span
    if not re.fullmatch(r"[^\W\d][\w.]*", sheet) or re.fullmatch(r"[A-Za-z]{1,3}\d+", sheet):
        sheet = "'" + sheet.replace("'", "''") + "'"
    return f"{sheet}!{span}"


def cell_text(value: Any) -> str:
    """A cell value as people see it: whole floats without ".0", dates in ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return f"{value:.15g}"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(_CONTROL.sub("", str(value)).split())


def add_rows(
    assembly: TextAssembly,
    rows: Iterable[Sequence[str]],
    *,
    sheet: str | None,
    page: int | None,
) -> None:
    """Row blocks for rows of cell texts (row 1 first); blank rows are skipped."""
    prefix = f"sheet {sheet}, " if sheet is not None else ""
    for number, cells in enumerate(rows, start=1):
        filled = [index for index, text in enumerate(cells) if text]
        if not filled:
            continue
        first, last = filled[0], filled[-1]
        assembly.add(
            "table_row",
            " | ".join(cells[first : last + 1]),
            f"{prefix}row {number}",
            page,
            cell_range(sheet, number, first + 1, last + 1),
        )


def parse_xlsx(source: Source, media_type: str) -> ParsedDocument:
    """Excel 2007+ workbooks, streamed in openpyxl's read-only mode with cached values.

    Raises:
        CorruptDocument: not a readable workbook.
        DocumentTooLarge: more sheets than ``max_pages``.
        EmptyDocument: no cell holds a value.
    """
    import openpyxl

    assembly = TextAssembly()
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(source.data), read_only=True, data_only=True)
    except Exception as exc:  # InvalidFileException, KeyError, XMLSyntaxError, BadZipFile...
        raise source.corrupt("is a corrupt Excel workbook", exc) from None
    try:
        sheets = workbook.worksheets
        _check_sheet_count(source, len(sheets))
        for index, sheet in enumerate(sheets, start=1):
            assembly.add("heading", sheet.title, f"sheet {sheet.title}", index)
            hidden = _merged_hidden_cells(sheet)
            # Dimensions recorded in the file are often wrong; read what is really there.
            sheet.reset_dimensions()
            rows = (
                [
                    "" if (row, column) in hidden else cell_text(_unescape(value))
                    for column, value in enumerate(values, start=1)
                ]
                for row, values in enumerate(sheet.iter_rows(values_only=True), start=1)
            )
            add_rows(assembly, rows, sheet=sheet.title, page=index)
        metadata = _xlsx_metadata(workbook)
    except DocumentTooLarge:
        raise
    except Exception as exc:  # a sheet's XML can be broken while the package opens
        raise source.corrupt("is a corrupt Excel workbook", exc) from None
    finally:
        workbook.close()
    _require_values(source, assembly)
    return assembly.build(media_type, metadata)


def _unescape(value: Any) -> Any:
    """OOXML writes characters XML cannot hold as "_xHHHH_"; openpyxl leaves them so."""
    if isinstance(value, str) and "_x" in value:
        return _OOXML_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), value)
    return value


def _merged_hidden_cells(sheet: Any) -> set[tuple[int, int]]:
    """(row, column) of merged cells other than each range's top-left one.

    Read-only worksheets do not expose merged ranges, so the ``mergeCell`` elements are found
    by a byte scan of the sheet's XML stream; files written by LibreOffice keep stale values
    in the hidden cells, which would otherwise show up as repeated garbage.
    """
    from openpyxl.utils.cell import coordinate_to_tuple

    open_source = getattr(sheet, "_get_source", None)
    if open_source is None:
        return set()
    hidden: set[tuple[int, int]] = set()
    tail = b""
    with open_source() as stream:
        while chunk := stream.read(_CHUNK):
            data = tail + chunk
            for match in _MERGE.finditer(data):
                (top, left), (bottom, right) = (
                    coordinate_to_tuple(match.group(1).decode()),
                    coordinate_to_tuple(match.group(2).decode()),
                )
                if (bottom - top + 1) * (right - left + 1) > 1_000_000:
                    continue  # a whole-column merge: marking it cell by cell costs too much
                hidden.update(
                    (row, column)
                    for row in range(top, bottom + 1)
                    for column in range(left, right + 1)
                    if (row, column) != (top, left)
                )
            tail = data[-200:]
    return hidden


def _xlsx_metadata(workbook: Any) -> dict[str, str]:
    properties = workbook.properties
    metadata: dict[str, str] = {}
    for name, key in (("title", "title"), ("creator", "author"), ("subject", "subject")):
        value = getattr(properties, name, None)
        if isinstance(value, str) and value.strip():
            metadata[key] = value.strip()
    metadata["sheets"] = ", ".join(sheet.title for sheet in workbook.worksheets)
    return metadata


def _check_sheet_count(source: Source, count: int) -> None:
    if count > source.limits.max_pages:
        raise DocumentTooLarge(
            f"{source.name}: {count:,} sheets, over max_pages={source.limits.max_pages:,}"
        )


def _require_values(source: Source, assembly: TextAssembly) -> None:
    if not any(block.kind == "table_row" for block in assembly.blocks):
        raise EmptyDocument(f"{source.name}: no cell of the workbook holds a value")


def parse_xls(source: Source) -> ParsedDocument:
    """Excel 97-2003 workbooks (BIFF) through xlrd.

    Raises:
        EncryptedDocument: the workbook is password-protected.
        CorruptDocument: not a readable workbook.
        DocumentTooLarge: more sheets than ``max_pages``.
        EmptyDocument: no cell holds a value.
    """
    book = _open_xls(source)
    assembly = TextAssembly()
    try:
        _check_sheet_count(source, book.nsheets)
        for index in range(book.nsheets):
            sheet = book.sheet_by_index(index)
            assembly.add("heading", sheet.name, f"sheet {sheet.name}", index + 1)
            add_rows(assembly, _xls_rows(book, sheet), sheet=sheet.name, page=index + 1)
            book.unload_sheet(index)
        metadata = {"sheets": ", ".join(book.sheet_names())}
        if book.user_name:
            metadata["author"] = str(book.user_name)
    except DocumentTooLarge:
        raise
    except Exception as exc:  # XLRDError and struct errors on a damaged sheet
        raise source.corrupt("is a corrupt Excel 97-2003 workbook", exc) from None
    finally:
        book.release_resources()
    _require_values(source, assembly)
    return assembly.build(XLS, metadata)


def _open_xls(source: Source) -> Any:
    import xlrd

    log = io.StringIO()  # xlrd writes its warnings to stdout unless given a log file
    try:
        return xlrd.open_workbook(
            file_contents=source.data, formatting_info=True, on_demand=True, logfile=log
        )
    except xlrd.XLRDError as exc:
        if "encrypted" in str(exc).lower():
            raise EncryptedDocument(
                f"{source.name}: the Excel workbook is password-protected; remove the "
                "password and upload it again"
            ) from None
        raise source.corrupt("is a corrupt Excel 97-2003 workbook", exc) from None
    except Exception as exc:  # CompDocError, struct.error, IndexError on truncated files
        raise source.corrupt("is a corrupt Excel 97-2003 workbook", exc) from None


def _xls_rows(book: Any, sheet: Any) -> Iterable[list[str]]:
    import xlrd

    hidden: set[tuple[int, int]] = set()
    for top, bottom, left, right in sheet.merged_cells:
        hidden.update(
            (row, column)
            for row in range(top, bottom)
            for column in range(left, right)
            if (row, column) != (top, left)
        )
    for row in range(sheet.nrows):
        cells: list[str] = []
        for column, cell in enumerate(sheet.row(row)):
            if (row, column) in hidden:
                cells.append("")
            elif cell.ctype == xlrd.XL_CELL_DATE:
                cells.append(_xls_date(cell.value, book.datemode))
            elif cell.ctype == xlrd.XL_CELL_BOOLEAN:
                cells.append("TRUE" if cell.value else "FALSE")
            elif cell.ctype == xlrd.XL_CELL_ERROR:
                cells.append(xlrd.error_text_from_code.get(cell.value, "#ERROR"))
            else:
                cells.append(cell_text(cell.value))
        yield cells


def _xls_date(value: float, datemode: int) -> str:
    import xlrd

    try:
        moment = xlrd.xldate.xldate_as_datetime(value, datemode)
        # Serial numbers below 1 are times of day without a date.
        return cell_text(moment.time() if 0 <= value < 1 else moment)
    except (xlrd.xldate.XLDateError, ValueError, OverflowError):
        return cell_text(value)


def parse_csv(source: Source, text: str, media_type: str) -> ParsedDocument:
    """Comma, semicolon, tab or pipe separated values; the delimiter is detected.

    Raises:
        CorruptDocument: malformed beyond what the csv module accepts.
        EmptyDocument: no field holds a value.
    """
    text = text.replace("\x00", "")
    delimiter = "\t" if media_type == TSV else _delimiter(text[:_CSV_SAMPLE])
    assembly = TextAssembly()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        add_rows(
            assembly, ([cell_text(cell) for cell in row] for row in reader), sheet=None, page=None
        )
    except csv.Error as exc:
        # The csv module's messages name limits and quoting rules, never field contents.
        raise CorruptDocument(
            f"{source.name}: cannot be read as CSV near line {reader.line_num}: {exc}"
        ) from None
    if not assembly.blocks:
        raise EmptyDocument(f"{source.name}: the CSV file holds no values")
    return assembly.build(media_type, {"delimiter": delimiter})


def _delimiter(sample: str) -> str:
    """The csv module's sniffer; failing that, the candidate most lines agree on."""
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        pass
    lines = [line for line in sample.splitlines()[:50] if line.strip()]
    best, best_agreement = ",", 0
    for candidate in ",;\t|":
        counts = [line.count(candidate) for line in lines if candidate in line]
        if counts:
            usual = max(set(counts), key=counts.count)
            agreement = counts.count(usual)
            if agreement > best_agreement:
                best, best_agreement = candidate, agreement
    return best
