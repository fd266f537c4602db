"""Exports verify offline with the public key alone; tampering is found at the first bad seq."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance.audit import AuditLog, export, verify_export
from appliance.audit.records import GENESIS_HASH, entry_bytes
from appliance.crypto import MasterKey
from appliance.errors import Conflict, InvalidInput, NotFound
from appliance.keyring import KeyRing
from appliance.testing import AuditHome as Home
from appliance.testing import assert_bad, filled_audit_home

ENTRIES, EVERY = 35, 10  # checkpoints at 0, 10, 20, 30; entries 31..35 after the last
MARKER = "marker-question-c41d"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    with filled_audit_home(
        tmp_path,
        every=EVERY,
        entries=ENTRIES,
        payload=lambda i: {"question": f"{MARKER} {i}", "answer": f"a{i}"},
    ) as found:
        yield found


# --- exports -------------------------------------------------------------------------------


@pytest.fixture
def exported(home: Home) -> Path:
    out = home.root / "export.jsonl"
    with home.open_log() as log:
        summary = export(log, out)
    assert (summary.first_seq, summary.last_seq, summary.entries) == (1, ENTRIES, ENTRIES)
    assert summary.checkpoints == 4  # 10, 20, 30 and the export's own at 35
    return out


def public_key(home: Home) -> bytes:
    return (home.root / "keys" / "audit-signing.pub").read_bytes()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in change(lines(path))))


def at(items: list[dict[str, Any]], kind: str, seq: int) -> int:
    return next(i for i, line in enumerate(items) if line["type"] == kind and line["seq"] == seq)


def test_export_verifies_offline_with_the_public_key_only(home: Home, exported: Path) -> None:
    report = verify_export(exported, public_key(home))
    assert (report.ok, report.entries, report.checkpoints) == (True, ENTRIES, 4)
    raw = (home.root / "keys" / "audit-signing.pub").read_bytes()
    with home.open_log() as log:
        assert verify_export(exported, log.signer.public_raw()).ok
    assert MARKER.encode() not in exported.read_bytes()  # payloads stay encrypted
    last = lines(exported)[-1]
    assert (last["type"], last["seq"]) == ("checkpoint", ENTRIES)
    assert raw.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_export_since_starts_mid_chain_and_verifies(home: Home, tmp_path: Path) -> None:
    with home.open_log() as log:
        (ts,) = home.sql("SELECT ts FROM entries WHERE seq = 17")[0]
        summary = export(log, tmp_path / "since.jsonl", since=datetime.fromisoformat(ts))
    assert (summary.first_seq, summary.entries) == (17, ENTRIES - 16)
    header = lines(tmp_path / "since.jsonl")[0]
    assert bytes.fromhex(header["prev_hash"]) != GENESIS_HASH
    assert verify_export(tmp_path / "since.jsonl", public_key(home)).ok


def _edit(
    seq: int, field: str, value: Any
) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def change(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items[at(items, "entry", seq)][field] = value
        return items

    return change


def _flip_ct(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    line = items[at(items, "entry", 7)]
    ct = base64.b64decode(line["payload_ct"])
    line["payload_ct"] = base64.b64encode(ct[:-1] + bytes([ct[-1] ^ 1])).decode()
    return items


def _swap(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    i, j = at(items, "entry", 6), at(items, "entry", 7)
    items[i], items[j] = items[j], items[i]
    return items


def _drop(kind: str, seq: int) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    return lambda items: [x for i, x in enumerate(items) if i != at(items, kind, seq)]


def _move_checkpoint(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cp = items.pop(at(items, "checkpoint", 10))
    items.insert(at(items, "entry", 11) + 1, cp)
    return items


def _header(field: str, value: Any) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def change(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items[0][field] = value
        return items

    return change


def _duplicate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    i = at(items, "entry", 9)
    return [*items[: i + 1], items[i], *items[i + 1 :]]


def _cut_after_checkpoint_20(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items[: at(items, "checkpoint", 20) + 1]


def _bad_signature(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items[at(items, "checkpoint", 20)]["signature"] = base64.b64encode(bytes(64)).decode()
    return items


@pytest.mark.parametrize(
    ("change", "seq", "reason"),
    [
        (_edit(5, "outcome", "denied"), 5, "entry 5 does not match its chain hash"),
        (_edit(5, "latency_ms", 2), 5, "line 6 is not a valid entry"),
        (_edit(5, "models", {"chat": "x@1"}), 5, "entry 5 does not match its chain hash"),
        (_edit(8, "hash", "00" * 32), 8, "entry 8 does not match its chain hash"),
        (_edit(8, "prev_hash", "00" * 32), 8, "entry 8 does not follow entry 7"),
        (_flip_ct, 7, "entry 7 does not match its chain hash"),
        (_drop("entry", 4), 4, "entry 4 is missing (entry 5 is in its place)"),
        (_drop("entry", 1), 1, "entry 1 is missing"),
        (_swap, 6, "entry 6 is missing (entry 7 is in its place)"),
        (_duplicate, 9, "entry 9 is out of place after 9"),
        (_drop("checkpoint", 20), 20, "checkpoints were removed"),
        (_drop("checkpoint", 10), 10, "checkpoint 10 is missing from the export"),
        (_drop("checkpoint", ENTRIES), ENTRIES + 1, "does not end with a checkpoint"),
        (_drop("entry", ENTRIES), ENTRIES, f"checkpoint {ENTRIES} on line"),
        (_cut_after_checkpoint_20, 21, f"the export ends at 20, its header says {ENTRIES}"),
        (_move_checkpoint, 10, "checkpoint 10 on line 13 does not follow its entry"),
        (_bad_signature, 20, "checkpoint 20 has an invalid signature"),
        (_header("last_seq", 30), None, "the export header's signature does not verify"),
        (_header("first_seq", 2), None, "the export header's signature does not verify"),
        (lambda items: items[1:], None, "line 1 is not a valid export header"),
    ],
)
def test_a_tampered_export_is_found(
    home: Home,
    exported: Path,
    change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    seq: int | None,
    reason: str,
) -> None:
    rewrite(exported, change)
    assert_bad(verify_export(exported, public_key(home)), seq, reason)


def test_a_forged_line_with_the_chain_recomputed_is_found_at_the_next_checkpoint(
    home: Home, exported: Path
) -> None:
    """Without the key, a rewritten run of the chain breaks at the next signed checkpoint."""
    items = lines(exported)
    prev = bytes.fromhex(items[at(items, "entry", 12)]["prev_hash"])
    for seq in range(12, 21):
        line = items[at(items, "entry", seq)]
        if seq == 12:
            line["resource"] = "doc:forged"
        line["prev_hash"] = prev.hex()
        data = entry_bytes(
            seq,
            line["ts"],
            line["actor"],
            line["tenant"],
            line["action"],
            line["resource"],
            line["outcome"],
            line["latency_ms"],
            "{}",
            base64.b64decode(line["payload_ct"]),
        )
        prev = hashlib.sha256(prev + data).digest()
        line["hash"] = prev.hex()
    rewrite(exported, lambda _: items)
    assert_bad(verify_export(exported, public_key(home)), 20, "checkpoint 20 names another hash")


def test_a_garbage_line_is_found(home: Home, exported: Path) -> None:
    text = exported.read_text().splitlines()
    text.insert(5, "this is not json")
    exported.write_text("\n".join(text) + "\n")
    assert_bad(verify_export(exported, public_key(home)), 5, "line 6 is not JSON")


def test_another_public_key_does_not_verify(exported: Path) -> None:
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert_bad(verify_export(exported, other), None, "header's signature does not verify")


def test_bad_verify_export_arguments(home: Home, exported: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="neither 32 raw bytes nor a PEM Ed25519 public key"):
        verify_export(exported, b"not a key")
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(NotFound, match=f"export file {missing} does not exist"):
        verify_export(missing, public_key(home))


def test_export_refuses_to_overwrite(home: Home, exported: Path) -> None:
    before = exported.read_bytes()
    with home.open_log() as log, pytest.raises(Conflict, match="exists: choose a new name"):
        export(log, exported)
    assert exported.read_bytes() == before


def test_nothing_to_export(home: Home, tmp_path: Path) -> None:
    out = tmp_path / "out" / "later.jsonl"
    with home.open_log() as log:
        with pytest.raises(InvalidInput, match="no audit entries to export since then"):
            export(log, out, since=datetime.now(UTC) + timedelta(days=1))
        with pytest.raises(InvalidInput, match="must carry a timezone"):
            export(log, out, since=datetime(2024, 1, 1))
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_empty_log_has_nothing_to_export(tmp_path: Path) -> None:
    master = MasterKey.generate()
    with (
        KeyRing(tmp_path / "keys" / "keyring.db", master) as ring,
        AuditLog(tmp_path / "audit" / "audit.db", ring, tmp_path / "keys" / "sign.key") as log,
        pytest.raises(InvalidInput, match="no audit entries to export"),
    ):
        export(log, tmp_path / "empty.jsonl")
    assert not (tmp_path / "empty.jsonl").exists()
