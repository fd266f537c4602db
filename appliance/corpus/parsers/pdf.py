"""PDF: text per page in paragraph-ish blocks, OCR for pages without a text layer.

PDFium (through pypdfium2) extracts the text: it is fast, tolerant of broken files, and opens
"encrypted" PDFs whose user password is empty by itself. Lines are grouped into paragraphs
from their geometry; running headers and footers repeated across pages are marked as such.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field, replace
from statistics import median
from typing import TYPE_CHECKING, Any, Literal

from appliance.corpus.parsed import ParsedDocument, TextAssembly
from appliance.corpus.parsers.ocr import OCR_DPI, OcrFailed, Tesseract, find_tesseract
from appliance.corpus.parsers.ocr import ocr_paragraphs as split_ocr
from appliance.corpus.parsers.sniff import PDF
from appliance.corpus.parsers.source import Source
from appliance.errors import DocumentTooLarge, EmptyDocument, EncryptedDocument

if TYPE_CHECKING:
    from PIL.Image import Image

# PDFium forbids concurrent calls from different threads, even on different documents, so
# the lock must be process-wide: a lock per parser would not protect the library.
_PDFIUM_LOCK = threading.Lock()

_PASSWORD_ERROR = 4
_SECURITY_ERROR = 5
_IMAGE_OBJECT = 3
_BOLD = 600
# A page with fewer characters than this and a page-sized image is a scan with a stamp.
_STAMP_CHARS = 20
_LINE_BREAK = re.compile(r"[^\r\n]+")
_DIGITS = re.compile(r"\d+")
_PDF_DATE = re.compile(r"D:(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?(Z|[+-]\d\d'?\d\d'?)?")
_METADATA_KEYS = {
    "Title": "title",
    "Author": "author",
    "Subject": "subject",
    "Keywords": "keywords",
    "Creator": "creator",
    "Producer": "producer",
    "CreationDate": "created",
    "ModDate": "modified",
}

Kind = Literal["heading", "paragraph", "header", "footer"]


@dataclass(slots=True)
class _Line:
    text: str
    top: float
    bottom: float
    bold: bool = False

    @property
    def height(self) -> float:
        return max(self.top - self.bottom, 0.1)


@dataclass(slots=True)
class _Paragraph:
    lines: list[_Line]
    kind: Kind = "paragraph"

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass(slots=True)
class _Page:
    number: int
    height: float
    paragraphs: list[_Paragraph] = field(default_factory=list)
    needs_ocr: bool = False


def parse_pdf(source: Source) -> ParsedDocument:
    """Extract a PDF's text page by page.

    Raises:
        EncryptedDocument: a user password is needed (the empty one was tried).
        CorruptDocument: not readable as a PDF, or cut short (no end-of-file marker).
        DocumentTooLarge: more pages than ``max_pages``.
        EmptyDocument: no page holds text, and none needs OCR.
    """
    # Some writers pad files with NULs after the marker; a cut file has no marker at all.
    if b"%%EOF" not in source.data[-(1 << 20) :].rstrip(b"\x00\t\n\r\f ")[-4096:]:
        raise source.corrupt("is a truncated PDF: it has no %%EOF end marker (cut short?)")
    assembly = TextAssembly()
    with _PDFIUM_LOCK:
        document = _open(source)
    try:
        with _PDFIUM_LOCK:
            count = len(document)
            metadata = _metadata(document)
        if count > source.limits.max_pages:
            raise DocumentTooLarge(
                f"{source.name}: {count:,} pages, over max_pages={source.limits.max_pages:,}"
            )
        pages = _read_pages(source, document, count, assembly)
    finally:
        with _PDFIUM_LOCK:
            document.close()
    _mark_running_heads(pages)
    for page in pages:
        for paragraph in page.paragraphs:
            assembly.add(paragraph.kind, paragraph.text, f"page {page.number}", page.number)
    status: Literal["ok", "needs_ocr"] = (
        "needs_ocr" if any(page.needs_ocr for page in pages) else "ok"
    )
    if not assembly.blocks and status == "ok":
        raise EmptyDocument(f"{source.name}: the PDF has no text on any of its {count} pages")
    return assembly.build(PDF, metadata, status)


def _open(source: Source) -> Any:
    import pypdfium2

    try:
        return pypdfium2.PdfDocument(source.data)
    except pypdfium2.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == _PASSWORD_ERROR:
            raise EncryptedDocument(
                f"{source.name}: the PDF is encrypted and needs a password (the empty password "
                "did not open it); remove the password and upload it again"
            ) from None
        if code == _SECURITY_ERROR:
            raise EncryptedDocument(
                f"{source.name}: the PDF uses an unsupported encryption scheme; save an "
                "unencrypted copy and upload that"
            ) from None
        raise source.corrupt("is not a readable PDF", exc) from None


def _metadata(document: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in document.get_metadata_dict(skip_empty=True).items():
        name = _METADATA_KEYS.get(key)
        if name and value.strip():
            found[name] = _iso_date(value) if key.endswith("Date") else value.strip()
    return found


def _iso_date(value: str) -> str:
    """PDF dates ("D:20150604133406-06'00'") as ISO 8601; anything else as given."""
    match = _PDF_DATE.match(value.strip())
    if not match:
        return value.strip()
    year, month, day, hour, minute, second, zone = match.groups()
    text = f"{year}-{month or '01'}-{day or '01'}"
    if hour:
        text += f"T{hour}:{minute or '00'}:{second or '00'}"
        if zone == "Z":
            text += "Z"
        elif zone:
            digits = zone.replace("'", "")
            text += f"{digits[:3]}:{digits[3:5]}"
    return text


def _read_pages(source: Source, document: Any, count: int, assembly: TextAssembly) -> list[_Page]:
    pages: list[_Page] = []
    tesseract: Tesseract | str | None = None
    for number in range(1, count + 1):
        try:
            with _PDFIUM_LOCK:
                page = _read_page(document, number)
        except Exception as exc:  # pypdfium2 raises PdfiumError and ctypes errors per page
            assembly.warn(f"page {number}: unreadable, skipped ({type(exc).__name__})")
            continue
        if page.needs_ocr:
            if tesseract is None:
                tesseract = find_tesseract(source.limits)
            page = _ocr(document, page, tesseract, assembly)
        pages.append(page)
    return pages


def _read_page(document: Any, number: int) -> _Page:
    """Lines with their vertical extent, grouped into paragraphs (call under the lock)."""
    pdf_page = document[number - 1]
    textpage = pdf_page.get_textpage()
    try:
        page = _Page(number, float(pdf_page.get_height()))
        lines = _lines(textpage)
        characters = sum(len(line.text.strip()) for line in lines)
        if characters < _STAMP_CHARS and _looks_scanned(pdf_page, characters):
            page.needs_ocr = True
            return page
        page.paragraphs = _paragraphs(lines)
        return page
    finally:
        textpage.close()
        pdf_page.close()


def _lines(textpage: Any) -> list[_Line]:
    import pypdfium2.raw as pdfium_c

    raw = textpage.get_text_range()
    # Offsets into the text are UTF-16 code units; Python counts code points.
    wide = any(ord(char) > 0xFFFF for char in raw)
    lines: list[_Line] = []
    for match in _LINE_BREAK.finditer(raw):
        text = match.group().replace("\x02", "-").rstrip()
        stripped = text.lstrip()
        if not stripped:
            continue
        offset = match.start() + len(text) - len(stripped)
        if wide:
            offset = len(raw[:offset].encode("utf-16-le")) // 2
        index = pdfium_c.FPDFText_GetCharIndexFromTextIndex(textpage, offset)
        box = pdfium_c.FS_RECTF()
        line = _Line(
            stripped, lines[-1].bottom if lines else 0.0, lines[-1].bottom if lines else 0.0
        )
        if index >= 0 and pdfium_c.FPDFText_GetLooseCharBox(textpage, index, box):
            line.top, line.bottom = float(box.top), float(box.bottom)
            line.bold = pdfium_c.FPDFText_GetFontWeight(textpage, index) >= _BOLD
        lines.append(line)
    return lines


def _looks_scanned(pdf_page: Any, characters: int) -> bool:
    """A page without text but with something drawn, or a page-sized image with a stamp."""
    import pypdfium2.raw as pdfium_c

    objects = pdfium_c.FPDFPage_CountObjects(pdf_page)
    if characters == 0:
        return bool(objects > 0)
    area = float(pdf_page.get_width()) * float(pdf_page.get_height())
    for item in pdf_page.get_objects(filter=(_IMAGE_OBJECT,), max_depth=2):
        left, bottom, right, top = item.get_bounds()
        if (right - left) * (top - bottom) >= 0.5 * area:
            return True
    return False


def _paragraphs(lines: list[_Line]) -> list[_Paragraph]:
    """Group lines: a wider gap than usual, a jump upwards or a change of size starts anew."""
    if not lines:
        return []
    gaps = [a.bottom - b.top for a, b in itertools.pairwise(lines)]
    usual = [
        gap for gap, line in zip(gaps, lines, strict=False) if -line.height < gap < line.height
    ]
    usual_gap = median(usual) if usual else 0.0
    body = median(line.height for line in lines)
    paragraphs = [_Paragraph([lines[0]])]
    for gap, line in zip(gaps, lines[1:], strict=False):
        previous = paragraphs[-1].lines[-1]
        small = min(line.height, previous.height)
        resized = abs(line.height - previous.height) > 0.15 * small
        if gap > usual_gap + 0.4 * small or gap < -0.5 * small or resized:
            paragraphs.append(_Paragraph([line]))
        else:
            paragraphs[-1].lines.append(line)
    mostly_bold = sum(line.bold for line in lines) > len(lines) / 2
    for paragraph in paragraphs:
        if _is_heading(paragraph, body, mostly_bold):
            paragraph.kind = "heading"
    return paragraphs


def _is_heading(paragraph: _Paragraph, body: float, mostly_bold: bool) -> bool:
    """Short and either set larger than the page's body text, or bold among regular text."""
    text = paragraph.text
    if len(paragraph.lines) > 3 or len(text) > 200 or text.rstrip().endswith((".", ",", ";")):
        return False
    if max(line.height for line in paragraph.lines) >= 1.25 * body:
        return True
    return (
        not mostly_bold and len(paragraph.lines) <= 2 and all(line.bold for line in paragraph.lines)
    )


