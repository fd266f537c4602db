"""Ask: retrieve -> abstain on weak evidence -> prompt -> generate -> verify -> answer.

The steps are separate so the API can run the generation behind the model gate (and
stream it), while the CLI and the evaluation run them in one call (:func:`ask`). An
answer's every returned sentence is supported by a cited source (see ``grounding``);
when retrieval finds nothing close enough, or no sentence survives verification, the
answer is the abstention sentence with ``abstained: true``.

Identical questions are answered from a per-tenant cache keyed by an HMAC (under the
tenant's cache key) of the tenant, the caller's groups, the normalised question, k, the
corpus version and the models: any ingest or deletion changes the corpus version, so
an old answer is never served. Cached answers are sealed (AES-GCM); the question is not
stored, not even as a plain hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from appliance.corpus.filters import DocumentFilter
from appliance.corpus.search import SearchHit, search
from appliance.crypto import open_sealed, seal
from appliance.errors import InvalidInput
from appliance.inference.chat import GenerationParams, Message
from appliance.review import grounding

if TYPE_CHECKING:
    from appliance.corpus.corpus import TenantCorpus
    from appliance.inference.catalog import ModelEntry
    from appliance.inference.chat import ChatModel
    from appliance.services import Services

MAX_QUESTION_CHARS = 2000
DEFAULT_K = 6
MIN_EVIDENCE = 0.40  # best vector cosine below this: abstain (tuned: docs/review.md)
ANSWER_TOKENS = 256
AnswerMode = Literal["auto", "generate", "extract"]


def check_question(question: str) -> str:
    text = " ".join(question.split())
    if not text:
        raise InvalidInput("question: empty; ask something")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"question: longer than {MAX_QUESTION_CHARS} characters")
    return text


@dataclass
class Retrieval:
    question: str
    hits: list[SearchHit]
    evidence: float
    retrieve_ms: float

    @property
    def weak(self) -> bool:
        return not self.hits or self.evidence < MIN_EVIDENCE


def retrieve(
    corpus: TenantCorpus,
    question: str,
    k: int,
    groups: frozenset[str] | None,
    filters: DocumentFilter | None = None,
) -> Retrieval:
    started = time.perf_counter()
    hits = search(corpus, question, k=k, groups=groups, mode="hybrid", filters=filters)
    evidence = max((h.vector_score or 0.0 for h in hits), default=0.0)
    return Retrieval(question, hits, evidence, round((time.perf_counter() - started) * 1000, 1))


def model_versions(services: Services) -> dict[str, str]:
    """The models an answer depends on, each pinned by sha256 (the cache key, the audit)."""
    embedder = services.embedder_entry()
    versions = {"chat": services.chat().model_ref, "embedding": embedder.ref}
    chat = services.chat_entry()  # None for a remote upstream: its name is all we know
    if chat is not None:
        versions["chat_sha256"] = _files_digest(chat)
    versions["embedding_sha256"] = _files_digest(embedder)
    return versions


def _files_digest(entry: ModelEntry) -> str:
    if len(entry.files) == 1:
        return entry.files[0].sha256
    joined = ",".join(sorted(f"{f.kind}:{f.sha256}" for f in entry.files))
    return hashlib.sha256(joined.encode()).hexdigest()


def prompt(chat: ChatModel, retrieval: Retrieval) -> tuple[list[Message], list[SearchHit]]:
    budget = chat.context_length - ANSWER_TOKENS - 16
    return grounding.build_messages(retrieval.question, retrieval.hits, chat.count_tokens, budget)


def answer(
    retrieval: Retrieval,
    sources: Sequence[SearchHit],
    generated: str,
    timings: dict[str, float],
    models: dict[str, str],
    mode: AnswerMode = "auto",
) -> dict[str, Any]:
    """Verify the generated text and build the response.

    With ``mode`` ``auto``, when no generated sentence is supported the answer falls back
    to the retrieved sentence that covers the question best (``grounding.extractive``);
    ``extract`` answers only that way (no model), ``generate`` never does.
    """
    started = time.perf_counter()
    sentences = grounding.verify(generated, sources) if not retrieval.weak and generated else []
    kept = [s for s in sentences if s.supported]
    citations = _citations(kept, sources)
    answer_mode = "generated" if kept else "abstained"
    if not kept and not retrieval.weak and mode != "generate":
        sources = sources or retrieval.hits
        extract = grounding.extractive(retrieval.question, sources)
        if extract is not None:
            hit = sources[extract.number - 1]
            quoted = grounding.Sentence(
                extract.text, True, [extract.number], extract.coverage, "extract"
            )
            sentences, kept, answer_mode = [*sentences, quoted], [quoted], "extractive"
            span = (extract.start, extract.end)
            citations = [grounding.citation(extract.number, extract.text, hit, span)]
    reason = None
    if not kept:
        reason = "weak retrieval evidence" if retrieval.weak else "no sentence is supported"
    timings = {**timings, "verify_ms": round((time.perf_counter() - started) * 1000, 1)}
    return {
        "answer": " ".join(f"{s.text} [{s.sources[0]}]" for s in kept)
        if kept
        else grounding.ABSTAIN_TEXT,
        "abstained": not kept,
        "abstain_reason": reason,
        "answer_mode": answer_mode,
        "citations": citations,
        "sentences": [_sentence_json(s) for s in sentences],
        "confidence": _confidence(retrieval, kept, sentences),
        "evidence": round(retrieval.evidence, 4),
        "retrieved": [
            {
                "number": i + 1,
                "chunk_id": h.chunk_id,
                "document_id": h.document_id,
                "source": h.source,
            }
            for i, h in enumerate(sources)
        ],
        "models": models,
        "timings": timings,
        "cached": False,
    }


def _citations(
    kept: Sequence[grounding.Sentence], sources: Sequence[SearchHit]
) -> list[dict[str, Any]]:
    citations, seen = [], set()
    for s in kept:
        for n in s.sources:
            if (n, s.text) not in seen:
                seen.add((n, s.text))
                citations.append(grounding.citation(n, s.text, sources[n - 1]))
    return citations


def _confidence(
    retrieval: Retrieval,
    kept: Sequence[grounding.Sentence],
    sentences: Sequence[grounding.Sentence],
) -> float:
    """A heuristic, not a probability: the evidence times the share supported (or covered)."""
    if not kept:
        return 0.0
    evidence = min(1.0, retrieval.evidence)
    if kept[0].attributed == "extract":
        return round(evidence * kept[0].support, 4)
    return round(evidence * len(kept) / max(len(sentences), 1), 4)


def _sentence_json(s: grounding.Sentence) -> dict[str, Any]:
    return {
        "text": s.text,
        "supported": s.supported,
        "sources": s.sources,
        "support": round(s.support, 3),
        "attributed": s.attributed,
        "problems": s.problems,
    }


def ask(
    services: Services,
    tenant: str,
    question: str,
    k: int,
    groups: frozenset[str] | None,
    filters: DocumentFilter | None = None,
    mode: AnswerMode = "auto",
) -> dict[str, Any]:
    """The whole pipeline in one call (CLI, evaluation): cache, retrieve, generate, verify."""
    question = check_question(question)
    corpus = services.corpus(tenant)
    chat = services.chat()
    models = model_versions(services)
    cache = answer_cache(services, tenant)
    key = cache.key(question, k, groups, corpus.store.corpus_version, models, filters, mode)
    hit = cache.get(key)
    if hit is not None:
        return hit
    retrieval = retrieve(corpus, question, k, groups, filters)
    sources: list[SearchHit] = []
    generated, generate_ms = "", 0.0
    if not retrieval.weak and mode != "extract":
        messages, sources = prompt(chat, retrieval)
        started = time.perf_counter()
        generated = chat.complete(messages, GenerationParams(max_tokens=ANSWER_TOKENS)).text
        generate_ms = round((time.perf_counter() - started) * 1000, 1)
    timings = {"retrieve_ms": retrieval.retrieve_ms, "generate_ms": generate_ms}
    result = answer(retrieval, sources, generated, timings, models, mode)
    cache.put(key, corpus.store.corpus_version, result)
    return result


class AnswerCache:
    """Sealed answers of one tenant, in ``answers.db`` beside its corpus."""

    def __init__(self, path: Path, key: bytes) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, corpus_version INTEGER "
            "NOT NULL, value BLOB NOT NULL, created_at REAL NOT NULL)"
        )

    def key(
        self,
        question: str,
        k: int,
        groups: frozenset[str] | None,
        corpus_version: int,
        models: dict[str, str],
        filters: DocumentFilter | None = None,
        mode: AnswerMode = "auto",
    ) -> str:
        material = json.dumps(
            [
                question.lower(),
                k,
                sorted(groups) if groups is not None else None,
                corpus_version,
                sorted(models.items()),
                filters.canonical() if filters is not None and not filters.empty else None,
                mode,
            ]
        )
        return hmac.new(self._key, material.encode(), hashlib.sha256).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = json.loads(open_sealed(self._key, row[0], key.encode()))
        return {**value, "cached": True}

    def put(self, key: str, corpus_version: int, value: dict[str, Any]) -> None:
        blob = seal(self._key, json.dumps(value).encode(), key.encode())
        with self._lock:
            # answers over an older corpus can never be asked for again: drop them
            self._conn.execute("DELETE FROM answers WHERE corpus_version < ?", (corpus_version,))
            self._conn.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                (key, corpus_version, blob, time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def answer_cache(services: Services, tenant: str) -> AnswerCache:
    return services.tenant_state(
        tenant, "answers", lambda folder, keys: AnswerCache(folder / "answers.db", keys.cache_key)
    )
