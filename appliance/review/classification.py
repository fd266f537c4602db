"""Classification of a tenant's documents: tiers, routing, the review queue, learning.

For each document: rules first (deterministic; the matched span is the explanation); then
the active learned classifier when every label has enough examples (calibrated); else
zero-shot similarity to the label descriptions (uncalibrated: never automated unless the
taxonomy opts in). The confidence routes the result (``auto`` / ``review`` / ``human``);
what a person must see lands in the review queue, and every reviewer decision becomes a
training example for the next classifier version. Results are idempotent per (document
version, classifier version).

A document is represented by the normalised mean of its chunks' stored embeddings (no
re-embedding; a text sent for classification is chunked and embedded the same way) and by
its hashed word counts, the two views of the learned tier.
Examples are kept per embedding model: after a reindex to another model, training and the
nearest-example signal use only the examples the new model made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from appliance.errors import EmptyDocument, InvalidInput
from appliance.review import learner
from appliance.review.label_store import LabelStore
from appliance.review.labelling import Taxonomy

if TYPE_CHECKING:
    from appliance.corpus.corpus import TenantCorpus
    from appliance.inference.embedder import Embedder
    from appliance.services import Services

Vectors = npt.NDArray[np.float32]
Decision = Literal["accept", "correct"]
MAX_TEXT_CHARS = 1_000_000


def embed_chunks(embedder: Embedder, text: str) -> Vectors:
    """A text's chunk vectors, chunked as ingest would (documents longer than the window)."""
    from appliance.corpus.chunking import ChunkingPolicy, chunk_document
    from appliance.corpus.parsers import parse

    if not text.strip():
        raise InvalidInput("text: empty; send the text to classify")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(f"text: longer than {MAX_TEXT_CHARS} characters")
    doc = parse(text.encode("utf-8"), filename="text.txt")
    chunks = chunk_document(doc, embedder.count_tokens, ChunkingPolicy())
    return embedder.embed([doc.text[c.start : c.end] for c in chunks])


def label_store(services: Services, tenant: str) -> LabelStore:
    """The tenant's classification database, opened once per process."""
    return services.tenant_state(
        tenant, "classification", lambda folder, keys: LabelStore(folder / "labels.db", keys.db_key)
    )


@dataclass
class Subject:
    """What is being classified: its key, pooled vector, chunk vectors and text."""

    key: str
    vector: Vectors
    chunk_ids: list[int]
    chunk_vectors: Vectors
    text: str
    document_id: int | None = None

    @cached_property
    def terms(self) -> learner.Terms:
        """The hashed word counts of the text (the classifier's word view)."""
        return learner.terms(self.text)


Verdict = tuple[dict[str, float], str, bool]  # label probabilities, tier, calibrated


def _rule_verdict(tax: Taxonomy, subject: Subject, signals: dict[str, Any]) -> Verdict | None:
    """The first rule that matches decides, with its configured confidence and its span."""
    for rule in tax.rules:
        span = rule.match(subject.text)
        if span is not None:
            signals["rule"] = {
                "label": rule.label,
                "pattern": rule.pattern,
                "keywords": list(rule.keywords),
                "start": span[0],
                "end": span[1],
            }
            return {rule.label: rule.confidence}, "rule", True
    return None


