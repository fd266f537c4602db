"""The learned tier: logistic regression on two views of a document, calibrated together.

The two views are the document's embedding and its words: hashed word 1-2 grams, weighted
TF-IDF (sublinear term frequency, smoothed IDF over the examples, L2 norm). Training fits
one scikit-learn ``LogisticRegression`` per view on the labelled examples. Their raw
outputs are not trusted: out-of-fold logits of both views, from stratified
cross-validation, fit one temperature per view (minimum negative log-likelihood), and the
answers are ``softmax(logits_embedding / T_e + logits_words / T_w)``. The fit weighs the
views by how well each predicted unseen examples, and the same out-of-fold predictions
give the expected calibration error (ECE) that each version reports.

Why two views: on every labelled set the bench reads, the embedding alone lost to TF-IDF
+ logistic regression on some (long speeches, debate turns) and won on others (short
reviews), while the two together were at or above the better view on each; and they err
on different documents, so the combined confidence ranks better. The words are kept only
as hashed feature ids (2**20 buckets) with their counts, inside the encrypted store.

The parameters are plain arrays (stored as JSON in the encrypted store; never a pickle), so
loading a classifier runs no code. A version trained before the word view existed has
only the embedding view and still loads.

The zero-shot tier, for taxonomies without enough examples, scores labels by the cosine
between the document and each label's name and description; it is *uncalibrated*.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from appliance.errors import InvalidInput

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

Vectors = npt.NDArray[np.float32]
ZERO_SHOT_TEMPERATURE = 0.05
HASHED_FEATURES = 2**20  # buckets of the hashed word 1-2 grams
MAX_WORD_COLUMNS = 2**15  # the most frequent buckets a version keeps (bounds its size)
WORDS_C = 16.0  # L2-normalised TF-IDF rows need a weaker penalty than unit embeddings


@dataclass(frozen=True)
class Terms:
    """A text's hashed word 1-2 gram counts: sorted bucket ids and their counts."""

    ids: npt.NDArray[np.int32]
    counts: npt.NDArray[np.float32]

    def to_bytes(self) -> bytes:
        return self.ids.astype("<i4").tobytes() + self.counts.astype("<f4").tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Terms:
        n = len(blob) // 8
        return cls(
            np.frombuffer(blob[: 4 * n], dtype="<i4").astype(np.int32),
            np.frombuffer(blob[4 * n :], dtype="<f4").astype(np.float32),
        )


def terms(text: str) -> Terms:
    """The hashed word 1-2 grams of ``text`` (lower-cased words of two or more characters)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    row = HashingVectorizer(
        n_features=HASHED_FEATURES,
        ngram_range=(1, 2),
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    ).transform([text])
    row.sort_indices()
    return Terms(row.indices.astype(np.int32), row.data.astype(np.float32))


def terms_matrix(rows: Sequence[Terms]) -> csr_matrix:
    """One sparse row per text, ``HASHED_FEATURES`` columns."""
    from scipy.sparse import csr_matrix

    indptr = np.cumsum([0, *(len(r.ids) for r in rows)])
    ids = np.concatenate([r.ids for r in rows]) if rows else np.zeros(0, np.int32)
    counts = np.concatenate([r.counts for r in rows]) if rows else np.zeros(0, np.float32)
    return csr_matrix((counts, ids, indptr), shape=(len(rows), HASHED_FEATURES))


def _b64(a: npt.NDArray[Any], dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _unb64(text: str, dtype: str) -> npt.NDArray[Any]:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


@dataclass(frozen=True)
class WordView:
    """The word view: a linear model on TF-IDF of the kept hashed buckets."""

    columns: npt.NDArray[np.int32]  # the bucket ids kept, sorted
    idf: npt.NDArray[np.float64]
    coef: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]
    temperature: float

    @staticmethod
    def fit_columns(counts: csr_matrix) -> tuple[npt.NDArray[np.int32], npt.NDArray[Any]]:
        """The buckets seen in training (the most frequent ones at most) and their IDF."""
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        seen = np.flatnonzero(df)
        if len(seen) > MAX_WORD_COLUMNS:  # most frequent first; ties by bucket id
            seen = np.sort(seen[np.argsort(-df[seen], kind="stable")[:MAX_WORD_COLUMNS]])
        idf = np.log((1 + counts.shape[0]) / (1 + df[seen])) + 1.0
        return seen.astype(np.int32), idf

    @staticmethod
    def features(
        counts: csr_matrix, columns: npt.NDArray[np.int32], idf: npt.NDArray[Any]
    ) -> csr_matrix:
        from sklearn.preprocessing import normalize

        x = counts[:, columns].astype(np.float64)
        x.data = 1.0 + np.log(x.data)
        return normalize(x.multiply(idf).tocsr())

    def logits(self, counts: csr_matrix) -> npt.NDArray[np.float64]:
        z = self.features(counts, self.columns, self.idf) @ self.coef.T + self.intercept
        return _two_columns(np.asarray(z))

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": _b64(self.columns, "<i4"),
            "idf": _b64(self.idf, "<f8"),
            "coef_shape": list(self.coef.shape),
            "coef": _b64(self.coef, "<f8"),
            "intercept": self.intercept.tolist(),
            "temperature": self.temperature,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> WordView:
        return cls(
            _unb64(raw["columns"], "<i4").astype(np.int32),
            _unb64(raw["idf"], "<f8").astype(np.float64),
            _unb64(raw["coef"], "<f8").reshape(raw["coef_shape"]).astype(np.float64),
            np.array(raw["intercept"], dtype=np.float64),
            float(raw["temperature"]),
        )


def _two_columns(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """sklearn's binary form has one column; the softmax needs one per class."""
    if z.ndim == 1:
        z = z[:, None]
    if z.shape[1] == 1:
        z = np.hstack([-z / 2, z / 2])
    return z


