"""Document parsers: bytes in, :class:`~appliance.corpus.parsed.ParsedDocument` out.

``parse`` sniffs the content, hands it to the parser of its family and guarantees that
whatever goes wrong surfaces as one of the document errors of :mod:`appliance.errors`,
with a one-line message naming the file, never a library traceback or document text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from appliance.corpus.parsed import ParsedDocument, ParseLimits
from appliance.corpus.parsers import sniff as media
from appliance.corpus.parsers.source import Source, extension
from appliance.errors import DocumentError, DocumentTooLarge, EmptyDocument, UnsupportedDocument

__all__ = ["SUPPORTED_TYPES", "parse"]

_log = logging.getLogger(__name__)

_IMAGES = ("image/png", "image/jpeg", "image/tiff", "image/bmp", "image/gif")
SUPPORTED_TYPES: frozenset[str] = frozenset(
    {
        media.PDF,
        media.DOCX,
        media.XLSX,
        media.XLSM,
        media.XLS,
        media.PPTX,
        media.CSV,
        media.TSV,
        media.HTML,
        media.MARKDOWN,
        media.TEXT,
        media.EMAIL,
        media.MBOX,
        *_IMAGES,
    }
)
# What a filename extension promises; a mismatch with the content earns a warning.
_PROMISED: dict[str, str] = {
    "pdf": media.PDF,
    "docx": media.DOCX,
    "xlsx": media.XLSX,
    "xlsm": media.XLSM,
    "xls": media.XLS,
    "pptx": media.PPTX,
    "csv": media.CSV,
    "tsv": media.TSV,
    "html": media.HTML,
    "htm": media.HTML,
    "md": media.MARKDOWN,
    "markdown": media.MARKDOWN,
    "txt": media.TEXT,
    "eml": media.EMAIL,
    "mbox": media.MBOX,
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "tif": "image/tiff",
    "tiff": "image/tiff",
}
_DEFAULT_LIMITS = ParseLimits()


def parse(data: bytes, *, filename: str, limits: ParseLimits = _DEFAULT_LIMITS) -> ParsedDocument:
    """Extract the text and structure of one document.

    Args:
        data: The document's bytes.
        filename: The uploader's name for it; a hint for the type and for messages only,
            never opened as a path. The content decides the type.
        limits: Size caps and OCR settings.

    Returns:
        The parsed document; ``status`` is "needs_ocr" when pages without a text layer
        could not be read (a warning says which and why).

    Raises:
        UnsupportedDocument: the detected type is not supported (the message names it).
        CorruptDocument: corrupt or truncated, or binary data under a text name.
        EncryptedDocument: a PDF or Office file that needs a password.
        EmptyDocument: zero bytes, or no text where text was expected.
        DocumentTooLarge: over a size cap (the message names the limit and its value).
    """
    return parse_nested(data, filename, limits, depth=0)


def parse_nested(data: bytes, filename: str, limits: ParseLimits, depth: int) -> ParsedDocument:
    """``parse`` for a document found inside another (an email attachment) at ``depth``."""
    source = Source(data, filename, limits, depth)
    if not data:
        raise EmptyDocument(f"{source.name}: the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise DocumentTooLarge(
            f"{source.name}: {len(data):,} bytes, over max_bytes={limits.max_bytes:,}"
        )
    try:
        detection = media.sniff(source)
        document = _dispatch(source, detection)
    except DocumentError:
        raise
    except MemoryError:
        raise DocumentTooLarge(
            f"{source.name}: too large to parse in the memory available"
        ) from None
    except Exception as exc:  # the last net: no library exception leaves parse()
        _log.debug("parser failed on %s", source.name, exc_info=True)
        raise source.corrupt("could not be parsed", exc) from None
    return _with_name_warning(source, document)


def _dispatch(source: Source, detection: media.Detection) -> ParsedDocument:
    media_type = detection.media_type
    if media_type == media.OCTET_STREAM:
        error = media.corrupt_binary(source, frozenset(_PROMISED))
        if error is not None:
            raise error
    if media_type not in SUPPORTED_TYPES:
        raise UnsupportedDocument(
            f"{source.name}: {media_type} documents are not supported (supported: PDF, Word "
            ".docx, Excel .xlsx/.xls, PowerPoint .pptx, CSV, HTML, Markdown, plain text, "
            "email .eml/.mbox, scanned images)",
            media_type=media_type,
        )
    text = detection.text or ""
    parser = _text_parser(media_type) if detection.text is not None else None
    if parser is not None:
        return parser(source, text, media_type)
    return _binary_parser(source, media_type)


def _text_parser(media_type: str) -> Callable[[Source, str, str], ParsedDocument] | None:
    from appliance.corpus.parsers import email, sheets, text, web

    parsers: dict[str, Callable[[Source, str, str], ParsedDocument]] = {
        media.CSV: sheets.parse_csv,
        media.TSV: sheets.parse_csv,
        media.HTML: web.parse_html,
        media.MARKDOWN: web.parse_markdown,
        media.TEXT: text.parse_text,
        media.EMAIL: email.parse_email,
        media.MBOX: email.parse_mbox,
    }
    return parsers.get(media_type)


def _binary_parser(source: Source, media_type: str) -> ParsedDocument:
    from appliance.corpus.parsers import ocr, office, pdf, sheets

    if media_type == media.PDF:
        return pdf.parse_pdf(source)
    if media_type == media.DOCX:
        return office.parse_docx(source)
    if media_type == media.PPTX:
        return office.parse_pptx(source)
    if media_type in (media.XLSX, media.XLSM):
        return sheets.parse_xlsx(source, media_type)
    if media_type == media.XLS:
        return sheets.parse_xls(source)
    return ocr.parse_image(source, media_type)


def _with_name_warning(source: Source, document: ParsedDocument) -> ParsedDocument:
    ext = extension(source.filename)
    promised = _PROMISED.get(ext)
    if promised is None or promised == document.media_type:
        return document
    note = f"named .{ext} but the content is {document.media_type}; parsed as such"
    return ParsedDocument(
        text=document.text,
        blocks=document.blocks,
        media_type=document.media_type,
        status=document.status,
        metadata=document.metadata,
        warnings=(note, *document.warnings),
    )
