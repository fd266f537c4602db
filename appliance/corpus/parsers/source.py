"""The input every parser receives, and the wording of the errors they raise."""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.corpus.parsed import ParseLimits
from appliance.errors import CorruptDocument

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_MAX_NAME = 120


def display_name(filename: str) -> str:
    """A filename hint made safe for one-line messages and locations.

    The hint comes from the uploader, so it may hold newlines or be absurdly long; it is
    never used as a path.
    """
    name = _UNPRINTABLE.sub(" ", filename).strip() or "(unnamed)"
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 1] + "…"
    return name


def extension(filename: str) -> str:
    """The lower-case extension of a filename hint without the dot ("" when none)."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base.strip(".") else ""


@dataclass(frozen=True, slots=True)
class Source:
    """One document to parse.

    Attributes:
        data: The document's bytes.
        filename: The uploader's filename hint, as given.
        limits: The caps that apply.
        depth: How deep inside emails this document sits (0 for an upload).
    """

    data: bytes
    filename: str
    limits: ParseLimits
    depth: int = 0

    @property
    def name(self) -> str:
        """The filename hint, safe for messages."""
        return display_name(self.filename)

    def corrupt(self, what: str, exc: BaseException | None = None) -> CorruptDocument:
        """A CorruptDocument naming the file; the library's exception type, never its text.

        Library messages may quote document content, which must not reach logs or clients.
        """
        cause = f" ({type(exc).__name__})" if exc is not None else ""
        return CorruptDocument(f"{self.name}: {what}{cause}")
