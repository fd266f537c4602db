"""Multipart uploads, parsed as they stream in, with a hard size cap and no disk at all.

Starlette's own form parser spools file parts above 1 MB into a temporary file: the
document's plaintext would sit on disk, which the appliance never allows. Here the body
is fed chunk by chunk through python-multipart's streaming parser into memory, and the
request is refused (413) as soon as it passes the cap, without reading the rest. The
parsers need the whole document in memory anyway, so nothing is lost by not spooling.
The client's file name is only a label (the document's ``source``): it is reduced to a
plain base name and never becomes a filesystem path.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from appliance.errors import DocumentTooLarge, InvalidInput

MAX_FIELD_BYTES = 4096
MAX_SOURCE_CHARS = 255
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass
class Upload:
    """One uploaded file and the small text fields sent with it."""

    filename: str
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)


def clean_source(filename: str) -> str:
    """The document label for a client's file name: its base name, printable, bounded.

    ``../../etc/passwd`` -> ``passwd``; ``C:\\docs\\a.pdf`` -> ``a.pdf``.
    """
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("", name).strip().lstrip(".")
    if not name:
        raise InvalidInput("file: the upload needs a file name with an extension, e.g. memo.pdf")
    return name[-MAX_SOURCE_CHARS:]


class _Collector:
    """python-multipart callbacks that keep the ``file`` part and small text fields."""

    def __init__(self, file_field: str, max_bytes: int) -> None:
        self.file_field, self.max_bytes = file_field, max_bytes
        self.header_field, self.header_value = bytearray(), bytearray()
        self.headers: dict[str, bytes] = {}
        self.body = bytearray()
        self.parts: list[tuple[dict[str, bytes], bytes]] = []

    def on_part_begin(self) -> None:
        self.headers, self.body = {}, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower().decode("latin-1")] = bytes(self.header_value)
        self.header_field, self.header_value = bytearray(), bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.body += data[start:end]
        _, options = parse_options_header(self.headers.get("content-disposition", b""))
        is_file = options.get(b"name", b"").decode("utf-8", "replace") == self.file_field
        limit = self.max_bytes if is_file else MAX_FIELD_BYTES
        if len(self.body) > limit:
            raise DocumentTooLarge(
                f"the upload is over the {limit / 2**20:.0f} MB limit (setting max_document_mb)"
                if is_file
                else "a form field is over 4 KB"
            )

    def on_part_end(self) -> None:
        self.parts.append((self.headers, bytes(self.body)))


async def read_upload(request: Request, max_bytes: int, file_field: str = "file") -> Upload:
    """Read a ``multipart/form-data`` request with one file part named ``file_field``.

    Raises:
        InvalidInput: Not multipart, no file part, more than one, a field not UTF-8.
        DocumentTooLarge: The declared length or the file part is over ``max_bytes``.
    """
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInput("send the document as multipart/form-data with a 'file' field")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise DocumentTooLarge(
            f"the upload is over the {max_bytes / 2**20:.0f} MB limit (setting max_document_mb)"
        )
    collector = _Collector(file_field, max_bytes)
    callbacks = {
        name: getattr(collector, name) for name in dir(collector) if name.startswith("on_")
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    async for chunk in request.stream():
        parser.write(chunk)
    parser.finalize()
    return _assemble(collector.parts, file_field)


def _assemble(parts: list[tuple[dict[str, bytes], bytes]], file_field: str) -> Upload:
    files: list[tuple[str, bytes]] = []
    fields: dict[str, str] = {}
    for headers, body in parts:
        _, options = parse_options_header(headers.get("content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == file_field:
            filename = options.get(b"filename", b"").decode("utf-8", "replace")
            files.append((clean_source(filename), body))
        elif name:
            try:
                fields[name] = body.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"{name}: not UTF-8 text") from None
    if len(files) != 1:
        raise InvalidInput(f"send exactly one '{file_field}' part (got {len(files)})")
    return Upload(files[0][0], files[0][1], fields)