def _ocr(document: Any, page: _Page, tesseract: Tesseract | str, assembly: TextAssembly) -> _Page:
    if isinstance(tesseract, str):
        assembly.warn(f"page {page.number}: no text layer, not read: {tesseract}")
        return page
    with _PDFIUM_LOCK:
        image = _render(document, page.number)
    try:
        text = tesseract.read(image)
    except OcrFailed as exc:
        assembly.warn(f"page {page.number}: no text layer and OCR failed: {exc}")
        return page
    paragraphs = [_Paragraph([_Line(part, 0.0, 0.0)]) for part in split_ocr(text)]
    assembly.warn(f"page {page.number}: no text layer, OCR applied")
    return replace(page, paragraphs=paragraphs, needs_ocr=False)


def _render(document: Any, number: int) -> Image:
    from appliance.corpus.parsers.ocr import MAX_OCR_PIXELS

    pdf_page = document[number - 1]
    try:
        width, height = pdf_page.get_size()
        scale = OCR_DPI / 72
        pixels = width * height * scale * scale
        if pixels > MAX_OCR_PIXELS:
            scale *= (MAX_OCR_PIXELS / pixels) ** 0.5
        bitmap = pdf_page.render(scale=scale, grayscale=True)
        try:
            # to_pil() shares PDFium's buffer; the copy outlives the bitmap.
            image: Image = bitmap.to_pil().copy()
        finally:
            bitmap.close()
        return image
    finally:
        pdf_page.close()


