"""Email: .eml messages and .mbox mailboxes, attachments parsed recursively.

A message gives a metadata block (From/To/Cc/Subject/Date), its body (text/plain preferred,
HTML otherwise) and its attachments, each through ``parse`` with its locations prefixed
"attachment NAME > ". An attachment that cannot be read earns a warning; the message stays.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import MIMEPart
from typing import Any

from appliance.corpus.parsed import ParsedDocument, ParseStatus, TextAssembly
from appliance.corpus.parsers.sniff import EMAIL, MBOX, decode_text
from appliance.corpus.parsers.source import Source, display_name
from appliance.corpus.parsers.text import paragraphs
from appliance.errors import DocumentError, DocumentTooLarge, EmptyDocument

_HEADERS = ("from", "to", "cc", "subject", "date")
_METADATA = (*_HEADERS, "message-id")
_MBOX_SEPARATOR = re.compile(rb"^From [^\n]*\n", re.M)
_MBOXRD_ESCAPE = re.compile(rb"^>(>*From )", re.M)


def parse_email(source: Source, text: str, media_type: str) -> ParsedDocument:
    """One RFC 5322 message.

    Raises:
        EmptyDocument: no headers, body or attachment text at all.
    """
    message = _message(source, source.data)
    reader = _MessageReader(source)
    metadata = reader.add_message(message, "", source.depth)
    return reader.build(EMAIL, metadata)


def parse_mbox(source: Source, text: str, media_type: str) -> ParsedDocument:
    """A Unix mailbox: each message in turn, located "message N > ...".

    Raises:
        EmptyDocument: the mailbox holds no message.
    """
    reader = _MessageReader(source)
    count = 0
    for count, raw in enumerate(_mbox_messages(source.data), start=1):
        try:
            message = _message(source, raw)
        except DocumentError as exc:
            reader.assembly.warn(f"message {count}: not read: {exc.detail}")
            continue
        reader.add_message(message, f"message {count} > ", source.depth)
    return reader.build(MBOX, {"messages": str(count)})


def _mbox_messages(data: bytes) -> list[bytes]:
    data = data.replace(b"\r\n", b"\n")
    starts = [match.end() for match in _MBOX_SEPARATOR.finditer(data)]
    ends = [*(match.start() for match in _MBOX_SEPARATOR.finditer(data)), len(data)][1:]
    # mboxrd escapes body lines starting "From " as ">From "; undo one level.
    return [
        _MBOXRD_ESCAPE.sub(rb"\1", data[start:end]) for start, end in zip(starts, ends, strict=True)
    ]


def _message(source: Source, data: bytes) -> MIMEPart:
    try:
        return message_from_bytes(data, policy=policy.default)
    except RecursionError:
        # The stdlib parser recurses per nesting level; thousands of levels are an attack.
        raise DocumentTooLarge(
            f"{source.name}: MIME parts nested too deeply to read (only "
            f"max_email_depth={source.limits.max_email_depth} levels are read anyway)"
        ) from None


class _MessageReader:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.assembly = TextAssembly()
        self.status: ParseStatus = "ok"

    def build(self, media_type: str, metadata: dict[str, str]) -> ParsedDocument:
        if not self.assembly.blocks:
            raise EmptyDocument(f"{self.source.name}: the message holds no text")
        return self.assembly.build(media_type, metadata, self.status)

    def add_message(self, message: MIMEPart, prefix: str, depth: int) -> dict[str, str]:
        """Headers, body and attachments of ``message``; returns its metadata."""
        metadata = {name: value for name in _METADATA if (value := _header(message, name))}
        lines = [f"{name.title()}: {metadata[name]}" for name in _HEADERS if name in metadata]
        self.assembly.add("metadata", "\n".join(lines), f"{prefix}headers")
        self._add_body(message, prefix)
        for number, part in enumerate(message.iter_attachments(), start=1):
            self._add_attachment(part, prefix, depth + 1, number)
        return metadata

    def _add_body(self, message: MIMEPart, prefix: str) -> None:
        body = message.get_body(preferencelist=("plain", "html"))
        if body is None:
            return
        text = _content_text(body)
        if body.get_content_subtype() == "html":
            from appliance.corpus.parsers.web import html_document

            try:
                document = html_document(self.source, text, "text/html")
            except EmptyDocument:
                return
            self.assembly.extend(document, f"{prefix}body")
            return
        for first, last, paragraph in paragraphs(text):
            span = f"line {first}" if first == last else f"lines {first}-{last}"
            self.assembly.add("paragraph", paragraph, f"{prefix}body, {span}")

    def _add_attachment(self, part: MIMEPart, prefix: str, depth: int, number: int) -> None:
        name = display_name(part.get_filename() or f"part {number}").replace(">", "›")
        where = f"{prefix}attachment {name}"
        limit = self.source.limits.max_email_depth
        if depth > limit:
            self.assembly.warn(f"{where}: nested deeper than max_email_depth={limit}, not read")
            return
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], MIMEPart):
                self.add_message(inner[0], f"{where} > ", depth)
            return
        if (
            part.get_content_maintype() == "image"
            and part.get_content_disposition() != "attachment"
        ):
            self.assembly.warn(f"{where}: inline image, not read")
            return
        self._parse_attachment(part, name, where, depth)

    def _parse_attachment(self, part: MIMEPart, name: str, where: str, depth: int) -> None:
        from appliance.corpus.parsers import parse_nested

        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        try:
            document = parse_nested(data, name, self.source.limits, depth)
        except DocumentError as exc:
            self.assembly.warn(f"{where}: not read: {exc.detail}")
            return
        self.assembly.extend(document, where)
        if document.status == "needs_ocr":
            self.status = "needs_ocr"


def _header(message: MIMEPart, name: str) -> str:
    try:
        value: Any = message.get(name)
    except (ValueError, IndexError, TypeError, AttributeError):
        # The header policy chokes on some malformed headers; the raw value still reads.
        value = next((raw for key, raw in message.raw_items() if key.lower() == name), None)
    return " ".join(str(value).split()) if value is not None else ""


def _content_text(part: MIMEPart) -> str:
    """The part's text; an unknown or lying charset falls back to detection."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, KeyError, ValueError):
        pass
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return decode_text(payload) or ""
    return ""
