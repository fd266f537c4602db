"""The audit DB's schema and every query the log runs.

Queries are spelled out in full: nothing is ever formatted into SQL.
"""

SCHEMA = 1
DDL = (
    "CREATE TABLE entries (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL,"
    " tenant TEXT, action TEXT NOT NULL, resource TEXT NOT NULL, outcome TEXT NOT NULL,"
    " latency_ms REAL NOT NULL, models TEXT NOT NULL, payload_ct BLOB NOT NULL,"
    " hash BLOB NOT NULL, mac BLOB NOT NULL)",
    "CREATE INDEX entries_by_tenant ON entries (tenant, seq)",
    "CREATE TABLE checkpoints (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, ts TEXT NOT NULL,"
    " prev_seq INTEGER NOT NULL, signature BLOB NOT NULL)",
)
INSERT_ENTRY = (
    "INSERT INTO entries (seq, ts, actor, tenant, action, resource, outcome, latency_ms,"
    " models, payload_ct, hash, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (seq, hash, ts, prev_seq, signature) VALUES (?, ?, ?, ?, ?)"
)
LAST_ENTRY = "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
LAST_CHECKPOINT = (
    "SELECT seq, hash, ts, prev_seq, signature FROM checkpoints ORDER BY seq DESC LIMIT 1"
)
TENANT_ENTRIES = (
    "SELECT seq, ts, actor, tenant, action, resource, outcome, latency_ms, models, payload_ct,"
    " hash, mac FROM entries WHERE tenant IS ? AND seq > ? AND ts >= ? ORDER BY seq LIMIT ?"
)
ENTRY_RANGE = (
    "SELECT seq, ts, actor, tenant, action, resource, outcome, latency_ms, models, payload_ct,"
    " hash, mac FROM entries WHERE seq BETWEEN ? AND ? ORDER BY seq"
)
CHECKPOINT_RANGE = (
    "SELECT seq, hash, ts, prev_seq, signature FROM checkpoints"
    " WHERE seq BETWEEN ? AND ? ORDER BY seq"
)
