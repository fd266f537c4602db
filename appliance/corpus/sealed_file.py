"""Files sealed with a tenant key, written atomically, in pieces of bounded size.

Layout: ``MAGIC || save id (16 bytes)`` then records ``length (u32) || last (bool) ||
sealed piece``. Piece 0 is a JSON header; the payload follows in pieces of at most 16 MiB,
because one AES-GCM call takes at most 2**31 - 1 bytes. Each piece's associated data binds
the file name, the save id, its position and whether it is the last, so pieces cannot be
reordered, dropped, or mixed between files or saves. A save goes to a temporary file
(0600), is fsynced, renamed over the old file, and the folder is fsynced.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from appliance.crypto import fsync_dir, make_private_dir, open_sealed, seal
from appliance.errors import ConfigurationError, DecryptionFailed

_SAVE_ID_BYTES = 16
_SEGMENT_BYTES = 16 << 20
_RECORD = struct.Struct("<I?")  # sealed length, last segment
_MAX_RECORD = 1 << 28  # bounds what a damaged length field can make us read


def _aad(path: Path, save_id: bytes, seq: int, last: bool) -> bytes:
    return b"vectors:" + path.name.encode() + b":" + save_id + struct.pack("<I?", seq, last)


def write_sealed(
    path: Path, key: bytes, magic: bytes, header: dict[str, Any], parts: list[npt.NDArray[np.uint8]]
) -> None:
    """Seal ``header`` and the concatenation of ``parts`` into ``path``, atomically."""
    header = header | {"payload_bytes": sum(len(p) for p in parts)}
    pieces = [np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)]
    for part in parts:
        pieces += [part[i : i + _SEGMENT_BYTES] for i in range(0, len(part), _SEGMENT_BYTES)]
    save_id = os.urandom(_SAVE_ID_BYTES)
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{save_id.hex()[:8]}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(magic + save_id)
            for seq, piece in enumerate(pieces):
                last = seq == len(pieces) - 1
                blob = seal(key, piece.tobytes(), _aad(path, save_id, seq, last))
                f.write(_RECORD.pack(len(blob), last) + blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_sealed(
    path: Path, key: bytes, magic: bytes, what: str
) -> tuple[dict[str, Any], npt.NDArray[np.uint8]]:
    """The header and the payload of a sealed file; any damage raises ``DecryptionFailed``."""
    with path.open("rb") as f:
        head = f.read(len(magic) + _SAVE_ID_BYTES)
        if head[: len(magic)] != magic:
            raise ConfigurationError(
                f"{path} is not a sealed {what}: move it away, and the {what} is rebuilt "
                "from the document store"
            )
        save_id = head[len(magic) :]
        header = json.loads(_open_record(f, path, key, save_id, 0, what)[0])
        buffer = np.empty(int(header.get("payload_bytes", 0)), dtype=np.uint8)
        filled, seq, last = 0, 1, False
        while not last:
            piece, last = _open_record(f, path, key, save_id, seq, what)
            if filled + len(piece) > len(buffer):
                raise damaged(path, what)
            buffer[filled : filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            filled, seq = filled + len(piece), seq + 1
        if filled != len(buffer) or f.read(1):
            raise damaged(path, what)
    return header, buffer


def _open_record(
    f: BinaryIO, path: Path, key: bytes, save_id: bytes, seq: int, what: str
) -> tuple[bytes, bool]:
    size = f.read(_RECORD.size)
    if len(size) != _RECORD.size:
        raise damaged(path, what)
    length, last = _RECORD.unpack(size)
    if length > _MAX_RECORD:
        raise damaged(path, what)
    try:
        return open_sealed(key, f.read(length), _aad(path, save_id, seq, last)), last
    except DecryptionFailed:
        raise damaged(path, what) from None


def damaged(path: Path, what: str) -> DecryptionFailed:
    return DecryptionFailed(
        f"{what} {path} does not open with this tenant's key: wrong key, or the file "
        f"was altered or damaged. Move it away: the {what} is rebuilt from the document store"
    )


def remove_stale_temps(path: Path) -> None:
    """Delete temporary files left by saves whose process died (a kill mid-save)."""
    if not path.parent.is_dir():
        return
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
