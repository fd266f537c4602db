"""Export of the audit log as JSON lines that an auditor verifies offline.

Line 1 is a header signed with the log's key: the exported range (first and last seq),
the chain hash before the first entry and that of the last. Then one line per entry
(payload still encrypted, base64; chain hash and the previous one in hex), each
checkpoint of the range on the line after its entry, and last a checkpoint written
for the export that covers its final entry. ``verify_export`` in
:mod:`appliance.audit.verify` checks such a file with nothing but the public key.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from appliance.audit.log import AuditLog, iso_utc
from appliance.audit.records import AuditEntry, Checkpoint, ExportHeader
from appliance.crypto import fsync_dir
from appliance.errors import Conflict, InvalidInput

EXPORT_FORMAT = "appliance-audit-export/1"


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote."""

    path: Path
    first_seq: int
    last_seq: int
    entries: int
    checkpoints: int


def export(log: AuditLog, out: Path, since: datetime | None = None) -> ExportSummary:
    """Write the log (entries from ``since`` on, or all) to ``out`` as verifiable JSONL.

    A fresh checkpoint is signed first, and the export ends with it. The file appears
    complete or not at all (written aside, then linked into place).

    Args:
        log: The audit log.
        out: The export file; must not exist yet.
        since: Export from the first entry written at or after this aware datetime.

    Raises:
        Conflict: ``out`` exists.
        InvalidInput: Nothing to export (empty log, or no entry since ``since``), or a
            naive ``since``.
    """
    if out.exists():
        raise Conflict(f"export file {out} exists: choose a new name")
    if since is not None:
        iso_utc(since)  # refuse a naive time before anything is written
    final = log.checkpoint()
    first = 1 if since is None else log.first_seq_since(since)
    if final.seq == 0 or first is None or first > final.seq:
        raise InvalidInput("no audit entries to export" + ("" if since is None else " since then"))
    header = ExportHeader(
        first_seq=first,
        last_seq=final.seq,
        prev_hash=log.hash_at(first - 1),
        last_hash=final.hash,
        exported_at=datetime.now(UTC).isoformat(timespec="microseconds"),
    )
    checkpoints = {cp.seq: cp for cp in log.checkpoints(first, final.seq)}
    entries = _write_new_file(out, lambda handle: _write_lines(handle, log, header, checkpoints))
    return ExportSummary(out, first, final.seq, entries, len(checkpoints))


def _write_new_file(out: Path, write: Callable[[IO[bytes]], int]) -> int:
    """Write aside, fsync, then link into place: ``out`` is complete or absent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            written = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, out)  # unlike rename, never replaces a file that appeared meanwhile
        except FileExistsError:
            raise Conflict(f"export file {out} exists: choose a new name") from None
        fsync_dir(out.parent)
    finally:
        tmp.unlink()
    return written


def _write_lines(
    handle: IO[bytes], log: AuditLog, header: ExportHeader, checkpoints: dict[int, Checkpoint]
) -> int:
    signature = log.signer.export_signature(header)
    _write(handle, _header_line(header, signature))
    prev_hash, count = header.prev_hash, 0
    for entry in log.iter_entries(header.first_seq, header.last_seq):
        _write(handle, _entry_line(entry, prev_hash))
        if (cp := checkpoints.get(entry.seq)) is not None:
            _write(handle, {"type": "checkpoint", **cp.to_json()})
        prev_hash, count = entry.hash, count + 1
    return count


def _write(handle: IO[bytes], line: dict[str, Any]) -> None:
    handle.write(json.dumps(line, ensure_ascii=True).encode() + b"\n")


def _header_line(header: ExportHeader, signature: bytes) -> dict[str, Any]:
    return {
        "type": "header",
        "format": EXPORT_FORMAT,
        "first_seq": header.first_seq,
        "last_seq": header.last_seq,
        "prev_hash": header.prev_hash.hex(),
        "last_hash": header.last_hash.hex(),
        "exported_at": header.exported_at,
        "signature": base64.b64encode(signature).decode(),
    }


def _entry_line(entry: AuditEntry, prev_hash: bytes) -> dict[str, Any]:
    return {
        "type": "entry",
        **entry.clear_fields(),
        "payload_ct": base64.b64encode(entry.payload_ct).decode(),
        "prev_hash": prev_hash.hex(),
        "hash": entry.hash.hex(),
    }
