"""Audit log speed: append, verify, export + offline verify, against raw SQLite inserts.

Builds a log of ``--entries`` entries in a temp dir (tenants alternate between two tenants
and the system, payloads ~600 bytes). Batches of ``--batch`` appends alternate with
batches of raw SQLite inserts of the same rows (same columns, WAL, ``synchronous=NORMAL``,
one transaction per row, plaintext payload, no hashing, MAC or sealing): the baseline of
what the log costs on top of SQLite.

    .venv/bin/python bench/audit.py [--entries 100000] [--batch 1000]

Prints one JSON object. Ratios are what to read; absolute figures move with machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import cryptography

from appliance.audit import AuditEvent, AuditLog, export, verify_export
from appliance.crypto import MasterKey
from appliance.keyring import KeyRing

_RAW_DDL = (
    "CREATE TABLE entries (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL,"
    " tenant TEXT, action TEXT NOT NULL, resource TEXT NOT NULL, outcome TEXT NOT NULL,"
    " latency_ms REAL NOT NULL, models TEXT NOT NULL, payload BLOB NOT NULL,"
    " hash BLOB NOT NULL, mac BLOB NOT NULL)"
)
_RAW_INDEX = "CREATE INDEX entries_by_tenant ON entries (tenant, seq)"
_RAW_INSERT = "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_MODELS = {"chat": "smollm2-135m-instruct@0.1.2", "embedding": "all-minilm-l6-v2@0.1.0"}


def _event(i: int) -> AuditEvent:
    tenant = ("acme", "beta", None)[i % 3]
    payload = {
        "question": f"What does clause {i} of the supply agreement say about late delivery?" * 2,
        "answer": "The supplier owes a penalty of 0.5% per week of delay, capped at 5%. " * 4,
        "sources": [{"document": f"doc-{i % 997}", "page": i % 40, "start": 120, "end": 480}],
        "labels": ["contract", "penalty"],
    }
    return AuditEvent(
        "key:3f9a2c", tenant, "review.ask", f"doc-{i % 997}", "ok", 731.25, _MODELS, payload
    )


def _raw_row(seq: int, event: AuditEvent) -> tuple[Any, ...]:
    payload = json.dumps(event.payload, sort_keys=True, separators=(",", ":")).encode()
    ts = "2026-01-01T00:00:00.000000+00:00"
    fields = (event.actor, event.tenant, event.action, event.resource, event.outcome)
    models = json.dumps(dict(event.models), sort_keys=True, separators=(",", ":"))
    return (seq, ts, *fields, event.latency_ms, models, payload, bytes(32), bytes(32))


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(_RAW_DDL)
    conn.execute(_RAW_INDEX)
    return conn


def _build(log: AuditLog, raw: sqlite3.Connection, entries: int, batch: int) -> dict[str, Any]:
    """Append ``entries`` events, alternating batches with raw inserts of the same rows."""
    log_batches: list[float] = []
    raw_batches: list[float] = []
    for start in range(0, entries, batch):
        events = [_event(i) for i in range(start, min(start + batch, entries))]
        rows = [_raw_row(start + n + 1, event) for n, event in enumerate(events)]
        began = time.perf_counter()
        for event in events:
            log.append(event)
        log_batches.append((time.perf_counter() - began) / len(events))
        began = time.perf_counter()
        for row in rows:
            raw.execute("BEGIN IMMEDIATE")
            raw.execute(_RAW_INSERT, row)
            raw.execute("COMMIT")
        raw_batches.append((time.perf_counter() - began) / len(rows))
    append_us = statistics.median(log_batches) * 1e6
    raw_us = statistics.median(raw_batches) * 1e6
    total_s = sum(t * batch for t in log_batches)
    return {
        "append_us_per_entry_median": round(append_us, 1),
        "append_us_per_entry_p90_batch": round(
            statistics.quantiles(log_batches, n=10)[-1] * 1e6, 1
        ),
        "append_entries_per_s": round(entries / total_s),
        "raw_sqlite_insert_us_per_row_median": round(raw_us, 1),
        "append_over_raw_ratio": round(append_us / raw_us, 2),
    }


def _timed(run: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    result = run()
    return result, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    args = parser.parse_args()
    per_100k = 100_000 / args.entries
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        home = Path(tmp)
        with KeyRing(home / "keys" / "keyring.db", MasterKey.generate()) as ring:
            ring.create_tenant("acme")
            ring.create_tenant("beta")
            log = AuditLog(
                home / "audit" / "audit.db",
                ring,
                home / "keys" / "audit-signing.key",
                checkpoint_every=args.checkpoint_every,
            )
            raw = _raw_connection(home / "raw.db")
            with log:
                figures = _build(log, raw, args.entries, args.batch)
                raw.close()
                report, verify_s = _timed(log.verify)
                summary, export_s = _timed(lambda: export(log, home / "export.jsonl"))
                pem = log.signer.public_pem()
            assert report.ok and report.entries == args.entries, report.reason
            offline, offline_s = _timed(lambda: verify_export(home / "export.jsonl", pem))
            assert offline.ok, offline.reason
            sizes = {
                "audit_db_bytes_per_entry": round(
                    (home / "audit" / "audit.db").stat().st_size / args.entries
                ),
                "raw_db_bytes_per_entry": round((home / "raw.db").stat().st_size / args.entries),
                "export_bytes_per_entry": round(
                    (home / "export.jsonl").stat().st_size / summary.entries
                ),
            }
    print(
        json.dumps(
            {
                "bench": "audit",
                "machine": {
                    "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "cpus": len(os.sched_getaffinity(0)),
                    "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version,
                    "cryptography": cryptography.__version__,
                },
                "entries": args.entries,
                "batch": args.batch,
                "checkpoint_every": args.checkpoint_every,
                **figures,
                "verify_s_per_100k": round(verify_s * per_100k, 2),
                "export_s_per_100k": round(export_s * per_100k, 2),
                "export_verify_s_per_100k": round(offline_s * per_100k, 2),
                **sizes,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
