"""Domain errors.

Each error carries the HTTP status it maps to, an RFC 9457 problem type and a short
title. The API turns any :class:`ApplianceError` into ``application/problem+json``;
the CLI prints ``error: <detail>`` on one line and exits non-zero. ``detail`` is
written for the person who has to fix the problem: it names the thing at fault and
what to do about it, and it never holds document text, questions or answers.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "urn:appliance:problem:"


class ApplianceError(Exception):
    """Base class of every error the appliance reports to a user."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extensions)
        return body


# --- generic -----------------------------------------------------------------


class InvalidInput(ApplianceError):
    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class NotFound(ApplianceError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(ApplianceError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class Unauthorized(ApplianceError):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid API key"


class Forbidden(ApplianceError):
    status = 403
    slug = "forbidden"
    title = "Not allowed for this key's role"


class Overloaded(ApplianceError):
    status = 503
    slug = "overloaded"
    title = "Busy, retry later"

    def __init__(self, detail: str, retry_after: int = 1, **extensions: Any) -> None:
        super().__init__(detail, **extensions)
        self.retry_after = retry_after


class ConfigurationError(ApplianceError):
    status = 500
    slug = "configuration"
    title = "The appliance is misconfigured"


# --- models ------------------------------------------------------------------


class ModelError(ApplianceError):
    status = 500
    slug = "model"
    title = "Model error"


class UnknownModel(ModelError):
    status = 404
    slug = "unknown-model"
    title = "Unknown model"


class ModelIntegrityError(ModelError):
    """A model file is missing or its sha256 differs from the one pinned in the catalog."""

    status = 500
    slug = "model-integrity"
    title = "Model file does not match its pinned sha256"


class ModelFormatError(ModelError):
    """A file is not a valid model of the expected format (GGUF / ONNX)."""

    status = 422
    slug = "model-format"
    title = "Not a valid model file"


class GenerationError(ModelError):
    status = 502
    slug = "generation"
    title = "The language model failed"


class GenerationTimeout(ModelError):
    """A generation ran past the per-request timeout and was stopped."""

    status = 504
    slug = "generation-timeout"
    title = "The language model took too long"


# --- documents -----------------------------------------------------------------


class DocumentError(ApplianceError):
    """A document could not be ingested. Each subclass says why."""

    status = 422
    slug = "document"
    title = "Document cannot be ingested"


class UnsupportedDocument(DocumentError):
    status = 415
    slug = "unsupported-document"
    title = "Unsupported document type"


class CorruptDocument(DocumentError):
    slug = "corrupt-document"
    title = "Corrupt or truncated document"


class EncryptedDocument(DocumentError):
    slug = "encrypted-document"
    title = "Document is encrypted"


class EmptyDocument(DocumentError):
    slug = "empty-document"
    title = "Document is empty"


class DocumentTooLarge(DocumentError):
    status = 413
    slug = "document-too-large"
    title = "Document exceeds a size limit"


# --- crypto ---------------------------------------------------------------------


class DecryptionFailed(ApplianceError):
    """Sealed data did not open: wrong key, or the blob was altered."""

    status = 500
    slug = "decryption-failed"
    title = "Encrypted data could not be opened"
