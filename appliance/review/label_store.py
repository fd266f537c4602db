"""The classification database of one tenant (SQLCipher, under the tenant's data key).

Taxonomies, labelled examples (as embeddings and hashed word counts: no document text is
kept here), classifier versions (plain parameters as JSON, never pickles), classification
results, the review queue and batch jobs (:mod:`appliance.review.batch_jobs`). One
connection, one lock, explicit transactions.

Each example records the embedding model that made its vector: vectors of different models
live in different spaces (and may differ in length), so training and the nearest-example
signal use only the examples of the model in use.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from appliance.encrypted_db import EncryptedDatabase
from appliance.errors import Conflict, NotFound
from appliance.review.batch_jobs import BatchJobs
from appliance.review.labelling import Taxonomy
from appliance.review.learner import Terms

_SCHEMA = """
CREATE TABLE IF NOT EXISTS taxonomies (
    name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY, taxonomy TEXT NOT NULL REFERENCES taxonomies(name) ON DELETE CASCADE,
    label TEXT NOT NULL, vector BLOB NOT NULL, origin TEXT NOT NULL, source TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    taxonomy TEXT NOT NULL REFERENCES taxonomies(name) ON DELETE CASCADE,
    number INTEGER NOT NULL, params TEXT NOT NULL, created_at TEXT NOT NULL, by TEXT NOT NULL,
    PRIMARY KEY (taxonomy, number));
CREATE TABLE IF NOT EXISTS active_versions (
    taxonomy TEXT PRIMARY KEY REFERENCES taxonomies(name) ON DELETE CASCADE,
    number INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY, taxonomy TEXT NOT NULL REFERENCES taxonomies(name) ON DELETE CASCADE,
    subject TEXT NOT NULL, classifier TEXT NOT NULL, label TEXT NOT NULL,
    confidence REAL NOT NULL, tier TEXT NOT NULL, route TEXT NOT NULL,
    calibrated INTEGER NOT NULL, result TEXT NOT NULL, vector BLOB NOT NULL,
    created_at TEXT NOT NULL, UNIQUE (taxonomy, subject, classifier));
CREATE TABLE IF NOT EXISTS review_items (
    id INTEGER PRIMARY KEY, result_id INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    taxonomy TEXT NOT NULL, confidence REAL NOT NULL, status TEXT NOT NULL,
    decision TEXT, label TEXT, note TEXT, reviewer TEXT, decided_at TEXT,
    created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS review_pending ON review_items (taxonomy, status, confidence);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, taxonomy TEXT NOT NULL, total INTEGER NOT NULL,
    done INTEGER NOT NULL, failed INTEGER NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL, finished_at TEXT)
"""
# Examples name their embedding model; rows from before get the model the taxonomy's latest
# version was trained with (NULL, unknown, when it has none). Review items mark quality
# samples of the auto route; jobs record their process and why they stopped.
_EXAMPLE_MODELS = """
ALTER TABLE examples ADD COLUMN embedding_model TEXT;
UPDATE examples SET embedding_model = (
    SELECT json_extract(v.params, '$.embedding_model') FROM versions v
    WHERE v.taxonomy = examples.taxonomy ORDER BY v.number DESC LIMIT 1);
CREATE INDEX examples_by_model ON examples (taxonomy, embedding_model);
ALTER TABLE review_items ADD COLUMN quality_sample INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN runner TEXT;
ALTER TABLE jobs ADD COLUMN error TEXT
"""
# Examples and results keep the hashed word 1-2 gram counts of their text (the word view of
# the classifier); rows from before have none.
_WORD_COUNTS = """
ALTER TABLE examples ADD COLUMN terms BLOB;
ALTER TABLE results ADD COLUMN terms BLOB
"""
MIGRATIONS = (_SCHEMA, _EXAMPLE_MODELS, _WORD_COUNTS)  # in order; never edit one that ran
_ITEM_COLUMNS = (
    "r.id, r.result_id, r.taxonomy, r.confidence, r.status, r.decision, r.label, r.note, "
    "r.reviewer, r.decided_at, r.created_at, r.quality_sample, s.result"
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Examples(NamedTuple):
    """A taxonomy's examples of one embedding model, oldest first."""

    vectors: npt.NDArray[np.float32]
    labels: list[str]
    origins: list[str]
    terms: list[Terms | None]  # asked for only; None: stored before word counts were kept


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: int
    result_id: int
    taxonomy: str
    confidence: float
    status: str
    decision: str | None
    label: str | None
    note: str | None
    reviewer: str | None
    decided_at: str | None
    created_at: str
    quality_sample: bool  # an automated result drawn for review, to measure the auto route
    result: dict[str, Any]


