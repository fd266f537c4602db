"""The audit log in use: appends, reads, encryption at rest, crypto-shredding, concurrency."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import appliance
from appliance.audit import AuditEvent, AuditLog
from appliance.crypto import MasterKey
from appliance.errors import ConfigurationError, InvalidInput, NotFound
from appliance.keyring import KeyRing
from appliance.testing import AuditHome as Home

MARKER = "zebra-7f3a-PLAINTEXT-MARKER"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    master = MasterKey.from_file(tmp_path / "keys" / "master.key", create=True)
    with KeyRing(tmp_path / "keys" / "keyring.db", master) as ring:
        ring.create_tenant("acme")
        ring.create_tenant("beta")
        yield Home(tmp_path, ring)


def event(tenant: str | None = "acme", **changes: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "actor": "key:k1",
        "tenant": tenant,
        "action": "documents.ask",
        "resource": "doc:1",
        "outcome": "ok",
        "latency_ms": 12.5,
        "models": {"chat": "smollm2@0.1.2", "embedding": "minilm@0.1.0"},
        "payload": {"question": "what is due?", "answer": "the invoice", "labels": ["a"]},
    }
    fields.update(changes)
    return AuditEvent(**fields)


def rows(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT seq, actor, tenant FROM entries ORDER BY seq").fetchall()
    finally:
        conn.close()


def test_append_numbers_entries_and_read_decrypts(home: Home) -> None:
    with home.open_log() as log:
        first = log.append(event())
        second = log.append(event(None, action="models.activate", payload={"ref": "x@1"}))
        third = log.append(event(payload={"question": "q2"}, outcome="denied"))
        assert [first.seq, second.seq, third.seq] == [1, 2, 3]
        assert datetime.fromisoformat(first.ts).utcoffset() == timedelta(0)
        acme = log.read("acme", home.keyring.tenant_keys("acme"))
        system = log.read(None, home.keyring.system_keys())
    assert [e["seq"] for e in acme] == [1, 3]
    assert acme[0]["payload"] == event().payload
    assert acme[0]["payload_unreadable"] is False
    assert acme[0]["models"] == {"chat": "smollm2@0.1.2", "embedding": "minilm@0.1.0"}
    assert acme[1]["outcome"] == "denied"
    assert acme[1]["hash"] == third.hash.hex()
    assert [(e["seq"], e["payload"]) for e in system] == [(2, {"ref": "x@1"})]


def test_read_filters_and_pages(home: Home) -> None:
    keys = home.keyring.tenant_keys("acme")
    with home.open_log() as log:
        for i in range(5):
            log.append(event(resource=f"doc:{i}"))
        middle = datetime.fromisoformat(log.read("acme", keys, after_seq=2, limit=1)[0]["ts"])
        assert [e["seq"] for e in log.read("acme", keys, since=middle)] == [3, 4, 5]
        assert [e["seq"] for e in log.read("acme", keys, limit=2, after_seq=1)] == [2, 3]
        assert log.read("beta", home.keyring.tenant_keys("beta")) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": datetime(2024, 1, 1)}, "must carry a timezone"),
        ({"limit": 0}, "limit must be between 1 and 10000"),
        ({"limit": 10001}, "limit must be between 1 and 10000"),
    ],
)
def test_bad_read_arguments(home: Home, kwargs: dict[str, Any], message: str) -> None:
    with home.open_log() as log, pytest.raises(InvalidInput, match=message):
        log.read("acme", home.keyring.tenant_keys("acme"), **kwargs)


def test_a_tenant_cannot_read_with_another_tenants_keys(home: Home) -> None:
    with home.open_log() as log:
        log.append(event("acme"))
        with pytest.raises(InvalidInput, match="keys of tenant 'beta' cannot read tenant 'acme'"):
            log.read("acme", home.keyring.tenant_keys("beta"))
        with pytest.raises(InvalidInput, match="invalid tenant name"):
            log.read("Acme", None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"actor": ""}, "actor must be a non-empty string"),
        ({"action": "x" * 1025}, "action must be a non-empty string"),
        ({"resource": 7}, "resource must be a non-empty string"),
        ({"actor": "bad\ud800"}, "actor must be a non-empty string"),
        ({"outcome": "maybe"}, "outcome must be one of ok, denied, error, refused"),
        ({"latency_ms": math.nan}, "latency_ms must be a finite number >= 0"),
        ({"latency_ms": -1.0}, "latency_ms must be a finite number >= 0"),
        ({"latency_ms": "5"}, "latency_ms must be a number"),
        ({"models": {"chat": 3}}, "models must map role names to model strings"),
        ({"payload": ["not", "a", "dict"]}, "payload must be a JSON object"),
        ({"payload": {"when": datetime.now(UTC)}}, "payload is not JSON-serialisable"),
        ({"payload": {"score": math.inf}}, "payload is not JSON-serialisable"),
        ({"tenant": "Not-A-Tenant"}, "invalid tenant name"),
    ],
)
def test_bad_events_are_refused_and_nothing_is_written(
    home: Home, changes: dict[str, Any], message: str
) -> None:
    with home.open_log() as log:
        log.append(event())
        with pytest.raises(InvalidInput, match=message):
            log.append(event(**changes))
        assert log.append(event()).seq == 2  # no gap, no half-written entry
        assert log.verify().ok
    assert len(rows(home.db)) == 2


def test_unknown_tenant_is_refused_and_nothing_is_written(home: Home) -> None:
    with home.open_log() as log:
        with pytest.raises(NotFound, match="tenant 'gamma' does not exist"):
            log.append(event("gamma"))
        assert log.verify().entries == 0
    assert rows(home.db) == []


def test_no_plaintext_payload_reaches_any_file(home: Home) -> None:
    """The marker is in every payload; it must not be in the DB, its WAL, or anything else."""
    folders = [home.db.parent, home.root / "keys"]
    with home.open_log(every=7) as log:
        for i in range(40):
            tenant = (None, "acme", "beta")[i % 3]
            log.append(event(tenant, payload={"question": f"{MARKER} {i}", "answer": MARKER}))
        assert log.read("beta", home.keyring.tenant_keys("beta"))[0]["payload"]["answer"] == MARKER
        on_disk = {p.name for p in home.db.parent.iterdir()}
        assert {"audit.db", "audit.db-wal", "audit.db-shm", "audit.head"} <= on_disk
        for path in (p for folder in folders for p in folder.iterdir()):
            assert MARKER.encode() not in path.read_bytes(), path
    for path in (p for folder in folders for p in folder.iterdir()):
        assert MARKER.encode() not in path.read_bytes(), path


def test_files_are_private(home: Home) -> None:
    with home.open_log() as log:
        log.append(event())
        for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
            assert (home.db.parent / name).stat().st_mode & 0o077 == 0, name
    assert home.db.parent.stat().st_mode & 0o777 == 0o700
    assert (home.root / "keys" / "audit-signing.key").stat().st_mode & 0o777 == 0o600
    assert (home.root / "keys" / "audit-signing.pub").read_bytes().startswith(b"-----BEGIN PUB")


def test_destroyed_tenant_payloads_become_unreadable_and_verify_still_passes(home: Home) -> None:
    with home.open_log(every=3) as log:
        for i in range(4):
            log.append(event("acme", resource=f"doc:{i}"))
            log.append(event(None, action="system.tick"))
        home.keyring.destroy_tenant("acme")
        gone = log.read("acme", None)
        assert len(gone) == 4
        assert all(e["payload"] is None and e["payload_unreadable"] for e in gone)
        assert [e["resource"] for e in gone] == ["doc:0", "doc:1", "doc:2", "doc:3"]
        # a new tenant of the same name gets a new key, which opens none of the old payloads
        reborn = home.keyring.create_tenant("acme")
        assert all(e["payload_unreadable"] for e in log.read("acme", reborn))
        assert all(not e["payload_unreadable"] for e in log.read(None, home.keyring.system_keys()))
        report = log.verify()
    assert report.ok, report.reason
    assert report.entries == 8


def test_events_about_a_destroyed_tenant_are_refused_under_its_name(home: Home) -> None:
    with home.open_log() as log:
        home.keyring.destroy_tenant("beta")
        with pytest.raises(NotFound, match="tenant 'beta' does not exist"):
            log.append(event("beta", action="tenants.destroy"))
        entry = log.append(event(None, action="tenants.destroy", resource="tenant:beta"))
        assert entry.seq == 1


def test_checkpoints_every_n_and_head_file(home: Home) -> None:
    with home.open_log(every=5) as log:
        for _ in range(12):
            log.append(event())
        assert [cp.seq for cp in log.checkpoints(0, 100)] == [0, 5, 10]
        assert json.loads(log.head_path.read_bytes())["seq"] == 10
        explicit = log.checkpoint()
        assert (explicit.seq, explicit.prev_seq) == (12, 10)
        assert log.checkpoint() == explicit  # nothing new: the same checkpoint
        assert json.loads(log.head_path.read_bytes())["seq"] == 12
        report = log.verify()
    assert (report.ok, report.entries, report.checkpoints) == (True, 12, 4)


def test_reopening_continues_the_chain(home: Home) -> None:
    with home.open_log(every=4) as log:
        for _ in range(6):
            log.append(event())
    with home.open_log(every=4) as log:
        assert log.append(event()).seq == 7
        assert log.verify().ok


def test_empty_log_verifies(home: Home) -> None:
    with home.open_log() as log:
        report = log.verify()
        assert log.checkpoint().seq == 0
    assert (report.ok, report.entries, report.checkpoints) == (True, 0, 1)


def test_signing_key_missing_for_an_existing_log(home: Home) -> None:
    with home.open_log() as log:
        log.append(event())
    key = home.root / "keys" / "audit-signing.key"
    key.rename(key.with_name("moved"))
    with pytest.raises(ConfigurationError, match=f"audit signing key {key} is missing"):
        home.open_log()
    assert not key.exists()


def test_signing_key_sealed_by_another_master(home: Home, tmp_path: Path) -> None:
    with home.open_log() as log:
        log.append(event())
    with KeyRing(tmp_path / "other.db", MasterKey.generate()) as other:
        key = home.root / "keys" / "audit-signing.key"
        with pytest.raises(ConfigurationError, match="does not open with this master key"):
            AuditLog(home.db, other, key)


def test_not_an_audit_db(home: Home) -> None:
    home.db.parent.mkdir(parents=True)
    home.db.write_bytes(b"garbage" * 1000)
    with pytest.raises(ConfigurationError, match=f"audit log {home.db} is not a readable"):
        home.open_log()
    assert home.db.read_bytes() == b"garbage" * 1000


def test_bad_checkpoint_interval(home: Home) -> None:
    with pytest.raises(InvalidInput, match="checkpoint_every must be at least 1"):
        home.open_log(every=0)
    assert not home.db.exists()


def _switches(db: Path) -> int:
    actors = [actor for _, actor, _ in rows(db)]
    return sum(1 for a, b in itertools.pairwise(actors) if a != b)


def test_two_threads_appending_keep_the_chain(home: Home) -> None:
    with home.open_log(every=50) as log:
        start = threading.Barrier(2)

        def work(actor: str) -> None:
            start.wait()
            for i in range(400):
                log.append(event(actor=actor, resource=f"doc:{i}"))

        threads = [threading.Thread(target=work, args=(f"key:{n}",)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report = log.verify()
    assert report.ok, report.reason
    assert [seq for seq, _, _ in rows(home.db)] == list(range(1, 801))
    assert report.checkpoints == 17
    assert _switches(home.db) >= 2  # the threads really interleaved


_APPENDER = """
import sys, time
from pathlib import Path
from appliance.audit import AuditEvent, AuditLog
from appliance.crypto import MasterKey
from appliance.keyring import KeyRing
root, who, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
master = MasterKey.from_file(root / "keys/master.key", create=False)
ring = KeyRing(root / "keys/keyring.db", master)
log = AuditLog(root / "audit/audit.db", ring, root / "keys/audit-signing.key", checkpoint_every=25)
(root / f"ready-{who}").touch()
while not (root / "go").exists():
    time.sleep(0.001)
for i in range(n):
    log.append(AuditEvent(who, "acme", "documents.ask", f"doc:{i}", "ok", 1.0, {}, {"i": i}))
    if i % 10 == 9:
        time.sleep(0.002)  # yield now and then, so the two really interleave on a busy machine
log.close()
"""


def test_two_processes_appending_keep_the_chain(home: Home) -> None:
    home.open_log(every=25).close()
    src = str(Path(appliance.__file__).parent.parent)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(home.root), who, "1000"],
            cwd=src,
            stderr=subprocess.PIPE,
        )
        for who in ("proc:a", "proc:b")
    ]
    deadline = time.monotonic() + 60
    while not all((home.root / f"ready-{w}").exists() for w in ("proc:a", "proc:b")):
        assert time.monotonic() < deadline
        assert all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (home.root / "go").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with home.open_log(every=25) as log:
        report = log.verify()
        assert json.loads(log.head_path.read_bytes())["seq"] == 2000  # never went backwards
    assert report.ok, report.reason
    assert (report.entries, report.checkpoints) == (2000, 81)
    assert _switches(home.db) >= 2  # the processes really interleaved
