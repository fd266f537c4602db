"""Ask: retrieve -> abstain on weak evidence -> prompt -> generate -> verify -> answer.

The steps are separate so the API can run the generation behind the model gate (and
stream it), while the CLI and the evaluation run them in one call (:func:`ask`). An
answer's every returned sentence is supported by a cited source (see ``grounding``): a
sentence the model wrote and verification kept, or, when none survives, a retrieved
sentence quoted whole (``mode`` ``auto``). When retrieval finds nothing close enough, or
nothing survives, the answer is the abstention sentence with ``abstained: true``.
Identical questions are answered from the tenant's sealed cache (``answer_cache``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from appliance.config import ASK_MIN_EVIDENCE
from appliance.corpus.filters import DocumentFilter
from appliance.corpus.search import SearchHit, rank
from appliance.errors import InvalidInput
from appliance.inference.chat import GenerationParams, Message
from appliance.review import grounding
from appliance.review.answer_cache import AnswerCache, answer_cache

if TYPE_CHECKING:
    from appliance.corpus.corpus import TenantCorpus
    from appliance.inference.catalog import ModelEntry
    from appliance.inference.chat import ChatModel
    from appliance.services import Services

MAX_QUESTION_CHARS = 2000
DEFAULT_K = 6
ANSWER_TOKENS = 256
AnswerMode = Literal["auto", "generate", "extract"]


def check_question(question: str) -> str:
    text = " ".join(question.split())
    if not text:
        raise InvalidInput("question: empty; ask something")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidInput(f"question: longer than {MAX_QUESTION_CHARS} characters")
    return text


@dataclass(frozen=True, slots=True)
class AskOptions:
    """Everything besides the question that shapes an answer (and so keys the cache).

    ``min_evidence`` is the abstention threshold on the retrieval evidence: the setting
    ``ask_min_evidence`` (tuned per embedding model with ``appliance eval ask --curve``).
    """

    k: int = DEFAULT_K
    groups: frozenset[str] | None = None
    filters: DocumentFilter | None = None
    mode: AnswerMode = "auto"
    min_evidence: float = ASK_MIN_EVIDENCE

    def material(self) -> list[Any]:
        return [
            self.k,
            sorted(self.groups) if self.groups is not None else None,
            self.filters.canonical()
            if self.filters is not None and not self.filters.empty
            else None,
            self.mode,
            self.min_evidence,
        ]


@dataclass
class Retrieval:
    question: str
    hits: list[SearchHit]
    evidence: float
    retrieve_ms: float
    min_evidence: float = ASK_MIN_EVIDENCE

    @property
    def weak(self) -> bool:
        return not self.hits or self.evidence < self.min_evidence


def retrieve(corpus: TenantCorpus, question: str, options: AskOptions) -> Retrieval:
    started = time.perf_counter()
    ranking = rank(
        corpus,
        question,
        k=options.k,
        groups=options.groups,
        mode="hybrid",
        filters=options.filters,
    )
    # the evidence is the nearest visible chunk's cosine, whatever the fusion kept of it
    evidence = ranking.best_vector if ranking.hits else 0.0
    elapsed = round((time.perf_counter() - started) * 1000, 1)
    return Retrieval(question, ranking.hits, evidence, elapsed, options.min_evidence)


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
        sources = sources or retrieval.hits  # extract mode: no prompt was built
        quoted = _quote(retrieval.question, sources)
        if quoted is not None:
            sentence, citation = quoted
            sentences, kept, answer_mode = [*sentences, sentence], [sentence], "extractive"
            citations = [citation]
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


def _quote(
    question: str, sources: Sequence[SearchHit]
) -> tuple[grounding.Sentence, dict[str, Any]] | None:
    """The best-covering source sentence as a supported sentence, and its citation."""
    extract = grounding.extractive(question, sources)
    if extract is None:
        return None
    n = extract.number
    sentence = grounding.Sentence(extract.text, True, [n], extract.coverage, "extract")
    span = (extract.start, extract.end)
    return sentence, grounding.citation(n, extract.text, sources[n - 1], span)


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


@dataclass
class Draft:
    """A question on its way to an answer: the cached answer, or what is left to do.

    Built by :func:`prepare`, the same for the CLI, the evaluation and the API; whoever
    holds it runs the model on ``messages`` (when ``needs_model``), in its own way, then
    calls :meth:`finish`, which verifies, builds the answer and caches it.
    """

    cached: dict[str, Any] | None
    models: dict[str, str]
    chat: ChatModel
    retrieval: Retrieval | None = None
    messages: list[Message] = field(default_factory=list)
    sources: list[SearchHit] = field(default_factory=list)
    mode: AnswerMode = "auto"
    _store: tuple[AnswerCache, str, int] | None = None  # cache, key, corpus version

    @property
    def needs_model(self) -> bool:
        return bool(self.messages)

    def finish(self, generated: str, generate_ms: float) -> dict[str, Any]:
        assert self.retrieval is not None and self._store is not None, "a cached draft"
        timings = {"retrieve_ms": self.retrieval.retrieve_ms, "generate_ms": generate_ms}
        result = answer(self.retrieval, self.sources, generated, timings, self.models, self.mode)
        cache, key, version = self._store
        cache.put(key, version, result)
        return result


def prepare(services: Services, tenant: str, question: str, options: AskOptions) -> Draft:
    """Check the question, answer from the cache, or retrieve and lay out the prompt."""
    question = check_question(question)
    corpus = services.corpus(tenant)
    chat = services.chat()
    models = model_versions(services)
    cache = answer_cache(services, tenant)
    version = corpus.store.corpus_version
    key = cache.key(question, options.material(), version, models)
    cached = cache.get(key)
    if cached is not None:
        return Draft(cached, models, chat)
    retrieval = retrieve(corpus, question, options)
    draft = Draft(None, models, chat, retrieval, mode=options.mode, _store=(cache, key, version))
    if not retrieval.weak and options.mode != "extract":
        draft.messages, draft.sources = prompt(chat, retrieval)
    return draft


def ask(
    services: Services, tenant: str, question: str, options: AskOptions | None = None
) -> dict[str, Any]:
    """The whole pipeline in one call (CLI, evaluation): cache, retrieve, generate, verify.

    Without ``options``, the defaults and the ``ask_min_evidence`` setting.
    """
    options = options or AskOptions(min_evidence=services.settings.ask_min_evidence)
    draft = prepare(services, tenant, question, options)
    if draft.cached is not None:
        return draft.cached
    generated, generate_ms = "", 0.0
    if draft.needs_model:
        started = time.perf_counter()
        params = GenerationParams(max_tokens=ANSWER_TOKENS)
        generated = draft.chat.complete(draft.messages, params).text
        generate_ms = round((time.perf_counter() - started) * 1000, 1)
    return draft.finish(generated, generate_ms)
