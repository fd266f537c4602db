"""The audit log's Ed25519 signing key: sealed by the master key on disk, public key beside it.

The private key file holds ``seal(system_key("audit-signing-key"), raw 32-byte Ed25519
private key, aad=b"appliance-audit-signing-key")``; only the master key opens it. The public
key is written next to it with the suffix ``.pub`` as a PEM ``SubjectPublicKeyInfo``
(``openssl pkey -pubin -in FILE -text`` reads it), for auditors who verify exports offline.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from appliance.audit.records import (
    Checkpoint,
    ExportHeader,
    checkpoint_message,
    export_header_message,
)
from appliance.crypto import create_file_once, open_sealed, seal
from appliance.errors import ConfigurationError, DecryptionFailed, InvalidInput
from appliance.keyring import KeyRing

_AAD = b"appliance-audit-signing-key"
_RAW = serialization.Encoding.Raw
_RAW_FORMAT = serialization.PublicFormat.Raw


def public_key_path(signing_key_path: Path) -> Path:
    """Where the public key of ``signing_key_path`` lives (same name, suffix ``.pub``)."""
    return signing_key_path.with_suffix(".pub")


def load_public_key(key: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from raw 32 bytes or PEM text.

    Raises:
        InvalidInput: Neither form, or not an Ed25519 key.
    """
    try:
        if len(key) == 32:
            return Ed25519PublicKey.from_public_bytes(key)
        loaded = serialization.load_pem_public_key(key)
    except ValueError:
        loaded = None
    if not isinstance(loaded, Ed25519PublicKey):
        raise InvalidInput(
            "public key is neither 32 raw bytes nor a PEM Ed25519 public key "
            "(pass the content of the audit signing key's .pub file)"
        )
    return loaded


def signature_valid(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s signature of ``message``."""
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


class CheckpointSigner:
    """Signs the audit log's checkpoints and export headers, and nothing else.

    Args:
        path: The sealed private key file.
        keyring: Provides the key that seals the private key.
        create: Create a new key pair when ``path`` does not exist.

    Raises:
        ConfigurationError: The file is missing (and ``create`` is false), or the master
            key does not open it.
    """

    def __init__(self, path: Path, keyring: KeyRing, *, create: bool) -> None:
        if path.suffix == ".pub":
            raise ConfigurationError(f"audit signing key path {path} must not end in .pub")
        self.path = path
        self.public_path = public_key_path(path)
        wrap_key = keyring.system_key("audit-signing-key")
        if create and not path.exists():
            fresh = Ed25519PrivateKey.generate().private_bytes(
                _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            create_file_once(path, seal(wrap_key, fresh, _AAD))
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            raise ConfigurationError(
                f"audit signing key {path} is missing but the audit log already has entries: "
                "restore the file from backup (a new key would not match the old checkpoints)"
            ) from None
        try:
            raw = open_sealed(wrap_key, sealed, _AAD)
        except DecryptionFailed:
            raise ConfigurationError(
                f"audit signing key {path} does not open with this master key: "
                "wrong master key, or the file was replaced"
            ) from None
        self._private = Ed25519PrivateKey.from_private_bytes(raw)
        self.public_key = self._private.public_key()
        if not self.public_path.exists():
            create_file_once(self.public_path, self.public_pem(), mode=0o644)

    def public_raw(self) -> bytes:
        """The 32-byte raw public key."""
        return self.public_key.public_bytes(_RAW, _RAW_FORMAT)

    def public_pem(self) -> bytes:
        """The public key as PEM ``SubjectPublicKeyInfo``."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_file_matches(self) -> bool:
        """Whether the ``.pub`` file beside the key holds this key's public key."""
        try:
            content = self.public_path.read_bytes()
            return load_public_key(content).public_bytes(_RAW, _RAW_FORMAT) == self.public_raw()
        except (OSError, InvalidInput):
            return False

    def checkpoint(self, seq: int, hash_: bytes, ts: str, prev_seq: int) -> Checkpoint:
        """A signed checkpoint for entry ``seq``."""
        signature = self._private.sign(checkpoint_message(seq, hash_, ts, prev_seq))
        return Checkpoint(seq=seq, hash=hash_, ts=ts, prev_seq=prev_seq, signature=signature)

    def export_signature(self, header: ExportHeader) -> bytes:
        """Sign an export header (see :func:`export_header_message`)."""
        return self._private.sign(export_header_message(header))
