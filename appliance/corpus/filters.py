"""Document filters: which of a tenant's documents a search or an ask may draw on.

A filter narrows the documents by id, by source name (glob patterns, as SQLite's
``GLOB``: ``contracts/*.pdf``), by media type and by when the document last changed. The
fields combine with AND; the values inside one field with OR. Like the ACL, a filter is
applied inside both retrievers before they cut to their top candidates, so it never costs
recall; it only ever narrows what the caller's groups already allow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from appliance.errors import InvalidInput

MAX_VALUES = 1000
MAX_PATTERN_CHARS = 300


@dataclass(frozen=True, slots=True)
class DocumentFilter:
    """Documents to keep; an empty field does not restrict."""

    document_ids: tuple[int, ...] = ()
    sources: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()
    updated_after: str | None = None  # ISO 8601, UTC
    updated_before: str | None = None

    @classmethod
    def of(
        cls,
        *,
        document_ids: Sequence[int] = (),
        sources: Sequence[str] = (),
        media_types: Sequence[str] = (),
        updated_after: str | datetime | None = None,
        updated_before: str | datetime | None = None,
    ) -> DocumentFilter:
        """A checked filter (``InvalidInput`` naming the field that is wrong)."""
        for name, values in (
            ("document_ids", document_ids),
            ("sources", sources),
            ("media_types", media_types),
        ):
            if len(values) > MAX_VALUES:
                raise InvalidInput(f"filters.{name}: at most {MAX_VALUES} values")
        if any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in document_ids):
            raise InvalidInput("filters.document_ids: positive integers")
        for name, values in (("sources", sources), ("media_types", media_types)):
            if any(not isinstance(v, str) or not v.strip() for v in values):
                raise InvalidInput(f"filters.{name}: non-empty strings")
            if any(len(v) > MAX_PATTERN_CHARS for v in values):
                raise InvalidInput(f"filters.{name}: at most {MAX_PATTERN_CHARS} characters each")
        after = _instant(updated_after, "updated_after")
        before = _instant(updated_before, "updated_before")
        if after is not None and before is not None and after >= before:
            raise InvalidInput("filters: updated_after must be earlier than updated_before")
        return cls(
            tuple(sorted(set(document_ids))),
            tuple(sorted(set(sources))),
            tuple(sorted({m.strip().lower() for m in media_types})),
            after,
            before,
        )

    @property
    def empty(self) -> bool:
        return not (
            self.document_ids
            or self.sources
            or self.media_types
            or self.updated_after
            or self.updated_before
        )

    def sql(self) -> tuple[str, list[Any]]:
        """A condition on ``documents d`` joined with its current version ``v``."""
        parts: list[str] = []
        params: list[Any] = []
        if self.document_ids:
            parts.append(f"d.id IN ({','.join('?' * len(self.document_ids))})")
            params += self.document_ids
        if self.sources:
            parts.append("(" + " OR ".join("d.source GLOB ?" for _ in self.sources) + ")")
            params += self.sources
        if self.media_types:
            parts.append(f"lower(v.media_type) IN ({','.join('?' * len(self.media_types))})")
            params += self.media_types
        if self.updated_after:
            parts.append("d.updated_at >= ?")
            params.append(self.updated_after)
        if self.updated_before:
            parts.append("d.updated_at < ?")
            params.append(self.updated_before)
        return (" AND ".join(parts) or "1"), params

    def canonical(self) -> str:
        """A stable text of the filter, for cache keys."""
        return json.dumps(
            [
                self.document_ids,
                self.sources,
                self.media_types,
                self.updated_after,
                self.updated_before,
            ]
        )


def _instant(value: str | datetime | None, name: str) -> str | None:
    """An ISO 8601 date or time as the store writes it (UTC, seconds)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(
                f"filters.{name}: an ISO 8601 date or time, such as 2026-03-31 or "
                f"2026-03-31T12:00:00Z, not {value!r}"
            ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds")
