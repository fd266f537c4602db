"""The ingest pipeline: files -> parse -> chunk -> embed -> store -> index.

Documents go through one at a time, so memory stays bounded by the largest document
(itself capped by ``max_document_mb``), whatever the number of files. A file that fails
is recorded with its reason and the batch goes on; nothing of a failed file is stored.
The same bytes under the same source again are *unchanged*; new bytes under a known
source become a new version.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from appliance.config import Settings
from appliance.corpus.chunking import ChunkingPolicy, chunk_document
from appliance.corpus.corpus import TenantCorpus
from appliance.corpus.parsed import ParseLimits
from appliance.corpus.parsers import parse
from appliance.errors import DocumentError, DocumentTooLarge, InvalidInput

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class IngestSource:
    """One document to ingest: the name it is known by, and where its bytes are."""

    source: str
    path: Path


@dataclass(frozen=True, slots=True)
class IngestedDocument:
    source: str
    document_id: int
    version: int
    chunks: int
    status: str
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IngestFailure:
    source: str
    problem: str  # the error's problem type slug, e.g. "corrupt-document"
    reason: str


@dataclass
class IngestReport:
    ingested: list[IngestedDocument] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[IngestFailure] = field(default_factory=list)

    @property
    def needs_ocr(self) -> list[str]:
        return [d.source for d in self.ingested if d.status == "needs_ocr"]

    def summary(self) -> str:
        line = (
            f"{len(self.ingested)} ingested, {len(self.unchanged)} unchanged, "
            f"{len(self.failed)} failed"
        )
        if self.needs_ocr:
            line += f" ({len(self.needs_ocr)} stored as needs_ocr: no text layer and no OCR)"
        return line


@dataclass(frozen=True, slots=True)
class IngestOptions:
    limits: ParseLimits = ParseLimits()
    chunking: ChunkingPolicy = ChunkingPolicy()

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestOptions:
        mb = 2**20
        limits = ParseLimits(
            max_bytes=int(settings.max_document_mb * mb),
            max_unpacked_bytes=int(settings.max_unpacked_mb * mb),
            ocr=settings.ocr,
            ocr_languages=settings.ocr_languages,
        )
        return cls(limits, ChunkingPolicy(settings.chunk_tokens, settings.chunk_overlap_tokens))


def discover(paths: Sequence[Path]) -> list[IngestSource]:
    """Files named, and files under folders named (recursively, hidden ones skipped).

    A file's source is its name for a file argument, or its path relative to the folder
    argument for a file found inside it.
    """
    found: list[IngestSource] = []
    for path in paths:
        if path.is_file():
            found.append(IngestSource(path.name, path))
        elif path.is_dir():
            found.extend(_walk(path))
        else:
            raise InvalidInput(f"{path} does not exist or is not a file or folder")
    return found


def _walk(root: Path) -> Iterator[IngestSource]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                path = Path(folder) / name
                yield IngestSource(path.relative_to(root).as_posix(), path)


def ingest(
    corpus: TenantCorpus,
    sources: Iterable[IngestSource],
    *,
    acl: Sequence[str] = (),
    options: IngestOptions = IngestOptions(),
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest each source into the corpus; per-file failures are collected, not raised."""
    report = IngestReport()
    corpus.record_embedder()
    try:
        for item in sources:
            if progress is not None:
                progress(item.source)
            try:
                data = _read(item.path, options.limits.max_bytes)
                _ingest_one(corpus, item.source, data, acl, options, report)
            except DocumentError as exc:
                report.failed.append(IngestFailure(item.source, exc.slug, exc.detail))
            except OSError as exc:
                report.failed.append(
                    IngestFailure(item.source, "unreadable", f"{item.source}: {exc.strerror}")
                )
    finally:
        corpus.save()
    return report


def ingest_bytes(
    corpus: TenantCorpus,
    source: str,
    data: bytes,
    *,
    acl: Sequence[str] = (),
    options: IngestOptions = IngestOptions(),
) -> IngestReport:
    """Ingest one upload; a document error is raised (the caller answers with it)."""
    report = IngestReport()
    corpus.record_embedder()
    try:
        _ingest_one(corpus, source, data, acl, options, report)
    finally:
        corpus.save()
    return report


def _read(path: Path, max_bytes: int) -> bytes:
    size = path.stat().st_size
    if size > max_bytes:
        raise DocumentTooLarge(
            f"{path.name}: {size / 2**20:.1f} MB is over the {max_bytes / 2**20:.0f} MB limit "
            "(setting max_document_mb)"
        )
    return path.read_bytes()


def _ingest_one(
    corpus: TenantCorpus,
    source: str,
    data: bytes,
    acl: Sequence[str],
    options: IngestOptions,
    report: IngestReport,
) -> None:
    sha256 = hashlib.sha256(data).hexdigest()
    known = corpus.store.lookup(source)
    if known is not None and known[1] == sha256:
        report.unchanged.append(source)
        return
    parsed = parse(data, filename=source, limits=options.limits)
    chunks = chunk_document(parsed, corpus.embedder.count_tokens, options.chunking)
    vectors = _embed(corpus, [c.text for c in chunks])
    stored = corpus.store.store_version(
        source=source,
        sha256=sha256,
        size=len(data),
        parsed=parsed,
        chunks=chunks,
        embeddings=vectors,
        acl=acl,
    )
    corpus.apply(stored, vectors)
    report.ingested.append(
        IngestedDocument(
            source, stored.document_id, stored.version, len(chunks), parsed.status, parsed.warnings
        )
    )


def _embed(corpus: TenantCorpus, texts: list[str]) -> npt.NDArray[np.float32]:
    if not texts:
        return np.zeros((0, corpus.embedder.dim), dtype=np.float32)
    return corpus.embedder.embed(texts)
