"""The head file: the latest checkpoint, kept beside the audit DB but outside it.

Cutting the tail of the DB together with its checkpoint rows leaves the head file naming
a checkpoint the DB no longer has; forging a head file needs the signing key.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from appliance.audit.records import Checkpoint
from appliance.crypto import fsync_dir

HEAD_FORMAT = "appliance-audit-head/1"


def publish_head(path: Path, checkpoint: Checkpoint) -> None:
    """Replace the head file atomically, unless it already names a later checkpoint.

    Called after the checkpoint's commit (and its fsync), so the head never names a
    checkpoint the DB lacks. A lock file serialises writers from several processes, so
    the head never moves backwards.
    """
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = read_head_seq(path)
        if current is not None and current >= checkpoint.seq:
            return
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps({"format": HEAD_FORMAT, **checkpoint.to_json()}).encode() + b"\n"
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        os.close(fd)  # releases the flock


def read_head_seq(path: Path) -> int | None:
    """The seq named by a head file, or None when it is missing or unreadable."""
    try:
        seq = json.loads(path.read_bytes())["seq"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return seq if isinstance(seq, int) else None
