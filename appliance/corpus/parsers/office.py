"""Word (.docx) and PowerPoint (.pptx) documents.

The zip container has already passed the bomb checks in :mod:`.sniff` when these run.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from appliance.corpus.parsed import BlockKind, ParsedDocument, TextAssembly
from appliance.corpus.parsers.sniff import DOCX, PPTX
from appliance.corpus.parsers.source import Source
from appliance.errors import DocumentTooLarge, EmptyDocument

_CORE_FIELDS = ("title", "author", "subject", "keywords", "last_modified_by", "category")


def parse_docx(source: Source) -> ParsedDocument:
    """Paragraphs (headings by style), table rows (cells joined " | "), headers, footers.

    Raises:
        CorruptDocument: the package is not a readable Word document.
        EmptyDocument: it holds no text.
    """
    import docx

    try:
        document = docx.Document(io.BytesIO(source.data))
    except Exception as exc:  # PackageNotFoundError, KeyError, XMLSyntaxError, BadZipFile...
        raise source.corrupt("is a corrupt Word document", exc) from None
    assembly = TextAssembly()
    _docx_margin(assembly, document, "header")
    body = _DocxBody(assembly)
    body.add_children(document.element.body, document)
    _docx_margin(assembly, document, "footer")
    if not assembly.blocks:
        raise EmptyDocument(f"{source.name}: the Word document holds no text")
    return assembly.build(DOCX, _core_metadata(document.core_properties))


class _DocxBody:
    """Walks body content in document order, numbering paragraphs and tables for locations."""

    def __init__(self, assembly: TextAssembly) -> None:
        self.assembly = assembly
        self.paragraphs = 0
        self.tables = 0

    def add_children(self, element: Any, parent: Any) -> None:
        from docx.oxml.ns import qn
        from docx.table import Table
        from docx.text.paragraph import Paragraph

        for child in element.iterchildren():
            if child.tag == qn("w:p"):
                self.add_paragraph(Paragraph(child, parent))
            elif child.tag == qn("w:tbl"):
                self.add_table(Table(child, parent))
            elif child.tag == qn("w:sdt"):
                # Content controls (forms, cover pages) wrap ordinary paragraphs and tables.
                for content in child.iterchildren(qn("w:sdtContent")):
                    self.add_children(content, parent)

    def add_paragraph(self, paragraph: Any) -> None:
        self.paragraphs += 1
        kind: BlockKind = "heading" if _is_heading(paragraph) else "paragraph"
        self.assembly.add(kind, paragraph.text, f"paragraph {self.paragraphs}")

    def add_table(self, table: Any) -> None:
        self.tables += 1
        for number, cells in enumerate(table_rows(table), start=1):
            where = f"table {self.tables}, row {number}"
            self.assembly.add("table_row", join_cells(cells), where)


def join_cells(cells: list[str]) -> str:
    """A row's text: cells joined with " | ", empty trailing cells left out."""
    while cells and not cells[-1]:
        cells = cells[:-1]
    return " | ".join(cells)


def table_rows(table: Any) -> Iterator[list[str]]:
    """Cell texts per row; a merged cell's text appears once, in its first row and column."""
    from docx.table import _Cell

    for row in table.rows:
        cells: list[str] = []
        for tc in row._tr.tc_lst:
            if tc.vMerge == "continue":
                cells.append("")
                continue
            cells.append(_cell_text(_Cell(tc, table)))
        if any(cells):
            yield cells


def _cell_text(cell: Any) -> str:
    parts = [" ".join(paragraph.text.split()) for paragraph in cell.paragraphs]
    for nested in cell.tables:
        parts.extend(join_cells(cells) for cells in table_rows(nested))
    return " ".join(part for part in parts if part)