@dataclass(frozen=True)
class LinearClassifier:
    """Calibrated linear models on the embedding (``coef``, ``intercept``, ``temperature``)
    and, when ``words`` is set, on the words: the answers are the softmax of their
    tempered logits summed."""

    classes: tuple[str, ...]
    coef: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]
    temperature: float
    ece: float | None
    examples: int
    words: WordView | None = None

    @property
    def views(self) -> list[str]:
        return ["embedding", "words"] if self.words is not None else ["embedding"]

    def logits(self, x: Vectors) -> npt.NDArray[np.float64]:
        """The embedding view's raw logits."""
        return _two_columns(np.asarray(x, dtype=np.float64) @ self.coef.T + self.intercept)

    def embedding_probabilities(self, x: Vectors) -> npt.NDArray[np.float64]:
        """The embedding view alone (for parts of a document, such as its chunks)."""
        return softmax(self.logits(x) / self.temperature)

    def tempered_logits(
        self, x: Vectors, words: Sequence[Terms] | None = None
    ) -> dict[str, npt.NDArray[np.float64]]:
        """Each view's logits over its temperature; the answer is the softmax of their sum,
        and the softmax of one is that view's own part of it (not calibrated alone)."""
        out = {"embedding": self.logits(x) / self.temperature}
        if self.words is not None:
            if words is None or len(words) != len(x):
                raise ValueError("this classifier reads the words too: pass each row's terms")
            out["words"] = self.words.logits(terms_matrix(words)) / self.words.temperature
        return out

    def probabilities(
        self, x: Vectors, words: Sequence[Terms] | None = None
    ) -> npt.NDArray[np.float64]:
        return softmax(sum_views(self.tempered_logits(x, words)))

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "temperature": self.temperature,
            "ece": self.ece,
            "examples": self.examples,
            "views": self.views,
            **({"words": self.words.to_json()} if self.words is not None else {}),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LinearClassifier:
        return cls(
            tuple(raw["classes"]),
            np.array(raw["coef"], dtype=np.float64),
            np.array(raw["intercept"], dtype=np.float64),
            float(raw["temperature"]),
            raw.get("ece"),
            int(raw["examples"]),
            WordView.from_json(raw["words"]) if "words" in raw else None,
        )


