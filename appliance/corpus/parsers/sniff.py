"""Content sniffing: what a document really is, whatever its name says.

The filename hint only chooses between text dialects (Markdown, CSV, plain) and names the
file in messages; a PDF called ``notes.txt`` is parsed as a PDF. Zip containers are checked
for bombs here, before any office library opens them.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zipfile
from dataclasses import dataclass

from appliance.corpus.parsers.source import Source, extension
from appliance.errors import CorruptDocument, DocumentTooLarge, EncryptedDocument

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSM = "application/vnd.ms-excel.sheet.macroEnabled.12"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLS = "application/vnd.ms-excel"
HTML = "text/html"
MARKDOWN = "text/markdown"
CSV = "text/csv"
TSV = "text/tab-separated-values"
TEXT = "text/plain"
EMAIL = "message/rfc822"
MBOX = "application/mbox"
OCTET_STREAM = "application/octet-stream"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\x7fELF", "application/x-executable"),
    (b"{\\rtf", "application/rtf"),
    (b"%!PS", "application/postscript"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"fLaC", "audio/flac"),
    # Excel 2.x-4.x worksheets are bare BIFF streams opening with a BOF record.
    (b"\x09\x02\x06\x00", XLS),
    (b"\x09\x04\x06\x00", XLS),
    (b"\x09\x00\x04\x00", XLS),
    (b"ID3", "audio/mpeg"),
    (b"OggS", "audio/ogg"),
)
_PDF_HEADER = re.compile(rb"%PDF-\d")
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE_STREAMS: tuple[tuple[str, str], ...] = (
    ("Workbook", XLS),
    ("Book", XLS),
    ("WordDocument", "application/msword"),
    ("PowerPoint Document", "application/vnd.ms-powerpoint"),
    ("__properties_version1.0", "application/vnd.ms-outlook"),
)
_OOXML_MAIN = {
    "word/document.xml": {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": DOCX,
        "application/vnd.ms-word.document.macroEnabled.main+xml": (
            "application/vnd.ms-word.document.macroEnabled.12"
        ),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml": (
            "application/vnd.openxmlformats-officedocument.wordprocessingml.template"
        ),
    },
    "xl/workbook.xml": {
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": XLSX,
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml": XLSM,
    },
    "ppt/presentation.xml": {
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml": PPTX,
    },
}
_HEADER_LINE = re.compile(r"^[!-9;-~]+:")
_MAIL_HEADERS = frozenset(
    {"from", "to", "subject", "date", "message-id", "received", "mime-version", "return-path"}
)
_HTML_START = re.compile(r"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.I | re.S)
_HTML_TAG = re.compile(r"<(html|head|body|p|div|table|h[1-6]|ul|ol|br)\b[^>]*>", re.I)
# Controls other than tab, newline, form feed and carriage return; ESC is allowed for logs.
_BINARY_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f\ufffd]")
_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_TEXT_HINTS = {"md": MARKDOWN, "markdown": MARKDOWN, "mdown": MARKDOWN, "csv": CSV, "tsv": TSV}
_CT_MAX_BYTES = 1 << 20
_OVERRIDE = re.compile(r"<(?:\w+:)?Override\b[^>]*>")
_ATTRIBUTE = re.compile(r"(\w+)\s*=\s*[\"']([^\"']*)[\"']")


@dataclass(frozen=True, slots=True)
class Detection:
    """What sniffing found: the media type, and the decoded text for text types."""

    media_type: str
    text: str | None = None


def sniff(source: Source) -> Detection:
    """Detect the media type of ``source.data`` from its content.

    Raises:
        CorruptDocument: a broken container, or binary data named as a supported type.
        DocumentTooLarge: a zip container over the unpacked size or ratio caps.
        EncryptedDocument: a password-protected Office file.
    """
    data = source.data
    # The header may follow up to 1 KB of junk (mail or HTTP leftovers), as readers allow.
    if _PDF_HEADER.search(data[:1024]):
        return Detection(PDF)
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return Detection(_sniff_zip(source))
    if data.startswith(_OLE_MAGIC):
        return Detection(_sniff_ole(source))
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return Detection(media_type)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return Detection("image/webp")
    if (
        data.startswith(b"BM")
        and len(data) > 26
        and int.from_bytes(data[2:6], "little") == len(data)
    ):
        return Detection("image/bmp")
    text = decode_text(data)
    if text is None:
        return Detection(OCTET_STREAM)
    return Detection(_text_type(text, extension(source.filename)), text)


def decode_text(data: bytes) -> str | None:
    """Decode text in whatever encoding it uses; None when the bytes are not text."""
    text: str | None = None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text = data.decode(encoding, errors="replace")
            break
    else:
        if b"\x00" not in data[:4096]:
            with contextlib.suppress(UnicodeDecodeError):
                text = data.decode("utf-8")
        if text is None:
            text = _detected_text(data)
    if text is None:
        return None
    sample = text[:65536]
    if sample and len(_BINARY_CHARS.findall(sample)) > max(2, len(sample) // 100):
        return None
    return text


def _detected_text(data: bytes) -> str | None:
    """Text in the encoding charset-normalizer finds, Windows-1252 winning near-ties.

    On short Western European texts the detector often ranks DOS and Mac code pages (cp775,
    cp850) above Windows-1252, turning "Jürgen" into "J³rgen"; Windows-1252 is by far the
    likelier encoding of such a file when it decodes it as cleanly.
    """
    import charset_normalizer

    results = charset_normalizer.from_bytes(data)
    best = results.best()
    if best is None:
        return None
    western = next((match for match in results if match.encoding == "cp1252"), None)
    if western is None or western.chaos > best.chaos + 0.01:
        return str(best)
    legacy = best.encoding.startswith(("cp4", "cp7", "cp8", "mac_"))
    if legacy or western.coherence >= best.coherence - 0.1:
        return str(western)
    return str(best)


def _text_type(text: str, ext: str) -> str:
    head = text[:4096].lstrip("\ufeff")
    if _HTML_START.match(head) or (ext in ("html", "htm", "xhtml") and _HTML_TAG.search(head)):
        return HTML
    stripped = head.lstrip()
    if stripped.startswith("<?xml"):
        return HTML if re.search(r"<html\b", head, re.I) else "application/xml"
    if stripped.startswith("<svg"):
        return "image/svg+xml"
    if head.startswith("From ") and _looks_like_headers(head.split("\n", 1)[-1]):
        return MBOX
    if _looks_like_headers(head):
        return EMAIL
    return _TEXT_HINTS.get(ext, TEXT)


def _looks_like_headers(head: str) -> bool:
    """True when the text opens with an RFC 5322 header block with a sender and more."""
    names: set[str] = set()
    for line in head.splitlines():
        if not line.strip():
            break
        if line[0] in " \t" and names:
            continue
        if not _HEADER_LINE.match(line):
            return False
        names.add(line.split(":", 1)[0].lower())
    # A memo opening "Date: ... / Author: ..." is not mail; a sender and one more field are.
    return "from" in names and len(names & _MAIL_HEADERS) >= 2


def _sniff_zip(source: Source) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(source.data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise source.corrupt("is a truncated or corrupt zip container", exc) from None
    check_zip_limits(source, entries)
    # Some writers use backslashes or odd case in part names; the office libraries will
    # then refuse the file, but it is still reported as the Office file it claims to be.
    names = {entry.filename.replace("\\", "/").lower(): entry for entry in entries}
    for part, types in _OOXML_MAIN.items():
        if part in names:
            content_type = _ooxml_content_type(source, archive, names, part)
            return types.get(content_type, next(iter(types.values())))
    if "mimetype" in names:
        return _odf_type(source.data)
    return "application/zip"


def _odf_type(data: bytes) -> str:
    """OpenDocument and EPUB declare their type in a first, uncompressed "mimetype" entry."""
    if data[30:38] != b"mimetype":
        return "application/zip"
    size = int.from_bytes(data[18:22], "little")
    start = 38 + int.from_bytes(data[28:30], "little")
    declared = data[start : start + min(size, 100)].decode("ascii", "replace")
    return declared if re.fullmatch(r"[\w.+-]+/[\w.+-]+", declared) else "application/zip"


def check_zip_limits(source: Source, entries: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip bomb from its central directory, before anything is inflated.

    Python's zipfile stops inflating an entry at its declared size (and fails the CRC), so
    checking the declared sizes bounds what any library reading the archive can unpack.

    Raises:
        DocumentTooLarge: naming the limit exceeded and its value.
    """
    limits = source.limits
    unpacked = sum(entry.file_size for entry in entries)
    packed = sum(entry.compress_size for entry in entries)
    if unpacked > limits.max_unpacked_bytes:
        raise DocumentTooLarge(
            f"{source.name}: the zip container unpacks to {unpacked:,} bytes, over "
            f"max_unpacked_bytes={limits.max_unpacked_bytes:,}"
        )
    ratio = unpacked / max(packed, 1)
    # Small archives compress oddly well (empty XML parts) and are harmless at any ratio.
    if unpacked > 1 << 20 and ratio > limits.max_compression_ratio:
        raise DocumentTooLarge(
            f"{source.name}: the zip container unpacks {ratio:,.0f} times its size "
            f"({unpacked:,} bytes), over max_compression_ratio={limits.max_compression_ratio:g} "
            "(a zip bomb?)"
        )


