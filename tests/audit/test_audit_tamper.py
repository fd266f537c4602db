"""Tampering with the audit DB is detected by verify, at the first bad seq."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from appliance.audit.records import entry_bytes
from appliance.testing import AuditHome as Home
from appliance.testing import assert_bad, filled_audit_home

ENTRIES, EVERY = 35, 10  # checkpoints at 0, 10, 20, 30; entries 31..35 after the last
_INSERT = "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    with filled_audit_home(
        tmp_path,
        every=EVERY,
        entries=ENTRIES,
        payload=lambda i: {"question": f"q{i}", "answer": f"a{i}"},
    ) as found:
        yield found


def test_untouched_log_verifies(home: Home) -> None:
    report = home.verify()
    assert (report.ok, report.entries, report.checkpoints) == (True, ENTRIES, 4)


# --- the database --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("ts", "2020-01-01T00:00:00.000000+00:00"),
        ("actor", "key:someone-else"),
        ("tenant", "beta"),
        ("tenant", None),
        ("action", "documents.delete"),
        ("resource", "doc:999"),
        ("outcome", "denied"),
        ("latency_ms", 1.0),
        ("models", '{"chat":"other@1"}'),
        ("hash", bytes(32)),
    ],
)
def test_an_edited_column_is_found(home: Home, column: str, value: Any) -> None:
    home.sql(f"UPDATE entries SET {column} = ? WHERE seq = 6", (value,))  # noqa: S608
    assert_bad(home.verify(), 6, "entry 6 does not match its chain hash")


def test_an_edited_payload_byte_is_found(home: Home) -> None:
    (ct,) = home.sql("SELECT payload_ct FROM entries WHERE seq = 7")[0]
    home.sql("UPDATE entries SET payload_ct = ? WHERE seq = 7", (ct[:-1] + bytes([ct[-1] ^ 1]),))
    assert_bad(home.verify(), 7, "entry 7 does not match its chain hash")


def test_an_edited_mac_is_found(home: Home) -> None:
    home.sql("UPDATE entries SET mac = ? WHERE seq = 9", (bytes(32),))
    assert_bad(home.verify(), 9, "entry 9 has a MAC made without the key")


def test_a_column_of_the_wrong_type_is_found(home: Home) -> None:
    home.sql("UPDATE entries SET payload_ct = 'text' WHERE seq = 3")
    assert_bad(home.verify(), 3, "entry 3 has a column of the wrong type")


def test_a_deleted_row_is_found(home: Home) -> None:
    home.sql("DELETE FROM entries WHERE seq = 4")
    assert_bad(home.verify(), 4, "entry 4 is missing (entry 5 is in its place)")


def test_swapped_rows_are_found(home: Home) -> None:
    home.sql("UPDATE entries SET seq = -1 WHERE seq = 3")
    home.sql("UPDATE entries SET seq = 3 WHERE seq = 6")
    home.sql("UPDATE entries SET seq = 6 WHERE seq = -1")
    assert_bad(home.verify(), 3, "entry 3 does not match its chain hash")


def _forge(home: Home, seq: int, prev_hash: bytes, resource: str) -> tuple[Any, ...]:
    """An entry with a correct public hash: what anyone can compute without the key."""
    fields = ("2030-01-01T00:00:00.000000+00:00", "key:k1", None, "documents.ask", resource)
    rest = ("ok", 1.0, "{}", b"\x01" + os.urandom(40))
    hash_ = hashlib.sha256(prev_hash + entry_bytes(seq, *fields, *rest)).digest()
    return (seq, *fields, *rest, hash_, os.urandom(32))


def test_a_forged_row_at_the_end_is_found(home: Home) -> None:
    (last,) = home.sql("SELECT hash FROM entries WHERE seq = ?", (ENTRIES,))[0]
    row = _forge(home, ENTRIES + 1, last, "doc:forged")
    home.sql(_INSERT, row)
    assert_bad(home.verify(), ENTRIES + 1, f"entry {ENTRIES + 1} has a MAC made without the key")


def test_a_forged_row_inserted_with_the_chain_rewritten_is_found(home: Home) -> None:
    """Shift entries 12.. up by one, insert a forged 12, recompute every public hash."""
    for seq in range(ENTRIES, 11, -1):
        home.sql("UPDATE entries SET seq = ? WHERE seq = ?", (seq + 1, seq))
    (prev,) = home.sql("SELECT hash FROM entries WHERE seq = 11")[0]
    home.sql(_INSERT, _forge(home, 12, prev, "x"))
    cols = "ts, actor, tenant, action, resource, outcome, latency_ms, models, payload_ct"
    for seq in range(12, ENTRIES + 2):
        row = home.sql(f"SELECT {cols} FROM entries WHERE seq = ?", (seq,))[0]  # noqa: S608
        prev = hashlib.sha256(prev + entry_bytes(seq, *row)).digest()
        home.sql("UPDATE entries SET hash = ? WHERE seq = ?", (prev, seq))
    assert_bad(home.verify(), 12, "entry 12 has a MAC made without the key")


def test_tail_truncated_with_its_checkpoints_is_found_by_the_head_file(home: Home) -> None:
    home.sql("DELETE FROM entries WHERE seq > 12")
    home.sql("DELETE FROM checkpoints WHERE seq > 12")
    assert_bad(home.verify(), 13, "the head file names entry 30, the log ends at 12")


def test_tail_truncated_past_a_checkpoint_is_found(home: Home) -> None:
    home.sql("DELETE FROM entries WHERE seq > 25")
    assert_bad(home.verify(), 26, "checkpoint 30 covers entries past the end (25)")


def test_a_deleted_middle_checkpoint_is_found(home: Home) -> None:
    home.sql("DELETE FROM checkpoints WHERE seq = 20")
    assert_bad(home.verify(), 20, "checkpoints were removed")


def test_the_latest_checkpoint_deleted_is_found(home: Home) -> None:
    home.sql("DELETE FROM checkpoints WHERE seq = 30")
    assert_bad(home.verify(), 30, "checkpoint 30 named by the head file is missing")


def test_a_deleted_genesis_checkpoint_is_found(home: Home) -> None:
    home.sql("DELETE FROM checkpoints WHERE seq = 0")
    assert_bad(home.verify(), None, "the genesis checkpoint (0) is missing")


def test_an_edited_checkpoint_is_found(home: Home) -> None:
    home.sql("UPDATE checkpoints SET hash = ? WHERE seq = 10", (bytes(32),))
    assert_bad(home.verify(), 10, "checkpoint 10 has an invalid signature")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda p: p.unlink(), "the head file (audit.head) is missing"),
        (lambda p: p.write_text("{not json"), "the head file (audit.head) is malformed"),
        (
            lambda p: p.write_text(p.read_text().replace('"seq": 30', '"seq": 31')),
            "the head file (audit.head) has an invalid signature",
        ),
    ],
)
def test_a_damaged_head_file_is_found(
    home: Home, change: Callable[[Path], object], reason: str
) -> None:
    change(home.db.with_suffix(".head"))
    assert_bad(home.verify(), None, reason)


def test_a_replaced_public_key_file_is_found(home: Home) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    pub = home.root / "keys" / "audit-signing.pub"
    pub.write_bytes(other.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    assert_bad(home.verify(), None, "the .pub file beside the signing key")
