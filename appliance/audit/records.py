"""What the audit log records, and the exact bytes its hash chain and signatures cover.

Anyone can recompute the chain from these definitions (or from an export) without a key:

- entry bytes: the compact JSON array (``ensure_ascii``, separators ``,`` and ``:``)
  ``["appliance-audit-entry/1", seq, ts, actor, tenant, action, resource, outcome,
  latency_ms, models, payload_ct]`` where ``models`` is the canonical JSON text of the
  role -> model map (sorted keys, compact) and ``payload_ct`` is standard base64;
- ``hash = SHA-256(prev_hash || entry bytes)``, with 32 zero bytes before entry 1;
- a checkpoint signs ``["appliance-audit-checkpoint/1", seq, hash_hex, ts, prev_seq]``
  (Ed25519), where ``prev_seq`` is the previous checkpoint's seq, so checkpoints form a
  signed chain of their own and a deleted one is noticed. Checkpoint 0 (the genesis) is
  written when the log is created.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.errors import InvalidInput

Outcome = Literal["ok", "denied", "error", "refused"]
OUTCOMES: tuple[str, ...] = ("ok", "denied", "error", "refused")
GENESIS_HASH = bytes(32)
ENTRY_TAG = "appliance-audit-entry/1"
CHECKPOINT_TAG = "appliance-audit-checkpoint/1"
EXPORT_TAG = "appliance-audit-export/1"
_MAX_FIELD = 1024
# Encoders are immutable; building one per call costs more than the encoding of a short value.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_PAYLOAD = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing that happened, as the caller reports it.

    Attributes:
        actor: Who: an API key id or ``"cli:<user>"``.
        tenant: The tenant concerned, or None for system events.
        action: What, e.g. ``"documents.ingest"``.
        resource: On what, e.g. a document id.
        outcome: ``"ok"``, ``"denied"``, ``"error"`` or ``"refused"``.
        latency_ms: How long it took.
        models: Role -> ``name@version`` (or sha) of each model involved.
        payload: The details (question, answer, names, labels...); encrypted in the log.
    """

    actor: str
    tenant: str | None
    action: str
    resource: str
    outcome: Outcome
    latency_ms: float
    models: Mapping[str, str] = field(default_factory=dict)
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the log, as stored: the payload only as ciphertext."""

    seq: int
    ts: str
    actor: str
    tenant: str | None
    action: str
    resource: str
    outcome: str
    latency_ms: float
    models: str
    """Canonical JSON text of the role -> model map."""
    payload_ct: bytes = field(repr=False)
    hash: bytes
    mac: bytes = field(repr=False)

    def clear_fields(self) -> dict[str, Any]:
        """The fields stored in the clear, as JSON values (for reading and exporting)."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "actor": self.actor,
            "tenant": self.tenant,
            "action": self.action,
            "resource": self.resource,
            "outcome": self.outcome,
            "latency_ms": self.latency_ms,
            "models": json.loads(self.models),
        }

    def entry_bytes(self) -> bytes:
        """The bytes this entry contributes to the hash chain."""
        return entry_bytes(
            self.seq,
            self.ts,
            self.actor,
            self.tenant,
            self.action,
            self.resource,
            self.outcome,
            self.latency_ms,
            self.models,
            self.payload_ct,
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: entry ``seq`` has chain hash ``hash`` (at time ``ts``)."""

    seq: int
    hash: bytes
    ts: str
    prev_seq: int
    signature: bytes = field(repr=False)

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return checkpoint_message(self.seq, self.hash, self.ts, self.prev_seq)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as JSON fields (hash hex, signature base64)."""
        return {
            "seq": self.seq,
            "hash": self.hash.hex(),
            "ts": self.ts,
            "prev_seq": self.prev_seq,
            "signature": base64.b64encode(self.signature).decode(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Parse :meth:`to_json` output; raises ValueError, KeyError or TypeError if malformed."""
        seq, prev_seq = data["seq"], data["prev_seq"]
        if not isinstance(seq, int) or not isinstance(prev_seq, int):
            raise TypeError("checkpoint seq and prev_seq must be integers")
        return cls(
            seq=seq,
            hash=bytes.fromhex(data["hash"]),
            ts=str(data["ts"]),
            prev_seq=prev_seq,
            signature=base64.b64decode(data["signature"], validate=True),
        )


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of a verification.

    Attributes:
        ok: Nothing is wrong.
        entries: Entries checked (up to the first bad one).
        checkpoints: Checkpoints whose signature was checked.
        first_bad_seq: The first sequence number found wrong (missing, edited, forged...),
            or None when ok or when the fault is not an entry's (e.g. a missing head file).
        reason: What was found, in words.
    """

    ok: bool
    entries: int
    checkpoints: int
    first_bad_seq: int | None
    reason: str


def canonical_json(value: Any) -> str:
    """Compact, key-sorted, ASCII-only JSON: the same value always gives the same text."""
    return _CANONICAL.encode(value)


def entry_bytes(
    seq: int,
    ts: str,
    actor: str,
    tenant: str | None,
    action: str,
    resource: str,
    outcome: str,
    latency_ms: float,
    models: str,
    payload_ct: bytes,
) -> bytes:
    """The canonical bytes of one entry (see the module docstring)."""
    fields = [ENTRY_TAG, seq, ts, actor, tenant, action, resource, outcome, latency_ms, models]
    fields.append(base64.b64encode(payload_ct).decode())
    return _CANONICAL.encode(fields).encode()


def chain_hash(prev_hash: bytes, entry: bytes) -> bytes:
    """``SHA-256(prev_hash || entry)``."""
    return hashlib.sha256(prev_hash + entry).digest()


def chain_mac(chain_key: bytes, hash_: bytes) -> bytes:
    """``HMAC-SHA256(chain_key, hash)``: proves an entry was written by a holder of the key."""
    return hmac.new(chain_key, hash_, hashlib.sha256).digest()


def checkpoint_message(seq: int, hash_: bytes, ts: str, prev_seq: int) -> bytes:
    """The bytes a checkpoint's signature covers."""
    return canonical_json([CHECKPOINT_TAG, seq, hash_.hex(), ts, prev_seq]).encode()


@dataclass(frozen=True, slots=True)
class ExportHeader:
    """The signed first line of an export: which run of the chain it holds.

    Signing the range makes a deleted first or last line detectable, not only a changed one.
    """

    first_seq: int
    last_seq: int
    prev_hash: bytes
    """Chain hash of the entry before ``first_seq`` (zeros when ``first_seq`` is 1)."""
    last_hash: bytes
    exported_at: str


def export_header_message(header: ExportHeader) -> bytes:
    """The bytes an export header's signature covers."""
    fields = [EXPORT_TAG, header.first_seq, header.last_seq, header.prev_hash.hex()]
    fields += [header.last_hash.hex(), header.exported_at]
    return canonical_json(fields).encode()


def payload_aad(seq: int, tenant: str | None, action: str) -> bytes:
    """Associated data of a payload: a ciphertext moved to another entry does not open."""
    return canonical_json(["appliance-audit-payload/1", seq, tenant, action]).encode()


def check_event(event: AuditEvent) -> tuple[float, str, bytes]:
    """Validate an event; return its latency as a float, models text and payload bytes.

    Raises:
        InvalidInput: A field is empty, too long or of the wrong kind, or the payload is not
            JSON-serialisable. Messages name the field, never its content.
    """
    for name in ("actor", "action", "resource"):
        if not _is_text(getattr(event, name)):
            raise InvalidInput(f"audit event {name} must be a non-empty string of <= 1024 chars")
    if event.tenant is not None and not _is_text(event.tenant):
        raise InvalidInput("audit event tenant must be a non-empty string or None")
    if event.outcome not in OUTCOMES:
        raise InvalidInput(f"audit event outcome must be one of {', '.join(OUTCOMES)}")
    latency = event.latency_ms
    if isinstance(latency, bool) or not isinstance(latency, int | float):
        raise InvalidInput("audit event latency_ms must be a number")
    if not math.isfinite(latency) or latency < 0:
        raise InvalidInput("audit event latency_ms must be a finite number >= 0")
    if not isinstance(event.models, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in event.models.items()
    ):
        raise InvalidInput("audit event models must map role names to model strings")
    if not isinstance(event.payload, Mapping):
        raise InvalidInput("audit event payload must be a JSON object (a mapping)")
    try:
        payload = _PAYLOAD.encode(event.payload).encode()
    except (TypeError, ValueError) as exc:
        # The library's message names a type or a float rule, never the payload's content.
        raise InvalidInput(f"audit event payload is not JSON-serialisable: {exc}") from None
    return float(latency), canonical_json(dict(event.models)), payload


def _is_text(value: object) -> bool:
    if not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be stored
        return False
    return True
