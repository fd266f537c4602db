"""Batch classification jobs of one tenant: progress rows in its classification database.

A job runs in a thread of the process that started it, so it cannot outlive that process.
Each row records which process runs it (boot id, pid and the process's start time, which
tell a live process from a dead one even when a pid is reused); when the store is opened,
a ``running`` job whose process is gone, or that an earlier opening in this very process
started, becomes ``interrupted`` with its counts kept and the reason in ``error``. Another
process that merely opens the store (a CLI command beside the server) leaves the server's
live jobs alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.encrypted_db import EncryptedDatabase
from appliance.errors import NotFound

_KEYS = ("id", "taxonomy", "total", "done", "failed", "status", "created_at", "finished_at")
INTERRUPTED = (
    "interrupted: the process running this job stopped after {seen} of {total} documents. "
    "Submit the same batch again to finish it: classification is idempotent per (document "
    "version, classifier version), so documents this classifier version has already "
    "classified keep their stored results and only the rest are classified."
)
FAILED = (
    "an unexpected error stopped the job (the server log has the details); submit the same "
    "batch again to finish it: documents already classified keep their stored results."
)


def process_token(pid: int) -> str | None:
    """``boot-id:pid:start-time`` of a live process, or None when there is no such process.

    Where ``/proc`` is missing (not Linux) no process can be told alive, so every job an
    earlier process left ``running`` counts as interrupted when the store is opened.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after the command name, which is in parentheses and may hold spaces; the
    # start time is field 22 of the line, the 20th after the name
    started = stat.rsplit(")", 1)[1].split()[19]
    return f"{boot}:{pid}:{started}"


class BatchJobs:
    """The ``jobs`` table of a classification database (created by its migrations)."""

    def __init__(self, db: EncryptedDatabase, now: Callable[[], str]) -> None:
        self._db = db
        self._now = now
        self._runner = process_token(os.getpid())

    def create(self, taxonomy: str, total: int) -> int:
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (taxonomy, total, done, failed, status, created_at, runner) "
                "VALUES (?, ?, 0, 0, 'running', ?, ?)",
                (taxonomy, total, self._now(), self._runner),
            )
            return int(cur.lastrowid)

    def update(
        self, job_id: int, done: int, failed: int, status: str = "running", error: str | None = None
    ) -> None:
        """Record progress; a job no longer ``running`` (interrupted, finished) stays as it is."""
        finished = self._now() if status != "running" else None
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET done = ?, failed = ?, status = ?, finished_at = ?, error = ? "
                "WHERE id = ? AND status = 'running'",
                (done, failed, status, finished, error, job_id),
            )

    def get(self, job_id: int) -> dict[str, Any]:
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT id, taxonomy, total, done, failed, status, created_at, finished_at, "
                "error FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no classification job {job_id} in this tenant")
        return {**dict(zip(_KEYS, row[:-1], strict=True)), "error": row[-1]}

    def interrupt_orphans(self) -> int:
        """Mark ``interrupted`` every running job whose process is gone; how many were."""
        with self._db.transaction() as conn:
            running = conn.execute(
                "SELECT id, total, done, failed, runner FROM jobs WHERE status = 'running'"
            ).fetchall()
            orphans = [r for r in running if not self._alive(r[4])]
            for job_id, total, done, failed, _ in orphans:
                conn.execute(
                    "UPDATE jobs SET status = 'interrupted', finished_at = ?, error = ? "
                    "WHERE id = ?",
                    (self._now(), INTERRUPTED.format(seen=done + failed, total=total), job_id),
                )
        return len(orphans)

    def _alive(self, runner: str | None) -> bool:
        if runner is None or self._runner is None:
            return False  # a job from before runners were recorded, or no way to tell
        if runner == self._runner:
            # this process opens a tenant's store once; a job of an earlier opening lost
            # its store when that was closed, as surely as one of a stopped process
            return False
        return process_token(int(runner.split(":")[1])) == runner