def _is_heading(paragraph: Any) -> bool:
    """Headings by style name or outline level (localised Word names headings differently)."""
    style = paragraph.style
    name = (style.name or "") if style is not None else ""
    if name in ("Title", "Subtitle") or name.lower().startswith("heading"):
        return True
    if paragraph._p.xpath("./w:pPr/w:outlineLvl"):
        return True
    seen = 0
    while style is not None and seen < 10:
        if style.element.xpath("./w:pPr/w:outlineLvl[@w:val<9]"):
            return True
        style, seen = style.base_style, seen + 1
    return False


def _docx_margin(assembly: TextAssembly, document: Any, kind: str) -> None:
    """Headers or footers of every section, each distinct text once."""
    seen: set[str] = set()
    for section in document.sections:
        for part in _margin_parts(section, kind):
            if part.is_linked_to_previous:
                continue
            texts = [paragraph.text for paragraph in part.paragraphs]
            for table in part.tables:
                texts.extend(join_cells(cells) for cells in table_rows(table))
            for text in texts:
                if text.strip() and text not in seen:
                    seen.add(text)
                    assembly.add("header" if kind == "header" else "footer", text, kind)


def _margin_parts(section: Any, kind: str) -> tuple[Any, ...]:
    if kind == "header":
        return (section.first_page_header, section.header, section.even_page_header)
    return (section.first_page_footer, section.footer, section.even_page_footer)


def _core_metadata(core: Any) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for name in _CORE_FIELDS:
        value = getattr(core, name, None)
        if isinstance(value, str) and value.strip():
            metadata[name] = value.strip()
    for name, key in (("created", "created"), ("modified", "modified")):
        value = getattr(core, name, None)
        if value is not None:
            metadata[key] = value.isoformat()
    return metadata


def parse_pptx(source: Source) -> ParsedDocument:
    """Per slide: the title as a heading, text frames, table rows, then the speaker notes.

    Raises:
        CorruptDocument: the package is not a readable presentation.
        DocumentTooLarge: more slides than ``max_pages``.
        EmptyDocument: no slide holds text.
    """
    import pptx

    try:
        presentation = pptx.Presentation(io.BytesIO(source.data))
        slides = list(presentation.slides)
    except Exception as exc:  # PackageNotFoundError, KeyError, XMLSyntaxError, BadZipFile...
        raise source.corrupt("is a corrupt PowerPoint presentation", exc) from None
    if len(slides) > source.limits.max_pages:
        raise DocumentTooLarge(
            f"{source.name}: {len(slides):,} slides, over max_pages={source.limits.max_pages:,}"
        )
    assembly = TextAssembly()
    for number, slide in enumerate(slides, start=1):
        _add_shapes(assembly, slide.shapes, number)
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            if notes is not None:
                assembly.add("paragraph", notes.text, f"slide {number} notes", number)
    if not assembly.blocks:
        raise EmptyDocument(f"{source.name}: no slide of the presentation holds text")
    return assembly.build(PPTX, _core_metadata(presentation.core_properties))


def _add_shapes(assembly: TextAssembly, shapes: Any, number: int) -> None:
    """Shapes in reading order (top to bottom, left to right), groups opened."""
    from pptx.enum.shapes import PP_PLACEHOLDER

    titles = (PP_PLACEHOLDER.TITLE, PP_PLACEHOLDER.CENTER_TITLE, PP_PLACEHOLDER.VERTICAL_TITLE)
    where = f"slide {number}"
    for shape in sorted(shapes, key=lambda s: (s.top or 0, s.left or 0)):
        if getattr(shape, "shapes", None) is not None:
            _add_shapes(assembly, shape.shapes, number)
        elif getattr(shape, "has_table", False) and shape.has_table:
            for cells in _pptx_rows(shape.table):
                assembly.add("table_row", join_cells(cells), where, number)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            title = shape.is_placeholder and shape.placeholder_format.type in titles
            assembly.add("heading" if title else "paragraph", shape.text_frame.text, where, number)


def _pptx_rows(table: Any) -> Iterator[list[str]]:
    for row in table.rows:
        cells = ["" if cell.is_spanned else " ".join(cell.text.split()) for cell in row.cells]
        if any(cells):
            yield cells
