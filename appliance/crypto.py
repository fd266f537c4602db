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
import re
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from appliance.errors import (
    ConfigurationError,
    Conflict,
    DecryptionFailed,
    InvalidInput,
    NotFound,
)

KEY_BYTES = 32
SALT_BYTES = 16
SEAL_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_SCRYPT_N = 2**15
_SCRYPT_R = 8
_SCRYPT_P = 1
_TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_KEYRING_SCHEMA = 1
_SYSTEM_AAD = b"keyring:system"


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


# --- tenant keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantKeys:
    """The data keys of one tenant (``tenant`` None: the system's own keys)."""

    tenant: str | None
    db_key: bytes = field(repr=False)
    """SQLCipher key of the tenant's document DB."""
    vectors_key: bytes = field(repr=False)
    """Seals the tenant's vector index files."""
    audit_key: bytes = field(repr=False)
    """Seals the payloads of the tenant's audit entries."""
    cache_key: bytes = field(repr=False)
    """Seals the tenant's caches."""

    @classmethod
    def derive(cls, tenant: str | None, root: bytes) -> TenantKeys:
        """Derive every data key from a root key; each label gives an independent key."""
        return cls(
            tenant=tenant,
            db_key=derive_key(root, "data/db"),
            vectors_key=derive_key(root, "data/vectors"),
            audit_key=derive_key(root, "data/audit"),
            cache_key=derive_key(root, "data/cache"),
        )


@dataclass(frozen=True, slots=True)
class TenantInfo:
    """A tenant as the keyring registers it."""

    name: str
    created_at: datetime


