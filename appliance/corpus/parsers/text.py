"""Plain text: paragraphs between blank lines, located by line numbers."""

from __future__ import annotations

from collections.abc import Iterator

from appliance.corpus.parsed import ParsedDocument, TextAssembly
from appliance.corpus.parsers.source import Source
from appliance.errors import EmptyDocument

# A "paragraph" of a log file or a listing can run for thousands of lines; cut it so a
# block stays a readable citation.
MAX_BLOCK_LINES = 40
MAX_BLOCK_CHARS = 4000


def parse_text(source: Source, text: str, media_type: str) -> ParsedDocument:
    """Split decoded text into paragraph blocks located as "lines 3-7".

    Raises:
        EmptyDocument: the text is only whitespace.
    """
    assembly = TextAssembly()
    for first, last, paragraph in paragraphs(text):
        where = f"line {first}" if first == last else f"lines {first}-{last}"
        assembly.add("paragraph", paragraph, where)
    if not assembly.blocks:
        raise EmptyDocument(f"{source.name}: the file holds only whitespace")
    return assembly.build(media_type)


def paragraphs(text: str) -> Iterator[tuple[int, int, str]]:
    """(first line, last line, text) of each paragraph; line numbers are 1-based."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = 0
    chunk: list[str] = []
    size = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            if chunk:
                yield start, number - 1, "\n".join(chunk)
                chunk, size = [], 0
            continue
        if not chunk:
            start = number
        chunk.append(line.rstrip())
        size += len(line)
        if len(chunk) >= MAX_BLOCK_LINES or size >= MAX_BLOCK_CHARS:
            yield start, number, "\n".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield start, len(lines), "\n".join(chunk)