def _ooxml_content_type(
    source: Source, archive: zipfile.ZipFile, names: dict[str, zipfile.ZipInfo], part: str
) -> str:
    info = names.get("[content_types].xml")
    if info is None:
        raise source.corrupt("is an Office file without [Content_Types].xml")
    if info.file_size > _CT_MAX_BYTES:
        raise source.corrupt("is an Office file with an implausible [Content_Types].xml")
    try:
        types = archive.read(info).decode("utf-8", "replace")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise source.corrupt("is an Office file with a corrupt [Content_Types].xml", exc) from None
    # A scan for attributes, not an XML parser: entity tricks in untrusted XML cannot bite.
    for element in _OVERRIDE.findall(types):
        attributes: dict[str, str] = dict(_ATTRIBUTE.findall(element))
        if attributes.get("PartName", "").lower() == "/" + part:
            return attributes.get("ContentType", "")
    return ""


def _sniff_ole(source: Source) -> str:
    """Name an OLE2 compound file (old Office formats) from its root storage's streams."""
    from xlrd.compdoc import CompDoc, CompDocError

    try:
        entries = CompDoc(source.data, logfile=io.StringIO()).dirlist
        # Root streams only: a Word file embedding a chart holds a nested "Workbook" stream.
        names: set[str] = {entries[child].name for child in entries[0].children}
    except (CompDocError, IndexError, ValueError, struct.error) as exc:
        raise source.corrupt("is a truncated or corrupt OLE2 (old Office) file", exc) from None
    if {"EncryptionInfo", "EncryptedPackage"} <= names:
        raise EncryptedDocument(
            f"{source.name}: the Office document is password-protected; remove the password "
            "and upload it again"
        )
    for stream, media_type in _OLE_STREAMS:
        if stream in names:
            return media_type
    return "application/x-ole-storage"


def corrupt_binary(source: Source, supported_extensions: frozenset[str]) -> CorruptDocument | None:
    """The error for bytes that are not text and match no known format, if the name promises one.

    Binary junk named ``notes.txt`` or ``report.pdf`` is a broken file; nameless junk is an
    unsupported type, which the caller reports.
    """
    ext = extension(source.filename)
    if ext in supported_extensions:
        return CorruptDocument(
            f"{source.name}: named .{ext} but holds binary data of no known format "
            "(corrupt, truncated or mislabelled)"
        )
    return None
