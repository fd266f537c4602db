"""The audit log: append-only SQLite, encrypted payloads, a hash chain, signed checkpoints.

Each entry's payload is sealed (AES-256-GCM) under the tenant's ``audit_key`` (the system
key for entries without a tenant) before it reaches SQLite, with associated data binding
it to the entry's seq, tenant and action; no plaintext payload ever reaches the file, its
WAL or a temporary table. The public hash chain (``appliance.audit.records``) is also
MACed with a key only the master key yields, so write access to the file is not enough
to rewrite history. Checkpoints are signed with Ed25519 and the latest is also kept in a
small head file beside the DB, so cutting the tail of the DB together with its
checkpoints is still noticed.

Durability: appends commit with ``synchronous=NORMAL`` (WAL): an entry survives a crash
of the process at once, and a power cut once a checkpoint covers it (the log is synced to
disk before the head file names a checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from appliance.audit import schema as sql
from appliance.audit.head import publish_head
from appliance.audit.records import (
    GENESIS_HASH,
    AuditEntry,
    AuditEvent,
    Checkpoint,
    VerifyReport,
    chain_mac,
    check_event,
    entry_bytes,
    payload_aad,
)
from appliance.audit.signing import CheckpointSigner
from appliance.audit.verify import verify_database
from appliance.crypto import create_file_once, make_private_dir, open_sealed, seal
from appliance.errors import ConfigurationError, DecryptionFailed, InvalidInput
from appliance.keyring import KeyRing, TenantKeys, check_tenant_name

_MAX_READ = 10_000


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class AuditLog:
    """The append-only, encrypted, tamper-evident audit log.

    Thread-safe, and safe for several processes appending to the same file: appends are
    serialised by a lock and SQLite's ``BEGIN IMMEDIATE``.

    Args:
        path: The SQLite file, e.g. ``<home>/audit/audit.db`` (created, mode 0600).
        keyring: Gives tenant audit keys, the chain MAC key and the signing key's seal.
        signing_key_path: The sealed Ed25519 key (created with a new log); its public key is
            written beside it with the suffix ``.pub`` (PEM).
        checkpoint_every: Write a signed checkpoint every this many entries.

    Raises:
        ConfigurationError: The file is not an audit log, the signing key is missing for
            an existing log, or the master key does not open it.
    """

    def __init__(
        self,
        path: Path,
        keyring: KeyRing,
        signing_key_path: Path,
        *,
        checkpoint_every: int = 1000,
    ) -> None:
        if checkpoint_every < 1:
            raise InvalidInput("checkpoint_every must be at least 1")
        self._path = path
        self._keyring = keyring
        self._every = checkpoint_every
        self._chain_key = keyring.system_key("audit-chain")
        self._system_audit_key = keyring.system_keys().audit_key
        self._lock = threading.Lock()
        make_private_dir(path.parent)
        if not path.exists():
            create_file_once(path, b"")  # SQLite gives -wal and -shm the same mode
        self._conn = self._connect()
        try:
            genesis = self._init(signing_key_path)
        except BaseException:
            self._conn.close()
            raise
        if genesis is not None:
            self._sync_to_disk()
            publish_head(self.head_path, genesis)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigurationError(
                f"audit log {self._path} is not a readable SQLite database ({exc}): "
                "restore it from backup"
            ) from None
        return conn

    def _init(self, signing_key_path: Path) -> Checkpoint | None:
        """Create the schema and the signing key for a new log; open them for an old one."""
        with self._transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > sql.SCHEMA:
                raise ConfigurationError(
                    f"audit log {self._path} was written by a newer appliance (schema {version})"
                )
            if version == 0:
                for statement in sql.DDL:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {sql.SCHEMA}")
            has_history = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM entries) OR EXISTS (SELECT 1 FROM checkpoints)"
            ).fetchone()[0]
            self._signer = CheckpointSigner(signing_key_path, self._keyring, create=not has_history)
            if has_history:
                return None
            genesis = self._signer.checkpoint(0, GENESIS_HASH, _now(), 0)
            self._insert_checkpoint(genesis)
            return genesis

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- locations ------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    @property
    def head_path(self) -> Path:
        """The head file: the latest checkpoint, kept outside the DB (``audit.head``)."""
        return self._path.with_suffix(".head")

    @property
    def signer(self) -> CheckpointSigner:
        """The checkpoint signer (its ``public_pem()`` is what auditors need)."""
        return self._signer

    # --- writing --------------------------------------------------------------------------

    def append(self, event: AuditEvent) -> AuditEntry:
        """Append one event; its payload is sealed under the tenant's audit key.

        Raises:
            InvalidInput: A malformed event (see :func:`appliance.audit.records.check_event`).
            NotFound: ``event.tenant`` is not a tenant (never created, or destroyed): log
                events about a destroyed tenant with ``tenant=None``.
        """
        latency, models, payload = check_event(event)
        key = self._payload_key(event.tenant)
        checkpoint = None
        with self._lock:
            with self._transaction():
                entry = self._insert_entry(event, latency, models, seal_key=key, payload=payload)
                if entry.seq % self._every == 0:
                    checkpoint = self._checkpoint_last()
            if checkpoint is not None:
                self._sync_to_disk()
                publish_head(self.head_path, checkpoint)
        return entry

    def _payload_key(self, tenant: str | None) -> bytes:
        if tenant is None:
            return self._system_audit_key
        return self._keyring.tenant_keys(tenant).audit_key

    def _insert_entry(
        self, event: AuditEvent, latency: float, models: str, *, seal_key: bytes, payload: bytes
    ) -> AuditEntry:
        last = self._conn.execute(sql.LAST_ENTRY).fetchone()
        seq, prev = (last[0] + 1, last[1]) if last is not None else (1, GENESIS_HASH)
        ts = _now()
        ct = seal(seal_key, payload, payload_aad(seq, event.tenant, event.action))
        fields = (ts, event.actor, event.tenant, event.action, event.resource, event.outcome)
        hash_ = hashlib.sha256(prev + entry_bytes(seq, *fields, latency, models, ct)).digest()
        mac = chain_mac(self._chain_key, hash_)
        self._conn.execute(sql.INSERT_ENTRY, (seq, *fields, latency, models, ct, hash_, mac))
        return AuditEntry(seq, *fields, latency, models, ct, hash_, mac)

    def checkpoint(self) -> Checkpoint:
        """Sign a checkpoint for the last entry now (or return the one that already covers it).

        On an empty log this is the genesis checkpoint (seq 0).
        """
        with self._lock:
            with self._transaction():
                checkpoint = self._checkpoint_last()
            self._sync_to_disk()
            publish_head(self.head_path, checkpoint)
        return checkpoint

    def _sync_to_disk(self) -> None:
        """Make every commit so far durable, before the head file may name it.

        With ``synchronous=NORMAL`` a WAL commit is not fsynced (2-3 ms saved per append);
        one small commit under ``FULL`` fsyncs the WAL, and with it all earlier commits.
        """
        self._conn.execute("PRAGMA synchronous = FULL")
        try:
            with self._transaction():
                self._conn.execute(f"PRAGMA user_version = {sql.SCHEMA}")  # any write will do
        finally:
            self._conn.execute("PRAGMA synchronous = NORMAL")

    def _checkpoint_last(self) -> Checkpoint:
        """Inside a write transaction: the checkpoint covering the last entry."""
        seq, hash_ = self._conn.execute(sql.LAST_ENTRY).fetchone() or (0, GENESIS_HASH)
        latest = self._conn.execute(sql.LAST_CHECKPOINT).fetchone()
        if latest is not None and latest[0] == seq:
            return Checkpoint(*latest)
        prev_seq = latest[0] if latest is not None else 0
        checkpoint = self._signer.checkpoint(seq, hash_, _now(), prev_seq)
        self._insert_checkpoint(checkpoint)
        return checkpoint

    def _insert_checkpoint(self, cp: Checkpoint) -> None:
        self._conn.execute(
            sql.INSERT_CHECKPOINT, (cp.seq, cp.hash, cp.ts, cp.prev_seq, cp.signature)
        )

    # --- reading --------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check the whole log: chain, MACs, checkpoints, head file, public key file."""
        try:
            head: bytes | None = self.head_path.read_bytes()
        except FileNotFoundError:
            head = None
        # The head is read before the snapshot: it never names more than the snapshot holds.
        with self._snapshot() as conn:
            return verify_database(
                conn,
                chain_key=self._chain_key,
                public_key=self._signer.public_key,
                head=head,
                public_file_ok=self._signer.public_file_matches(),
            )

    def read(
        self,
        tenant: str | None,
        keys: TenantKeys | None,
        since: datetime | None = None,
        limit: int = 100,
        *,
        after_seq: int = 0,
    ) -> list[dict[str, Any]]:
        """Entries of one tenant, oldest first, with payloads decrypted.

        Args:
            tenant: The tenant, or None for system entries.
            keys: The tenant's keys (``KeyRing.tenant_keys``; ``system_keys()`` for None), or
                None when the tenant was destroyed: payloads then read as unreadable.
            since: Only entries at or after this aware datetime.
            limit: At most this many entries (1..10000).
            after_seq: Only entries after this seq (for paging).

        Returns:
            One dict per entry: the columns, ``models`` as a dict, ``payload`` (None when it
            does not open) and ``payload_unreadable``.

        Raises:
            InvalidInput: A bad tenant name, keys of another tenant, a naive ``since``, a
                limit out of range.
        """
        if tenant is not None:
            check_tenant_name(tenant)
        if keys is not None and keys.tenant != tenant:
            raise InvalidInput(f"keys of tenant {keys.tenant!r} cannot read tenant {tenant!r}")
        if not 1 <= limit <= _MAX_READ:
            raise InvalidInput(f"limit must be between 1 and {_MAX_READ}")
        since_ts = iso_utc(since) if since is not None else ""
        with self._lock:
            rows = self._conn.execute(
                sql.TENANT_ENTRIES, (tenant, after_seq, since_ts, limit)
            ).fetchall()
        return [_entry_view(AuditEntry(*row), keys) for row in rows]

    def iter_entries(self, first_seq: int, last_seq: int) -> Iterator[AuditEntry]:
        """Stored entries ``first_seq..last_seq`` in order, read without blocking appends."""
        with self._snapshot() as conn:
            cursor = conn.execute(sql.ENTRY_RANGE, (first_seq, last_seq))
            while rows := cursor.fetchmany(1000):
                yield from (AuditEntry(*row) for row in rows)

    def checkpoints(self, first_seq: int, last_seq: int) -> list[Checkpoint]:
        """Stored checkpoints covering entries ``first_seq..last_seq``, in order."""
        with self._lock:
            rows = self._conn.execute(sql.CHECKPOINT_RANGE, (first_seq, last_seq)).fetchall()
        return [Checkpoint(*row) for row in rows]

    def hash_at(self, seq: int) -> bytes:
        """The chain hash of entry ``seq`` (zeros for 0, before the first entry)."""
        if seq == 0:
            return GENESIS_HASH
        with self._lock:
            row = self._conn.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise InvalidInput(f"audit log has no entry {seq}")
        return bytes(row[0])

    def first_seq_since(self, since: datetime) -> int | None:
        """The first entry written at or after ``since`` (an aware datetime), if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(seq) FROM entries WHERE ts >= ?", (iso_utc(since),)
            ).fetchone()
        return None if row[0] is None else int(row[0])

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A separate connection in one read transaction: a consistent view, appends go on."""
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=30.0)
        try:
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        """Close the log's connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def iso_utc(moment: datetime) -> str:
    """``moment`` as the log writes times (UTC, microseconds); a naive datetime is refused."""
    if moment.tzinfo is None:
        raise InvalidInput("a time filter must carry a timezone (e.g. datetime.now(UTC))")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _entry_view(entry: AuditEntry, keys: TenantKeys | None) -> dict[str, Any]:
    payload: Any = None
    if keys is not None:
        aad = payload_aad(entry.seq, entry.tenant, entry.action)
        try:
            payload = json.loads(open_sealed(keys.audit_key, entry.payload_ct, aad))
        except DecryptionFailed:
            payload = None
    return {
        **entry.clear_fields(),
        "payload": payload,
        "payload_unreadable": payload is None,
        "hash": entry.hash.hex(),
    }