def _mark_running_heads(pages: list[_Page]) -> None:
    """Mark paragraphs at a page edge repeated on most pages (digits aside) as header/footer.

    PDFs store text in drawing order, so a footer may come right after the header: the first
    and last two paragraphs of each page are candidates, placed by their position.
    """
    if len(pages) < 3:
        return
    candidates = [_edge_paragraphs(page) for page in pages]
    seen: dict[str, int] = {}
    for found in candidates:
        for key in {key for key, _, _ in found}:
            seen[key] = seen.get(key, 0) + 1
    threshold = max(3, len(pages) // 2)
    for found in candidates:
        for key, paragraph, kind in found:
            if seen[key] >= threshold:
                paragraph.kind = kind


def _edge_paragraphs(page: _Page) -> list[tuple[str, _Paragraph, Kind]]:
    """(text with digits masked, paragraph, header or footer) for short edge paragraphs."""
    ends = page.paragraphs[:2] + page.paragraphs[2:][-2:]
    found: list[tuple[str, _Paragraph, Kind]] = []
    for paragraph in ends:
        if len(paragraph.lines) > 2:
            continue
        kind: Kind
        if paragraph.lines[0].top > 0.85 * page.height:
            kind = "header"
        elif 0 < paragraph.lines[-1].bottom < 0.15 * page.height:
            kind = "footer"
        else:
            continue
        found.append((_DIGITS.sub("#", " ".join(paragraph.text.split()).lower()), paragraph, kind))
    return found