def check_tenant_name(name: str) -> str:
    """Return ``name`` if it is a valid tenant name, else raise :class:`InvalidInput`."""
    if not isinstance(name, str) or _TENANT_NAME.fullmatch(name) is None:
        raise InvalidInput(
            f"invalid tenant name {name!r}: use 1-63 characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _tenant_aad(name: str) -> bytes:
    # Prefixed so a tenant named "system" can never share the system root's aad.
    return b"keyring:tenant:" + name.encode()


# --- keyring -------------------------------------------------------------------------------

_KEYRING_DDL = (
    "CREATE TABLE IF NOT EXISTS system ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), wrapped BLOB NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tenants ("
    " name TEXT PRIMARY KEY, wrapped BLOB NOT NULL, created_at TEXT NOT NULL)",
)


class KeyRing:
    """The registry of tenants and their root keys, wrapped by the master key, in SQLite.

    Thread-safe. Every lookup reads the file, so a tenant destroyed by another process is
    gone here too. Deleted rows are zeroed (``secure_delete``) and the file is vacuumed,
    so a destroyed tenant's wrapped key is not left in the file.

    Args:
        path: The keyring file, e.g. ``<home>/keys/keyring.db`` (created, mode 0600).
        master: The master key.

    Raises:
        ConfigurationError: The master key does not open this keyring, or the file is not a
            keyring.
    """

    def __init__(self, path: Path, master: MasterKey) -> None:
        self._path = path
        self._wrap_key = master.derive("keyring-wrap")
        self._lock = threading.Lock()
        self._derived: dict[str, tuple[bytes, TenantKeys]] = {}
        if not path.exists():
            create_file_once(path, b"")
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        try:
            self._conn.execute("PRAGMA secure_delete = ON")
            self._system_root = self._open_or_init()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise ConfigurationError(
                f"keyring {path} is not a readable keyring database ({exc}): restore it from backup"
            ) from None
        except BaseException:
            self._conn.close()
            raise

    def _open_or_init(self) -> bytes:
        with self._transaction():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _KEYRING_SCHEMA:
                raise ConfigurationError(
                    f"keyring {self._path} was written by a newer appliance (schema {version})"
                )
            if version == 0:
                for statement in _KEYRING_DDL:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {_KEYRING_SCHEMA}")
            row = self._conn.execute("SELECT wrapped FROM system WHERE id = 1").fetchone()
            if row is not None:
                return self._unwrap(row[0], _SYSTEM_AAD)
            root = os.urandom(KEY_BYTES)
            self._conn.execute(
                "INSERT INTO system (id, wrapped, created_at) VALUES (1, ?, ?)",
                (seal(self._wrap_key, root, _SYSTEM_AAD), _now()),
            )
            return root

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return open_sealed(self._wrap_key, wrapped, aad)
        except DecryptionFailed:
            raise ConfigurationError(
                f"master key does not open the keyring at {self._path}: "
                "wrong passphrase or key file?"
            ) from None

    @property
    def path(self) -> Path:
        """The keyring file."""
        return self._path

    def create_tenant(self, name: str) -> TenantKeys:
        """Register a tenant with a new random root key.

        Raises:
            InvalidInput: The name breaks the rule ``^[a-z0-9][a-z0-9_-]{0,62}$``.
            Conflict: The tenant exists.
        """
        check_tenant_name(name)
        root = os.urandom(KEY_BYTES)
        wrapped = seal(self._wrap_key, root, _tenant_aad(name))
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO tenants (name, wrapped, created_at) VALUES (?, ?, ?)",
                    (name, wrapped, _now()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"tenant {name!r} already exists") from None
        return TenantKeys.derive(name, root)

    def tenant_keys(self, name: str) -> TenantKeys:
        """The data keys of a tenant.

        Raises:
            InvalidInput: Not a valid tenant name.
            NotFound: No such tenant (never created, or destroyed).
        """
        check_tenant_name(name)
        with self._lock:
            row = self._conn.execute(
                "SELECT wrapped FROM tenants WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                self._derived.pop(name, None)
                raise NotFound(f"tenant {name!r} does not exist")
            # The row is read every time, so a destroy in any process takes effect at once;
            # only the unwrap and derivation (~50 µs) are skipped while the row is unchanged.
            cached = self._derived.get(name)
            if cached is not None and cached[0] == row[0]:
                return cached[1]
            keys = TenantKeys.derive(name, self._unwrap(row[0], _tenant_aad(name)))
            self._derived[name] = (row[0], keys)
            return keys

    def tenants(self) -> list[TenantInfo]:
        """Every registered tenant, by name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, created_at FROM tenants ORDER BY name"
            ).fetchall()
        return [TenantInfo(name, datetime.fromisoformat(created)) for name, created in rows]

    def destroy_tenant(self, name: str) -> None:
        """Delete a tenant's root key for good (crypto-shredding), then vacuum the file.

        Raises:
            InvalidInput: Not a valid tenant name.
            NotFound: No such tenant.
        """
        check_tenant_name(name)
        with self._lock:
            cursor = self._conn.execute("DELETE FROM tenants WHERE name = ?", (name,))
            self._derived.pop(name, None)
            if cursor.rowcount == 0:
                raise NotFound(f"tenant {name!r} does not exist")
            self._conn.execute("VACUUM")

    def rotate_master(self, new: MasterKey) -> None:
        """Re-wrap every root key under ``new`` in one transaction; derived keys are unchanged.

        Afterwards only ``new`` opens the keyring, so persist it first: e.g. create it with
        ``MasterKey.from_file(new_path, create=True)``, rotate, then move it into place.

        Raises:
            ConfigurationError: A wrapped key does not open; nothing was changed.
        """
        new_wrap = new.derive("keyring-wrap")
        with self._lock:
            with self._transaction():
                rows = self._conn.execute("SELECT name, wrapped FROM tenants").fetchall()
                for name, wrapped in rows:
                    root = self._unwrap(wrapped, _tenant_aad(name))
                    self._conn.execute(
                        "UPDATE tenants SET wrapped = ? WHERE name = ?",
                        (seal(new_wrap, root, _tenant_aad(name)), name),
                    )
                self._conn.execute(
                    "UPDATE system SET wrapped = ? WHERE id = 1",
                    (seal(new_wrap, self._system_root, _SYSTEM_AAD),),
                )
            self._wrap_key = new_wrap
            # Roots wrapped by the old master must not linger in free pages.
            self._conn.execute("VACUUM")

    def system_keys(self) -> TenantKeys:
        """Data keys for what belongs to no tenant (e.g. audit entries without a tenant)."""
        return TenantKeys.derive(None, self._system_root)

    def system_key(self, purpose: str) -> bytes:
        """A 32-byte system key for one purpose (e.g. ``"audit-chain"``).

        Derived from the system root, so it survives a master key rotation.
        """
        if not purpose:
            raise InvalidInput("a system key needs a purpose")
        return derive_key(self._system_root, "system/" + purpose)

    def close(self) -> None:
        """Close the keyring file."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> KeyRing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
