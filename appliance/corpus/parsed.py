"""What a parser hands to the rest of the corpus pipeline: text, blocks with offsets, limits.

A :class:`ParsedDocument` holds the whole extracted text of one document and the
:class:`Block` s it is made of. Citations point at ``text[block.start:block.end]`` and at the
block's human-readable ``location`` ("page 3", "sheet Budget", "slide 2"), so offsets are
exact by construction: :class:`TextAssembly` is the only thing that lays blocks out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "table_row", "header", "footer", "metadata"]
ParseStatus = Literal["ok", "needs_ocr"]

_LINE_BREAKS = re.compile(r"\r\n?|[\v\f\x1c-\x1e\x85\u2028\u2029]")
# Control characters (bar tab and newline), byte-order marks and non-characters: noise that
# breaks tokenisers and terminals and carries no text.
_NOISE = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f\ufeff\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class Block:
    """One structural unit of a document: a heading, a paragraph, a table row...

    Attributes:
        kind: What the block is.
        start: Offset of the block's first character in ``ParsedDocument.text``.
        end: Offset just past its last character (``text[start:end]`` is the block).
        location: Where it is, for people: "page 3", "sheet Budget", "slide 2",
            "attachment report.pdf > page 1".
        page: 1-based page, slide or sheet number where meaningful, else None.
        cells: For spreadsheet rows, the cell range such as "Budget!A3:D3" ("A3:D3" for CSV).
    """

    kind: BlockKind
    start: int
    end: int
    location: str
    page: int | None
    cells: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """The text of one document with its structure.

    Attributes:
        text: The whole extracted text; blocks are separated by "\\n" or "\\n\\n".
        blocks: Ordered, non-overlapping, non-empty blocks covering the text.
        media_type: The detected type, e.g. "application/pdf".
        status: "ok", or "needs_ocr" when pages without a text layer could not be read.
        metadata: Title, author, email headers (from, to, subject, date)...
        warnings: Things a reviewer should know, e.g. "page 4: no text layer, OCR applied".
    """

    text: str
    blocks: tuple[Block, ...]
    media_type: str
    status: ParseStatus
    metadata: dict[str, str]
    warnings: tuple[str, ...]

    def block_text(self, block: Block) -> str:
        """The text of ``block``."""
        return self.text[block.start : block.end]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Caps that keep a hostile or huge upload from exhausting the machine.

    Attributes:
        max_bytes: Largest document accepted, in bytes.
        max_unpacked_bytes: Largest total uncompressed size of a zip container (docx, xlsx, pptx).
        max_compression_ratio: Largest uncompressed/compressed ratio of a zip container.
        max_email_depth: Deepest nesting of attached messages and attachments that is read.
        max_pages: Most pages (PDF), slides or sheets read.
        ocr: Run Tesseract on pages without a text layer when it is installed.
        ocr_languages: Tesseract language codes, e.g. "eng" or "eng+deu".
    """

    max_bytes: int = 100 * 2**20
    max_unpacked_bytes: int = 500 * 2**20
    max_compression_ratio: float = 100.0
    max_email_depth: int = 5
    max_pages: int = 5000
    ocr: bool = True
    ocr_languages: str = "eng"


@dataclass
class TextAssembly:
    """Builds a :class:`ParsedDocument`'s text and blocks together, so offsets cannot drift.

    Block text is stripped, line breaks become "\\n" and control characters are dropped;
    empty blocks are dropped. Consecutive table rows are separated by
    one newline, everything else by a blank line.
    """

    parts: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    length: int = 0

    def add(
        self,
        kind: BlockKind,
        text: str,
        location: str,
        page: int | None = None,
        cells: str | None = None,
    ) -> Block | None:
        """Append a block; returns it, or None when ``text`` is blank."""
        text = _NOISE.sub("", _LINE_BREAKS.sub("\n", text)).strip()
        if not text:
            return None
        if self.blocks:
            tight = kind == "table_row" and self.blocks[-1].kind == "table_row"
            self._append("\n" if tight else "\n\n")
        start = self.length
        self._append(text)
        block = Block(kind, start, self.length, location, page, cells)
        self.blocks.append(block)
        return block

    def extend(self, document: ParsedDocument, prefix: str) -> None:
        """Append another document's blocks (an attachment), prefixing their locations."""
        for block in document.blocks:
            self.add(
                block.kind,
                document.block_text(block),
                f"{prefix} > {block.location}",
                block.page,
                block.cells,
            )
        self.warnings.extend(f"{prefix}: {warning}" for warning in document.warnings)

    def warn(self, message: str) -> None:
        """Record a warning for the reviewer."""
        self.warnings.append(message)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _append(self, piece: str) -> None:
        self.parts.append(piece)
        self.length += len(piece)

    def build(
        self,
        media_type: str,
        metadata: dict[str, str] | None = None,
        status: ParseStatus = "ok",
    ) -> ParsedDocument:
        """The finished document."""
        return ParsedDocument(
            text=self.text,
            blocks=tuple(self.blocks),
            media_type=media_type,
            status=status,
            metadata={
                key: clean
                for key, value in (metadata or {}).items()
                if (clean := " ".join(_NOISE.sub("", value).split()))
            },
            warnings=tuple(self.warnings),
        )
