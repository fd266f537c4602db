"""Key hierarchy: one master key wraps a random root key per tenant; data keys derive from roots.

::

    master key (32-byte key file, or scrypt of a passphrase)
      └─ wrap key = HKDF(master, "keyring-wrap") seals, in the keyring file:
           ├─ system root (random)  -> system TenantKeys, system keys (audit chain, signing key)
           └─ tenant root (random, one per tenant)
                 └─ HKDF labels -> db_key, vectors_key, audit_key, cache_key

The sealed system root doubles as the keyring's key check value: a master key that cannot
open it is the wrong one, reported as a :class:`ConfigurationError`, not a crypto error.
Rotating the master key re-wraps the roots and changes no derived key, so no data has to
be re-encrypted. Destroying a tenant deletes its wrapped root (crypto-shredding): every key
derived from it, and everything sealed with those, is gone for good.

Sealed blobs are ``version (1 byte) || nonce (12 bytes) || AES-256-GCM ciphertext+tag``.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from appliance.errors import (
    ConfigurationError,
    DecryptionFailed,
)

KEY_BYTES = 32
SALT_BYTES = 16
SEAL_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1


# --- sealing -------------------------------------------------------------------------------


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` with AES-256-GCM under a fresh random nonce.

    Args:
        key: 32-byte key.
        plaintext: Bytes to protect.
        aad: Associated data that must be presented again to open the blob.

    Returns:
        ``version || nonce || ciphertext+tag``.
    """
    _check_key(key)
    nonce = os.urandom(_NONCE_BYTES)
    return bytes((SEAL_VERSION,)) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open a blob made by :func:`seal`.

    Raises:
        DecryptionFailed: Wrong key or aad, an altered or truncated blob, an unknown version.
    """
    _check_key(key)
    if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES:
        raise DecryptionFailed("sealed blob is truncated")
    if blob[0] != SEAL_VERSION:
        raise DecryptionFailed(f"sealed blob has unknown format version {blob[0]}")
    nonce, body = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionFailed(
            "sealed blob did not open: wrong key, or the data was altered"
        ) from None


def derive_key(root: bytes, label: str) -> bytes:
    """A 32-byte subkey of ``root`` for one purpose (HKDF-SHA256, ``info`` = the label)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label.encode())
    return hkdf.derive(root)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"AES-256-GCM needs a {KEY_BYTES}-byte key, got {len(key)} bytes")


# --- files holding secrets -----------------------------------------------------------------


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if absent, the directory itself with mode 0700.

    An existing directory is left as the administrator set it up.
    """
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # mkdir's mode is filtered through the umask


def create_file_once(path: Path, data: bytes, *, mode: int = 0o600) -> bytes:
    """Create ``path`` holding ``data`` atomically, unless it already exists.

    The data is written to a temporary file, fsynced and hard-linked into place, so no
    reader ever sees a partly written file and two processes racing agree on one content.

    Returns:
        The file's content: ``data``, or what the process that won a race wrote.
    """
    make_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # exactly this mode, whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return data


def fsync_dir(path: Path) -> None:
    """Make a rename or link inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_key_file(path: Path) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigurationError(
            f"master key file {path} does not exist: restore it from your backup "
            "(a new key cannot open existing data), or allow creating it for a new installation"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(f"master key path {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigurationError(
            f"master key file {path} is accessible to group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}`"
        )
    try:
        material = path.read_bytes()
    except PermissionError:
        raise ConfigurationError(
            f"cannot read master key file {path}: run the appliance as the user that owns it"
        ) from None
    if len(material) != KEY_BYTES:
        raise ConfigurationError(
            f"master key file {path} holds {len(material)} bytes, expected {KEY_BYTES}: "
            "it is not a master key; restore the right file from your backup"
        )
    return material


# --- master key ----------------------------------------------------------------------------


class MasterKey:
    """The root of the key hierarchy: 32 secret bytes from a key file or a passphrase."""

    __slots__ = ("_material",)

    def __init__(self, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise ConfigurationError(f"a master key is {KEY_BYTES} bytes, got {len(material)}")
        self._material = bytes(material)

    def __repr__(self) -> str:
        return "MasterKey(<secret>)"

    @classmethod
    def generate(cls) -> MasterKey:
        """A new random master key (for a new installation, or to rotate to)."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_file(cls, path: Path, *, create: bool) -> MasterKey:
        """Read the master key file, or create it with 32 random bytes.

        Args:
            path: The key file; created with mode 0600 (its directory 0700) when absent.
            create: Create the file when it does not exist; otherwise its absence is an error.

        Raises:
            ConfigurationError: Missing file (and ``create`` false), a file readable by group
                or others, a file of the wrong length, an unreadable file.
        """
        if create and not path.exists():
            create_file_once(path, os.urandom(KEY_BYTES))
        return cls(_read_key_file(path))

    @classmethod
    def from_passphrase(cls, passphrase: str, salt_path: Path) -> MasterKey:
        """Derive the master key from a passphrase with scrypt (n=2**15, r=8, p=1).

        Args:
            passphrase: The administrator's passphrase (non-empty).
            salt_path: 16-byte salt file, created once with random bytes when absent.

        Raises:
            ConfigurationError: Empty passphrase, or a salt file of the wrong length.
        """
        if not passphrase:
            raise ConfigurationError("the master passphrase is empty: set a non-empty passphrase")
        salt = create_file_once(salt_path, os.urandom(SALT_BYTES))
        if len(salt) != SALT_BYTES:
            raise ConfigurationError(
                f"salt file {salt_path} holds {len(salt)} bytes, expected {SALT_BYTES}: "
                "restore it from your backup (without it the passphrase opens nothing)"
            )
        kdf = Scrypt(salt=salt, length=KEY_BYTES, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
        return cls(kdf.derive(passphrase.encode("utf-8")))

    def derive(self, label: str) -> bytes:
        """A 32-byte subkey of the master key for one purpose."""
        return derive_key(self._material, label)