def sum_views(tempered: dict[str, npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    """The combined logits of :meth:`LinearClassifier.tempered_logits`."""
    total: npt.NDArray[np.float64] = np.sum(list(tempered.values()), axis=0)
    return total


def softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def train(
    x: Vectors,
    labels: list[str],
    *,
    words: Sequence[Terms] | None = None,
    c: float = 4.0,
    folds: int = 5,
    seed: int = 0,
) -> LinearClassifier:
    """Fit and calibrate on labelled embeddings, and on their words when ``words`` (one
    ``Terms`` per example) is given; every class needs at least 2 examples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    classes = sorted(set(labels))
    counts = {c_: labels.count(c_) for c_ in classes}
    if len(classes) < 2 or min(counts.values()) < 2:
        raise InvalidInput(f"training needs >= 2 labels with >= 2 examples each (have {counts})")
    y = np.array([classes.index(label) for label in labels])
    k = min(folds, min(counts.values()))
    counted = terms_matrix(words) if words is not None else None
    oof = np.zeros((len(y), len(classes)))
    oof_words = np.zeros((len(y), len(classes)))
    for fit_idx, held_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        model = LogisticRegression(C=c, max_iter=2000).fit(x[fit_idx], y[fit_idx])
        oof[held_idx] = _full_logits(model, model.decision_function(x[held_idx]), len(classes))
        if counted is not None:  # the fold's own vocabulary and IDF: unseen words stay unseen
            fold, fold_model = _fit_words(counted[fit_idx], y[fit_idx])
            z = fold.logits(counted[held_idx])
            oof_words[held_idx] = _full_logits(fold_model, z, len(classes))
    final = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    if counted is None:
        temperature = fit_temperature(oof, y)
        ece = expected_calibration_error(softmax(oof / temperature), y)
        return LinearClassifier(
            tuple(classes), final.coef_, final.intercept_, temperature, ece, len(y)
        )
    t_embedding, t_words = fit_temperatures(oof, oof_words, y)
    ece = expected_calibration_error(softmax(oof / t_embedding + oof_words / t_words), y)
    word_view = dataclasses.replace(_fit_words(counted, y)[0], temperature=t_words)
    return LinearClassifier(
        tuple(classes), final.coef_, final.intercept_, t_embedding, ece, len(y), word_view
    )


def _fit_words(counted: csr_matrix, y: npt.NDArray[np.int64]) -> tuple[WordView, Any]:
    """The word view fitted on ``counted`` (temperature 1), and its scikit-learn model."""
    from sklearn.linear_model import LogisticRegression

    columns, idf = WordView.fit_columns(counted)
    # balanced: on imbalanced labels the sparse word model under-predicted the rarer label,
    # and more examples made it worse (convention speeches, 76 vs 48: 0.929 -> 0.909); the
    # calibrated sum keeps the labels' frequencies through the embedding view and the fit
    model = LogisticRegression(C=WORDS_C, max_iter=2000, class_weight="balanced").fit(
        WordView.features(counted, columns, idf), y
    )
    return WordView(columns, idf, model.coef_, model.intercept_, 1.0), model


def _full_logits(model: Any, z: npt.NDArray[np.float64], n_classes: int) -> npt.NDArray[np.float64]:
    """A fold model's logits over every class, also when it saw only some of them."""
    z = _two_columns(np.asarray(z, dtype=np.float64))
    full = np.full((len(z), n_classes), -1e9)
    full[:, model.classes_] = z
    return full


def fit_temperatures(
    embedding: npt.NDArray[np.float64], words: npt.NDArray[np.float64], y: npt.NDArray[np.int64]
) -> tuple[float, float]:
    """One temperature per view that minimises the negative log-likelihood of their sum."""
    from scipy.optimize import minimize

    rows = np.arange(len(y))

    def nll(w: npt.NDArray[np.float64]) -> float:
        p = softmax(w[0] * embedding + w[1] * words)
        return float(-np.mean(np.log(np.clip(p[rows, y], 1e-12, 1.0))))

    start = np.array([1.0 / fit_temperature(embedding, y), 1.0 / fit_temperature(words, y)])
    bounds = [(1.0 / 20.0, 1.0 / 0.05)] * 2  # the single-view grid's range
    w = minimize(nll, start / 2, method="L-BFGS-B", bounds=bounds).x
    return float(1.0 / w[0]), float(1.0 / w[1])


def fit_temperature(logits: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> float:
    """The temperature that minimises the negative log-likelihood (grid, then refine)."""

    def nll(t: float) -> float:
        p = softmax(logits / t)
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 60))
    best = float(grid[np.argmin([nll(t) for t in grid])])
    fine = np.linspace(best * 0.85, best * 1.15, 31)
    return float(fine[np.argmin([nll(t) for t in fine])])


def expected_calibration_error(
    probabilities: npt.NDArray[np.float64], y: npt.NDArray[np.int64], bins: int = 10
) -> float:
    """ECE: the confidence-vs-accuracy gap, averaged over equal-width confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def zero_shot(doc: Vectors, label_vectors: Vectors) -> npt.NDArray[np.float64]:
    """Label scores from the cosine to each label's description (uncalibrated)."""
    sims = np.asarray(doc, dtype=np.float64) @ np.asarray(label_vectors, dtype=np.float64).T
    return softmax(sims / ZERO_SHOT_TEMPERATURE)


def pool(chunk_vectors: Vectors) -> Vectors:
    """One document vector from its chunks' (unit) vectors: their normalised mean."""
    mean = np.asarray(chunk_vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    pooled: Vectors = (mean / norm if norm > 0 else mean).astype(np.float32)
    return pooled
