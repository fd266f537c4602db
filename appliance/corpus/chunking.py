"""Structure-aware chunking, sized in the embedder's own tokens.

Chunks are runs of whole blocks (paragraphs, headings, table rows) of one page, sheet or
slide: a chunk never spans two pages, so its citation names one page. A heading starts a
new chunk. A chunk holds at most ``max_tokens`` tokens; consecutive chunks overlap by the
trailing blocks of the previous one, up to ``overlap_tokens``. A single block longer than
the budget is cut at sentence ends (at word boundaries for a run-on sentence) into windows
that overlap the same way. Every chunk is ``text[start:end]`` of the document: offsets are
exact, so a citation can always be checked against the stored text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from appliance.corpus.parsed import Block, ParsedDocument

TokenCounter = Callable[[Sequence[str]], list[int]]
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_WORD_GAP = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    """A chunk before it is stored: where it is in the document and how long it is."""

    ordinal: int
    start: int
    end: int
    text: str
    location: str
    page: int | None
    cells: str | None
    tokens: int


@dataclass(frozen=True, slots=True)
class ChunkingPolicy:
    max_tokens: int = 200
    overlap_tokens: int = 32

    def __post_init__(self) -> None:
        if not 0 <= self.overlap_tokens < self.max_tokens:
            raise ValueError("overlap_tokens must be >= 0 and below max_tokens")


@dataclass(frozen=True, slots=True)
class _Span:
    """A block, or a piece of an over-long block."""

    block: Block
    start: int
    end: int
    tokens: int


def chunk_document(
    doc: ParsedDocument, count_tokens: TokenCounter, policy: ChunkingPolicy = ChunkingPolicy()
) -> list[ChunkDraft]:
    """Cut a parsed document into chunks of at most ``policy.max_tokens`` tokens."""
    if not doc.blocks:
        return []
    counts = count_tokens([doc.block_text(b) for b in doc.blocks])
    spans: list[_Span] = []
    for block, tokens in zip(doc.blocks, counts, strict=True):
        if tokens <= policy.max_tokens:
            spans.append(_Span(block, block.start, block.end, tokens))
        else:
            spans.extend(_split_block(doc.text, block, count_tokens, policy))
    return [_draft(doc.text, i, group) for i, group in enumerate(_group(spans, policy))]


def _section(block: Block) -> tuple[int | None, str]:
    """Chunks never cross a page/sheet/slide, nor the edge of an attachment."""
    prefix = block.location.rpartition(" > ")[0]
    return block.page, prefix


def _group(spans: list[_Span], policy: ChunkingPolicy) -> Iterator[list[_Span]]:
    current: list[_Span] = []
    tokens = 0
    for span in spans:
        starts_section = bool(current) and (
            _section(span.block) != _section(current[-1].block)
            or (span.block.kind == "heading" and span.start == span.block.start)
        )
        if starts_section:
            yield current
            current, tokens = [], 0
        elif current and tokens + span.tokens > policy.max_tokens:
            yield current
            current = _overlap(current, policy.overlap_tokens, policy.max_tokens - span.tokens)
            tokens = sum(s.tokens for s in current)
        current.append(span)
        tokens += span.tokens
    if current:
        yield current


def _overlap(previous: list[_Span], overlap: int, room: int) -> list[_Span]:
    """The trailing spans of ``previous`` that fit in the overlap (and beside the next span)."""
    carried: list[_Span] = []
    total = 0
    for span in reversed(previous[1:]):  # never carry the whole previous chunk
        if total + span.tokens > min(overlap, room):
            break
        carried.insert(0, span)
        total += span.tokens
    return carried


def _split_block(
    text: str, block: Block, count_tokens: TokenCounter, policy: ChunkingPolicy
) -> list[_Span]:
    """Cut an over-long block into overlapping windows at sentence (or word) boundaries."""
    pieces = _pieces(text, block.start, block.end, _SENTENCE_END)
    counts = count_tokens([text[s:e] for s, e in pieces])
    units: list[tuple[int, int, int]] = []
    for (s, e), n in zip(pieces, counts, strict=True):
        if n <= policy.max_tokens:
            units.append((s, e, n))
            continue
        words = _pieces(text, s, e, _WORD_GAP)
        word_counts = count_tokens([text[ws:we] for ws, we in words])
        units.extend((ws, we, wn) for (ws, we), wn in zip(words, word_counts, strict=True))
    windows: list[_Span] = []
    for group in _group([_Span(block, s, e, n) for s, e, n in units], _inner(policy)):
        windows.append(_Span(block, group[0].start, group[-1].end, sum(u.tokens for u in group)))
    return windows


def _inner(policy: ChunkingPolicy) -> ChunkingPolicy:
    # pieces are counted one by one; joined they can tokenise a little longer
    return ChunkingPolicy(int(policy.max_tokens * 0.9), policy.overlap_tokens)


def _pieces(text: str, start: int, end: int, gap: re.Pattern[str]) -> list[tuple[int, int]]:
    """Non-empty ``(start, end)`` runs of ``text[start:end]`` separated by ``gap``."""
    out = []
    pos = start
    for match in gap.finditer(text, start, end):
        if match.start() > pos:
            out.append((pos, match.start()))
        pos = match.end()
    if pos < end:
        out.append((pos, end))
    return out


def _draft(text: str, ordinal: int, group: list[_Span]) -> ChunkDraft:
    first, last = group[0], group[-1]
    location = first.block.location
    if last.block.location != location:
        location = f"{location} – {last.block.location.rpartition(' > ')[2]}"
    return ChunkDraft(
        ordinal=ordinal,
        start=first.start,
        end=last.end,
        text=text[first.start : last.end],
        location=location,
        page=first.block.page,
        cells=_cell_range(first.block.cells, last.block.cells),
        tokens=sum(s.tokens for s in group),
    )


def _cell_range(first: str | None, last: str | None) -> str | None:
    """``Sheet!A3:D3`` + ``Sheet!A9:D9`` -> ``Sheet!A3:D9``."""
    if first is None or last is None or first == last:
        return first
    sheet, _, top = first.rpartition("!")
    bottom = last.rpartition("!")[2]
    head = top.partition(":")[0]
    tail = bottom.rpartition(":")[2]
    return f"{sheet}!{head}:{tail}" if sheet else f"{head}:{tail}"