@dataclass
class Classification:
    """Classification for one tenant, built per request from the shared services."""

    store: LabelStore
    corpus: TenantCorpus
    embedder: Embedder
    embedder_ref: str

    @classmethod
    def of(cls, services: Services, tenant: str) -> Classification:
        corpus = services.corpus(tenant)
        return cls(
            label_store(services, tenant),
            corpus,
            services.embedder(),
            services.embedder_entry().ref,
        )

    # --- subjects -------------------------------------------------------------------------

    def document(self, document_id: int, groups: frozenset[str] | None) -> Subject:
        store = self.corpus.store
        info = store.document(document_id, groups)  # NotFound outside the caller's view
        ids = store.document_chunk_ids(info.id)
        if not len(ids):
            raise EmptyDocument(f"document {document_id} has no text to classify")
        vectors = store.embeddings(ids)
        text = store.document_text(info.id, groups)
        return Subject(
            f"doc:{info.id}@{info.version}",
            learner.pool(vectors),
            ids.tolist(),
            vectors,
            text,
            info.id,
        )

    def text(self, text: str) -> Subject:
        vectors = embed_chunks(self.embedder, text)
        key = "text:" + hashlib.sha256(text.encode()).hexdigest()[:32]
        return Subject(key, learner.pool(vectors), [], vectors, text)

    # --- taxonomies and training ----------------------------------------------------------

    def add_examples(self, taxonomy: str, items: list[tuple[str, str, str]]) -> int:
        """Add ``(label, text, source)`` examples; the texts are embedded and their words
        counted (hashed), not stored."""
        tax = self.store.taxonomy(taxonomy)
        for label, _, _ in items:
            tax.check_label(label)
        rows = []
        for label, text, source in items:
            subject = self.text(text)
            rows.append((label, subject.vector, "train", source, subject.terms))
        return self.store.add_examples(taxonomy, rows, self.embedder_ref)

    def train(self, taxonomy: str, by: str) -> dict[str, Any]:
        """Fit a calibrated classifier on the examples of the embedding model in use and make
        it the active version; ``left_out`` says how many examples other models made.

        The word view is trained too when every example has its word counts; examples
        stored before they were kept have none, and then the version reads embeddings only
        (``views`` and ``words_missing`` say so)."""
        tax = self.store.taxonomy(taxonomy)
        ex = self.store.examples(taxonomy, self.embedder_ref, words=True)
        labels = ex.labels
        left_out = self._left_out(taxonomy)
        missing = sum(t is None for t in ex.terms)
        words = None if missing else [t for t in ex.terms if t is not None]
        try:
            model = learner.train(ex.vectors, labels, words=words)
        except InvalidInput as exc:
            if not left_out["examples"]:
                raise
            raise InvalidInput(
                f"{exc} among the examples of embedding model {self.embedder_ref}; "
                f"{left_out['reason']}"
            ) from None
        counts = {label: labels.count(label) for label in tax.labels}
        params = {**model.to_json(), "counts": counts, "embedding_model": self.embedder_ref}
        number = self.store.add_version(taxonomy, params, by)
        version = next(v for v in self.store.versions(taxonomy) if v["version"] == number)
        return {**version, "left_out": left_out, "words_missing": missing}

    def _left_out(self, taxonomy: str) -> dict[str, Any]:
        """The examples another embedding model made: their count per model, and why."""
        others = {
            model or "unknown": n
            for model, n in self.store.example_models(taxonomy).items()
            if model != self.embedder_ref
        }
        total = sum(others.values())
        reason = None
        if total:
            each = ", ".join(f"{model}: {n}" for model, n in sorted(others.items()))
            unknown = (
                " ('unknown': stored before examples named their model)"
                if "unknown" in others
                else ""
            )
            reason = (
                f"{total} examples made by another embedding model than {self.embedder_ref} "
                f"were left out ({each}){unknown}; add them again from their sources to "
                "train on them"
            )
        return {"examples": total, "by_embedding_model": others, "reason": reason}

    # --- classifying ----------------------------------------------------------------------

    def classify(self, taxonomy: str, subject: Subject) -> dict[str, Any]:
        """The result for ``subject``; the stored one when this classifier version saw it."""
        tax = self.store.taxonomy(taxonomy)
        model, classifier = self._model(tax)
        known = self.store.result(taxonomy, subject.key, classifier)
        if known is not None:
            return known
        result = self._decide(tax, model, classifier, subject)
        result["id"] = self.store.save_result(
            taxonomy, subject.key, result, subject.vector, subject.terms
        )
        return result

    def _model(self, tax: Taxonomy) -> tuple[learner.LinearClassifier | None, str]:
        number = self.store.active_version(tax.name)
        if number is not None:
            params = self.store.version_params(tax.name, number)
            enough = all(params["counts"].get(lab, 0) >= tax.min_examples for lab in tax.labels)
            if enough and params.get("embedding_model") == self.embedder_ref:
                return learner.LinearClassifier.from_json(params), f"v{number}"
        return None, f"zero-shot:{self.embedder_ref}"

    def _decide(
        self,
        tax: Taxonomy,
        model: learner.LinearClassifier | None,
        classifier: str,
        subject: Subject,
    ) -> dict[str, Any]:
        signals: dict[str, Any] = {"nearest_examples": self._nearest(tax.name, subject.vector)}
        verdict = _rule_verdict(tax, subject, signals)  # rules first, then a model
        if verdict is None and model is not None:
            verdict = self._model_verdict(model, subject, signals)
        if verdict is None:
            verdict = self._zero_shot_verdict(tax, subject)
        probabilities, tier, calibrated = verdict
        label = max(probabilities, key=probabilities.__getitem__)
        confidence = probabilities[label]
        top = sorted(probabilities.items(), key=lambda kv: -kv[1])[:5]
        sample_key = f"{subject.key}|{classifier}"
        route = tax.route(confidence, calibrated=calibrated, sample_key=sample_key)
        return {
            "taxonomy": tax.name,
            "subject": subject.key,
            "document_id": subject.document_id,
            "label": label,
            "confidence": round(float(confidence), 6),
            "tier": tier,
            "route": route,
            "quality_sample": tax.quality_sample(route, sample_key=sample_key),
            "calibrated": calibrated,
            "classifier": classifier,
            "embedding_model": self.embedder_ref,
            "signals": {**signals, "top_labels": [{"label": k, "p": round(v, 6)} for k, v in top]},
        }

    def _model_verdict(
        self, model: learner.LinearClassifier, subject: Subject, signals: dict[str, Any]
    ) -> Verdict:
        tempered = model.tempered_logits(subject.vector[None, :], [subject.terms])
        p = learner.softmax(learner.sum_views(tempered))[0]
        probabilities = {c: float(v) for c, v in zip(model.classes, p, strict=True)}
        label = max(probabilities, key=probabilities.__getitem__)
        at = model.classes.index(label)
        signals["views"] = {
            view: round(float(learner.softmax(z)[0, at]), 6) for view, z in tempered.items()
        }
        signals["chunks"] = self._weighing_chunks(model, subject, label)
        return probabilities, "model", True

    def _zero_shot_verdict(self, tax: Taxonomy, subject: Subject) -> Verdict:
        names = list(tax.labels)
        described = [f"{n.replace('-', ' ')}: {tax.labels[n]}" for n in names]
        p = learner.zero_shot(subject.vector[None, :], self.embedder.embed(described))[0]
        return {n: float(v) for n, v in zip(names, p, strict=True)}, "zero-shot", False

    def _nearest(self, taxonomy: str, vector: Vectors, k: int = 3) -> list[dict[str, Any]]:
        vectors, labels, _, _ = self.store.examples(taxonomy, self.embedder_ref)
        if not labels or vectors.shape[1] != vector.shape[0]:
            return []  # no example in this model's space to compare with
        sims = vectors @ vector
        best = np.argsort(-sims)[:k]
        return [{"label": labels[i], "similarity": round(float(sims[i]), 4)} for i in best]

    @staticmethod
    def _weighing_chunks(
        model: learner.LinearClassifier, subject: Subject, label: str, k: int = 3
    ) -> list[dict[str, Any]]:
        if len(subject.chunk_vectors) < 2:
            return []
        p = model.embedding_probabilities(subject.chunk_vectors)[:, model.classes.index(label)]
        order = np.argsort(-p)[:k]
        ids = subject.chunk_ids or list(range(len(p)))
        key = "chunk_id" if subject.chunk_ids else "chunk"
        return [{key: int(ids[i]), "p": round(float(p[i]), 4)} for i in order]

    # --- review -----------------------------------------------------------------------------

    def decide(
        self, item_id: int, decision: Decision, label: str | None, note: str | None, reviewer: str
    ) -> dict[str, Any]:
        item = self.store.review_item(item_id)
        tax = self.store.taxonomy(item.taxonomy)
        if decision == "correct":
            if label is None:
                raise InvalidInput("label: a correction names the right label")
            final = tax.check_label(label)
        elif decision == "accept":
            if label not in (None, item.result["label"]):
                raise InvalidInput("label: an accepted result keeps its label; use 'correct'")
            final = item.result["label"]
        else:
            raise InvalidInput("decision: accept or correct")
        if note is not None and len(note) > 2000:
            raise InvalidInput("note: at most 2000 characters")
        self.store.decide(item_id, decision, final, note, reviewer)
        return {
            "id": item_id,
            "decision": decision,
            "label": final,
            "previous_label": item.result["label"],
            "taxonomy": item.taxonomy,
        }