class LabelStore(EncryptedDatabase):
    """Thread-safe access to one tenant's classification database.

    Opening it marks ``interrupted`` the batch jobs a stopped process left ``running``.
    """

    def __init__(self, path: Path, key: bytes) -> None:
        super().__init__(path, key, "classification database", MIGRATIONS)
        self.jobs = BatchJobs(self, now)
        self.jobs.interrupt_orphans()

    # --- taxonomies --------------------------------------------------------------------

    def create_taxonomy(self, taxonomy: Taxonomy) -> None:
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM taxonomies WHERE name = ?", (taxonomy.name,)).fetchone():
                raise Conflict(f"taxonomy {taxonomy.name!r} already exists")
            spec = json.dumps(taxonomy.to_json())
            conn.execute("INSERT INTO taxonomies VALUES (?, ?, ?)", (taxonomy.name, spec, now()))

    def taxonomy(self, name: str) -> Taxonomy:
        rows = self._query("SELECT spec FROM taxonomies WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no taxonomy {name!r} in this tenant")
        return Taxonomy.from_json(json.loads(rows[0][0]))

    def taxonomies(self) -> list[Taxonomy]:
        rows = self._query("SELECT spec FROM taxonomies ORDER BY name")
        return [Taxonomy.from_json(json.loads(r[0])) for r in rows]

    def delete_taxonomy(self, name: str) -> None:
        with self.transaction() as conn:
            if not conn.execute("DELETE FROM taxonomies WHERE name = ?", (name,)).rowcount:
                raise NotFound(f"no taxonomy {name!r} in this tenant")

    # --- examples and versions ---------------------------------------------------------

    def add_examples(
        self,
        taxonomy: str,
        items: Sequence[tuple[str, npt.NDArray[np.float32], str, str, Terms]],
        embedding_model: str,
    ) -> int:
        """Add ``(label, vector, origin, source, terms)`` examples, all made by
        ``embedding_model``."""
        stamp = now()
        rows = [
            (
                taxonomy,
                lab,
                v.astype(np.float32).tobytes(),
                o,
                s,
                stamp,
                embedding_model,
                t.to_bytes(),
            )
            for lab, v, o, s, t in items
        ]
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO examples (taxonomy, label, vector, origin, source, created_at, "
                "embedding_model, terms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(items)

    def examples(self, taxonomy: str, embedding_model: str, *, words: bool = False) -> Examples:
        """The examples ``embedding_model`` made, oldest first; their word counts only when
        ``words`` (training needs them, the nearest-example signal does not)."""
        rows = self._query(
            f"SELECT vector, label, origin, {'terms' if words else 'NULL'} FROM examples "
            "WHERE taxonomy = ? AND embedding_model = ? ORDER BY id",
            (taxonomy, embedding_model),
        )
        if not rows:
            return Examples(np.zeros((0, 0), dtype=np.float32), [], [], [])
        vectors = np.stack([np.frombuffer(r[0], dtype=np.float32) for r in rows])
        terms = [Terms.from_bytes(r[3]) if r[3] is not None else None for r in rows]
        return Examples(vectors, [r[1] for r in rows], [r[2] for r in rows], terms if words else [])

    def example_models(self, taxonomy: str) -> dict[str | None, int]:
        """How many examples each embedding model made (None: unknown, stored before)."""
        rows = self._query(
            "SELECT embedding_model, count(*) FROM examples WHERE taxonomy = ? GROUP BY 1",
            (taxonomy,),
        )
        return {model: n for model, n in rows}

    def example_counts(self, taxonomy: str) -> dict[str, dict[str, int]]:
        rows = self._query(
            "SELECT label, origin, count(*) FROM examples WHERE taxonomy = ? GROUP BY 1, 2",
            (taxonomy,),
        )
        counts: dict[str, dict[str, int]] = {}
        for label, origin, n in rows:
            counts.setdefault(label, {})[origin] = n
        return counts

    def add_version(self, taxonomy: str, params: dict[str, Any], by: str) -> int:
        """Store a trained classifier as the next version and make it active."""
        with self.transaction() as conn:
            last = conn.execute(
                "SELECT max(number) FROM versions WHERE taxonomy = ?", (taxonomy,)
            ).fetchone()[0]
            number = (last or 0) + 1
            conn.execute(
                "INSERT INTO versions VALUES (?, ?, ?, ?, ?)",
                (taxonomy, number, json.dumps(params), now(), by),
            )
            conn.execute(
                "INSERT INTO active_versions VALUES (?, ?) ON CONFLICT (taxonomy) "
                "DO UPDATE SET number = excluded.number",
                (taxonomy, number),
            )
        return number

    def versions(self, taxonomy: str) -> list[dict[str, Any]]:
        active = self.active_version(taxonomy)
        rows = self._query(
            "SELECT number, params, created_at, by FROM versions WHERE taxonomy = ? "
            "ORDER BY number",
            (taxonomy,),
        )
        out = []
        for number, params, created, by in rows:
            p = json.loads(params)
            out.append(
                {
                    "version": number,
                    "active": number == active,
                    "created_at": created,
                    "by": by,
                    "examples": p["examples"],
                    "ece": p["ece"],
                    "labels": p["classes"],
                    "temperature": p["temperature"],
                    "views": p.get("views", ["embedding"]),
                    "embedding_model": p.get("embedding_model"),
                }
            )
        return out

    def active_version(self, taxonomy: str) -> int | None:
        rows = self._query("SELECT number FROM active_versions WHERE taxonomy = ?", (taxonomy,))
        return int(rows[0][0]) if rows else None

    def version_params(self, taxonomy: str, number: int) -> dict[str, Any]:
        rows = self._query(
            "SELECT params FROM versions WHERE taxonomy = ? AND number = ?", (taxonomy, number)
        )
        if not rows:
            raise NotFound(f"taxonomy {taxonomy!r} has no classifier version {number}")
        params: dict[str, Any] = json.loads(rows[0][0])
        return params

    def activate_version(self, taxonomy: str, number: int) -> None:
        self.version_params(taxonomy, number)
        with self.transaction() as conn:
            conn.execute(
                "UPDATE active_versions SET number = ? WHERE taxonomy = ?", (number, taxonomy)
            )

    # --- results and the review queue --------------------------------------------------

    def result(self, taxonomy: str, subject: str, classifier: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT id, result FROM results WHERE taxonomy = ? AND subject = ? AND classifier = ?",
            (taxonomy, subject, classifier),
        )
        return {**json.loads(rows[0][1]), "id": rows[0][0]} if rows else None

    def save_result(
        self,
        taxonomy: str,
        subject: str,
        result: dict[str, Any],
        vector: npt.NDArray[np.float32],
        terms: Terms,
    ) -> int:
        """Store a result (and its review item when a person must see it); returns its id.

        A person sees the ``review`` and ``human`` routes, and the ``auto`` results drawn as
        quality samples. The document's pooled vector and word counts are kept with it, so a
        reviewer's correction can become a training example without keeping the document's
        text here.
        """
        stamp = now()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO results (taxonomy, subject, classifier, label, confidence, tier, "
                "route, calibrated, result, vector, created_at, terms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    taxonomy,
                    subject,
                    result["classifier"],
                    result["label"],
                    result["confidence"],
                    result["tier"],
                    result["route"],
                    int(result["calibrated"]),
                    json.dumps(result),
                    vector.astype(np.float32).tobytes(),
                    stamp,
                    terms.to_bytes(),
                ),
            )
            result_id = int(cur.lastrowid)
            sample = bool(result.get("quality_sample"))
            if result["route"] in ("review", "human") or sample:
                conn.execute(
                    "INSERT INTO review_items (result_id, taxonomy, confidence, status, "
                    "created_at, quality_sample) VALUES (?, ?, ?, 'pending', ?, ?)",
                    (result_id, taxonomy, result["confidence"], stamp, int(sample)),
                )
        return result_id

    def review_items(
        self, taxonomy: str | None, status: str = "pending", limit: int = 50
    ) -> list[ReviewItem]:
        where = "r.status = ?" + (" AND r.taxonomy = ?" if taxonomy else "")
        params: list[Any] = [status] + ([taxonomy] if taxonomy else [])
        rows = self._query(
            f"SELECT {_ITEM_COLUMNS} FROM review_items r "
            f"JOIN results s ON s.id = r.result_id WHERE {where} "
            "ORDER BY r.confidence ASC, r.created_at ASC, r.id ASC LIMIT ?",
            [*params, limit],
        )
        return [_item(r) for r in rows]

    def review_item(self, item_id: int) -> ReviewItem:
        rows = self._query(
            f"SELECT {_ITEM_COLUMNS} FROM review_items r "
            "JOIN results s ON s.id = r.result_id WHERE r.id = ?",
            (item_id,),
        )
        if not rows:
            raise NotFound(f"no review item {item_id} in this tenant")
        return _item(rows[0])

    def decide(
        self, item_id: int, decision: str, label: str, note: str | None, reviewer: str
    ) -> None:
        """Record a decision once (409 if already decided); the reviewed document, with the
        label the reviewer settled on, becomes a training example in the same transaction,
        under the embedding model its result names."""
        with self.transaction() as conn:
            done = conn.execute(
                "UPDATE review_items SET status = 'decided', decision = ?, label = ?, note = ?, "
                "reviewer = ?, decided_at = ? WHERE id = ? AND status = 'pending'",
                (decision, label, note, reviewer, now(), item_id),
            ).rowcount
            if not done:
                raise Conflict(f"review item {item_id} was already decided")
            conn.execute(
                "INSERT INTO examples (taxonomy, label, vector, origin, source, created_at, "
                "embedding_model, terms) SELECT r.taxonomy, ?, s.vector, ?, s.subject, ?, "
                "json_extract(s.result, '$.embedding_model'), s.terms FROM review_items r "
                "JOIN results s ON s.id = r.result_id WHERE r.id = ?",
                (label, f"review-{decision}", now(), item_id),
            )

    def route_stats(self, taxonomy: str) -> dict[str, Any]:
        """Counts for the metrics: results per route and label, how many of each route went
        to a reviewer (``queued``: the auto route's quality samples included) and what the
        reviewers decided."""
        queue = "FROM review_items r JOIN results s ON s.id = r.result_id WHERE r.taxonomy = ?"
        by_day: dict[str, dict[str, int]] = {}
        for day, label, n in self._query(
            "SELECT substr(created_at, 1, 10), label, count(*) FROM results WHERE taxonomy = ? "
            "GROUP BY 1, 2 ORDER BY 1",
            (taxonomy,),
        ):
            by_day.setdefault(day, {})[label] = n
        return {
            "routes": self._counts(
                "SELECT route, count(*) FROM results WHERE taxonomy = ?", taxonomy
            ),
            "labels": self._counts(
                "SELECT label, count(*) FROM results WHERE taxonomy = ?", taxonomy
            ),
            "reviewed": self._query(
                f"SELECT s.route, s.label, r.decision {queue} AND r.status = 'decided'", (taxonomy,)
            ),
            "queued": self._counts(f"SELECT s.route, count(*) {queue}", taxonomy),
            "confidences": [
                r[0]
                for r in self._query(
                    "SELECT confidence FROM results WHERE taxonomy = ?", (taxonomy,)
                )
            ],
            "labels_by_day": by_day,
        }

    def _counts(self, select: str, taxonomy: str) -> dict[str, int]:
        """``{key: count}`` from a ``SELECT key, count(*) ...`` of one taxonomy's rows."""
        return dict(self._query(f"{select} GROUP BY 1", (taxonomy,)))


def _item(row: Sequence[Any]) -> ReviewItem:
    return ReviewItem(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        bool(row[11]),
        json.loads(row[12]),
    )
