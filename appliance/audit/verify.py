"""Verification of the audit log (in its DB) and of an export (offline, public key only).

Both walk the chain in seq order and stop at the first fault, reporting its seq: a
missing seq (deleted), a seq out of place (reordered or inserted), content that does not
match its hash (edited), a MAC that does not verify (chain rewritten without the key, DB
only), a checkpoint whose signature, hash or predecessor is wrong, or checkpoints (or the
head file) that name entries the log no longer has (tail truncated).
"""

from __future__ import annotations

import base64
import hmac
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from appliance.audit.records import (
    GENESIS_HASH,
    AuditEntry,
    Checkpoint,
    ExportHeader,
    VerifyReport,
    canonical_json,
    chain_hash,
    chain_mac,
    export_header_message,
)
from appliance.audit.signing import load_public_key, signature_valid
from appliance.errors import NotFound

_ENTRY_FIELDS = ("ts", "actor", "action", "resource", "outcome")


class _Fault(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


class _ChainWalk:
    """Checks entries and checkpoints fed in seq order; raises :class:`_Fault` at the first."""

    def __init__(self, public_key: Ed25519PublicKey, first_seq: int, prev_hash: bytes) -> None:
        self._public_key = public_key
        self.next_seq = first_seq
        self.prev_hash = prev_hash
        self.entries = 0
        self.checkpoints = 0
        self.last_checkpoint: int | None = None

    def entry(self, entry: AuditEntry) -> None:
        if entry.seq != self.next_seq:
            if entry.seq > self.next_seq:
                found = f"entry {entry.seq} is in its place"
                raise _Fault(self.next_seq, f"entry {self.next_seq} is missing ({found})")
            raise _Fault(entry.seq, f"entry {entry.seq} is out of place after {self.next_seq - 1}")
        if chain_hash(self.prev_hash, entry.entry_bytes()) != entry.hash:
            raise _Fault(entry.seq, f"entry {entry.seq} does not match its chain hash: altered")
        self.prev_hash = entry.hash
        self.next_seq += 1
        self.entries += 1

    def checkpoint(self, cp: Checkpoint, expected_hash: bytes) -> None:
        if not signature_valid(self._public_key, cp.signature, cp.message()):
            raise _Fault(cp.seq, f"checkpoint {cp.seq} has an invalid signature")
        if cp.hash != expected_hash:
            raise _Fault(cp.seq, f"checkpoint {cp.seq} names another hash than entry {cp.seq}'s")
        if self.last_checkpoint is not None and cp.prev_seq != self.last_checkpoint:
            missing = cp.prev_seq if cp.prev_seq > self.last_checkpoint else cp.seq
            raise _Fault(
                missing,
                f"checkpoint {cp.prev_seq}, named by checkpoint {cp.seq} as its predecessor, "
                f"is not the previous one ({self.last_checkpoint}): checkpoints were removed",
            )
        self.last_checkpoint = cp.seq
        self.checkpoints += 1

    def report(self, fault: _Fault | None) -> VerifyReport:
        if fault is not None:
            return VerifyReport(False, self.entries, self.checkpoints, fault.seq, fault.reason)
        reason = f"{self.entries} entries and {self.checkpoints} checkpoints verified"
        return VerifyReport(True, self.entries, self.checkpoints, None, reason)


# --- the database ------------------------------------------------------------------------


def verify_database(
    conn: sqlite3.Connection,
    *,
    chain_key: bytes,
    public_key: Ed25519PublicKey,
    head: bytes | None,
    public_file_ok: bool,
) -> VerifyReport:
    """Verify the log in ``conn`` (one read transaction) against its head file's content.

    Args:
        conn: A connection inside a read transaction on the audit DB.
        chain_key: The MAC key of the chain.
        public_key: The log's signing key.
        head: The head file's bytes (None when it is missing).
        public_file_ok: Whether the ``.pub`` file matches the signing key.
    """
    walk = _ChainWalk(public_key, 1, GENESIS_HASH)
    try:
        checkpoints = _stored_checkpoints(conn)
        head_cp, head_problem = _parse_head(head, public_key)
        genesis = checkpoints.get(0)
        if genesis is None:
            raise _Fault(None, "the genesis checkpoint (0) is missing: the log was replaced")
        walk.checkpoint(genesis, GENESIS_HASH)
        _walk_stored_entries(conn, walk, checkpoints, chain_key)
        _check_tail(walk, checkpoints, head_cp)
        if head_problem is not None:
            raise _Fault(None, head_problem)
        if not public_file_ok:
            raise _Fault(None, "the .pub file beside the signing key does not hold its public key")
    except _Fault as fault:
        return walk.report(fault)
    return walk.report(None)


def _walk_stored_entries(
    conn: sqlite3.Connection,
    walk: _ChainWalk,
    checkpoints: Mapping[int, Checkpoint],
    chain_key: bytes,
) -> None:
    cursor = conn.execute(
        "SELECT seq, ts, actor, tenant, action, resource, outcome, latency_ms, models,"
        " payload_ct, hash, mac FROM entries ORDER BY seq"
    )
    while rows := cursor.fetchmany(2000):
        for row in rows:
            entry = _stored_entry(row, walk.next_seq)
            walk.entry(entry)
            if not hmac.compare_digest(chain_mac(chain_key, entry.hash), entry.mac):
                raise _Fault(entry.seq, f"entry {entry.seq} has a MAC made without the key")
            if (cp := checkpoints.get(entry.seq)) is not None:
                walk.checkpoint(cp, entry.hash)


def _stored_checkpoints(conn: sqlite3.Connection) -> dict[int, Checkpoint]:
    found: dict[int, Checkpoint] = {}
    rows = conn.execute("SELECT seq, hash, ts, prev_seq, signature FROM checkpoints ORDER BY seq")
    for seq, hash_, ts, prev_seq, signature in rows:
        if not (isinstance(hash_, bytes) and isinstance(signature, bytes)):
            raise _Fault(seq, f"checkpoint {seq} is malformed")
        if not (isinstance(ts, str) and isinstance(prev_seq, int)):
            raise _Fault(seq, f"checkpoint {seq} is malformed")
        found[seq] = Checkpoint(seq, hash_, ts, prev_seq, signature)
    return found


def _stored_entry(row: tuple[Any, ...], expected: int) -> AuditEntry:
    seq, ts, actor, tenant, action, resource, outcome, latency, models = row[:9]
    payload_ct, hash_, mac = row[9:]
    texts_ok = all(isinstance(v, str) for v in (ts, actor, action, resource, outcome, models))
    blobs_ok = all(isinstance(v, bytes) for v in (payload_ct, hash_, mac))
    if not (texts_ok and blobs_ok and isinstance(latency, float)):
        raise _Fault(min(seq, expected), f"entry {seq} has a column of the wrong type: altered")
    if tenant is not None and not isinstance(tenant, str):
        raise _Fault(min(seq, expected), f"entry {seq} has a column of the wrong type: altered")
    return AuditEntry(*row)


def _check_tail(
    walk: _ChainWalk, checkpoints: Mapping[int, Checkpoint], head: Checkpoint | None
) -> None:
    last = walk.next_seq - 1
    beyond = [seq for seq in checkpoints if seq > last]
    if beyond:
        raise _Fault(
            last + 1, f"checkpoint {max(beyond)} covers entries past the end ({last}): truncated"
        )
    if head is None:
        return
    if head.seq > last:
        raise _Fault(last + 1, f"the head file names entry {head.seq}, the log ends at {last}")
    stored = checkpoints.get(head.seq)
    if stored is None or stored.hash != head.hash:
        raise _Fault(head.seq, f"checkpoint {head.seq} named by the head file is missing")


def _parse_head(
    head: bytes | None, public_key: Ed25519PublicKey
) -> tuple[Checkpoint | None, str | None]:
    if head is None:
        return None, "the head file (audit.head) is missing"
    try:
        checkpoint = Checkpoint.from_json(json.loads(head))
    except (ValueError, KeyError, TypeError):
        return None, "the head file (audit.head) is malformed"
    if not signature_valid(public_key, checkpoint.signature, checkpoint.message()):
        return None, "the head file (audit.head) has an invalid signature"
    return checkpoint, None


# --- exports -----------------------------------------------------------------------------


def verify_export(path: Path, public_key: bytes) -> VerifyReport:
    """Verify an export with nothing but the log's public key.

    Recomputes the hash chain from the first exported entry (from the header's prev_hash),
    checks every checkpoint's signature and the signed header, and requires the file to end
    with a checkpoint covering its last entry.

    Args:
        path: The JSONL export.
        public_key: The ``.pub`` file's content (PEM), or the raw 32-byte key.

    Raises:
        InvalidInput: ``public_key`` is not an Ed25519 public key.
        NotFound: No file at ``path``.
    """
    key = load_public_key(public_key)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise NotFound(f"export file {path} does not exist") from None
    with handle:
        return _verify_lines(handle, key)


def _verify_lines(lines: Iterable[bytes], key: Ed25519PublicKey) -> VerifyReport:
    numbered = enumerate(lines, start=1)
    walk = _ChainWalk(key, 1, GENESIS_HASH)
    try:
        header = _export_header(next(numbered, (1, b""))[1], key)
        walk = _ChainWalk(key, header.first_seq, header.prev_hash)
        last_kind = "header"
        for number, raw in numbered:
            line = _json_line(raw, number, walk.next_seq)
            last_kind = line.get("type", "")
            if last_kind == "entry":
                walk.entry(_exported_entry(line, number, walk))
            elif last_kind == "checkpoint":
                _exported_checkpoint(line, number, walk, header)
            else:
                raise _Fault(walk.next_seq, f"line {number} is neither an entry nor a checkpoint")
        last = walk.next_seq - 1
        if walk.entries == 0 or last_kind != "checkpoint":
            raise _Fault(last + 1, "the export does not end with a checkpoint of its last entry")
        if last != header.last_seq or walk.prev_hash != header.last_hash:
            raise _Fault(last + 1, f"the export ends at {last}, its header says {header.last_seq}")
    except _Fault as fault:
        return walk.report(fault)
    return walk.report(None)


def _json_line(raw: bytes, number: int, expected_seq: int) -> dict[str, Any]:
    try:
        line = json.loads(raw)
    except ValueError:
        raise _Fault(expected_seq, f"line {number} is not JSON") from None
    if not isinstance(line, dict):
        raise _Fault(expected_seq, f"line {number} is not a JSON object")
    return line


def _export_header(raw: bytes, key: Ed25519PublicKey) -> ExportHeader:
    line = _json_line(raw, 1, 0) if raw else {}
    try:
        if line.get("type") != "header":
            raise ValueError("no header")
        header = ExportHeader(
            first_seq=_int(line["first_seq"]),
            last_seq=_int(line["last_seq"]),
            prev_hash=bytes.fromhex(line["prev_hash"]),
            last_hash=bytes.fromhex(line["last_hash"]),
            exported_at=str(line["exported_at"]),
        )
        signature = base64.b64decode(line["signature"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise _Fault(None, "line 1 is not a valid export header") from None
    if not signature_valid(key, signature, export_header_message(header)):
        raise _Fault(None, "the export header's signature does not verify")
    return header


def _exported_entry(line: Mapping[str, Any], number: int, walk: _ChainWalk) -> AuditEntry:
    try:
        seq = _int(line["seq"])
        texts = [line[name] for name in _ENTRY_FIELDS]
        tenant = line["tenant"]
        latency = line["latency_ms"]
        if not all(isinstance(v, str) for v in texts) or not isinstance(latency, float):
            raise TypeError("field of the wrong type")
        if tenant is not None and not isinstance(tenant, str):
            raise TypeError("tenant of the wrong type")
        ts, actor, action, resource, outcome = texts
        models = canonical_json(line["models"])
        payload_ct = base64.b64decode(line["payload_ct"], validate=True)
        prev_hash, hash_ = bytes.fromhex(line["prev_hash"]), bytes.fromhex(line["hash"])
    except (ValueError, KeyError, TypeError):
        raise _Fault(walk.next_seq, f"line {number} is not a valid entry") from None
    if seq == walk.next_seq and prev_hash != walk.prev_hash:
        raise _Fault(seq, f"entry {seq} does not follow entry {seq - 1}")
    fields = (ts, actor, tenant, action, resource, outcome, latency, models, payload_ct)
    return AuditEntry(seq, *fields, hash=hash_, mac=b"")


def _exported_checkpoint(
    line: Mapping[str, Any], number: int, walk: _ChainWalk, header: ExportHeader
) -> None:
    try:
        cp = Checkpoint.from_json(line)
    except (ValueError, KeyError, TypeError):
        raise _Fault(walk.next_seq - 1, f"line {number} is not a valid checkpoint") from None
    if cp.seq != walk.next_seq - 1 or walk.entries == 0:
        raise _Fault(cp.seq, f"checkpoint {cp.seq} on line {number} does not follow its entry")
    if walk.last_checkpoint is None and cp.prev_seq >= header.first_seq:
        raise _Fault(cp.prev_seq, f"checkpoint {cp.prev_seq} is missing from the export")
    walk.checkpoint(cp, walk.prev_hash)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value
