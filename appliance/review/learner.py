"""The learned tier: logistic regression on document embeddings, calibrated by temperature.

Training fits scikit-learn's ``LogisticRegression`` on the labelled examples' embeddings.
Its raw probabilities are not trusted: out-of-fold logits from stratified cross-validation
fit one temperature ``T`` (minimum negative log-likelihood), and the model's answers are
``softmax(logits / T)``. The same out-of-fold predictions give the expected calibration
error (ECE) that each version reports. The parameters are plain arrays (stored as JSON in
the encrypted store; never a pickle), so loading a classifier runs no code.

The zero-shot tier, for taxonomies without enough examples, scores labels by the cosine
between the document and each label's name and description; it is *uncalibrated*.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.errors import InvalidInput

Vectors = npt.NDArray[np.float32]
ZERO_SHOT_TEMPERATURE = 0.05


@dataclass(frozen=True)
class LinearClassifier:
    """A calibrated multinomial linear model: ``softmax((X @ coef.T + intercept) / T)``."""

    classes: tuple[str, ...]
    coef: npt.NDArray[np.float64]
    intercept: npt.NDArray[np.float64]
    temperature: float
    ece: float | None
    examples: int

    def logits(self, x: Vectors) -> npt.NDArray[np.float64]:
        z = np.asarray(x, dtype=np.float64) @ self.coef.T + self.intercept
        if len(self.classes) == 2 and z.shape[1] == 1:  # sklearn's binary form: one column
            z = np.hstack([-z / 2, z / 2])
        return z

    def probabilities(self, x: Vectors) -> npt.NDArray[np.float64]:
        return softmax(self.logits(x) / self.temperature)

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "temperature": self.temperature,
            "ece": self.ece,
            "examples": self.examples,
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
        )


def softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def train(
    x: Vectors, labels: list[str], *, c: float = 4.0, folds: int = 5, seed: int = 0
) -> LinearClassifier:
    """Fit and calibrate on labelled embeddings (every class needs at least 2 examples)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    classes = sorted(set(labels))
    counts = {c_: labels.count(c_) for c_ in classes}
    if len(classes) < 2 or min(counts.values()) < 2:
        raise InvalidInput(f"training needs >= 2 labels with >= 2 examples each (have {counts})")
    y = np.array([classes.index(label) for label in labels])
    k = min(folds, min(counts.values()))
    oof = np.zeros((len(y), len(classes)))
    for fit_idx, held_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        model = LogisticRegression(C=c, max_iter=2000).fit(x[fit_idx], y[fit_idx])
        oof[held_idx] = _full_logits(model, x[held_idx], len(classes))
    temperature = fit_temperature(oof, y)
    final = LogisticRegression(C=c, max_iter=2000).fit(x, y)
    ece = expected_calibration_error(softmax(oof / temperature), y)
    return LinearClassifier(tuple(classes), final.coef_, final.intercept_, temperature, ece, len(y))


def _full_logits(model: Any, x: Vectors, n_classes: int) -> npt.NDArray[np.float64]:
    """Logits over every class, also when a fold's model saw only some of them."""
    z = model.decision_function(x)
    if z.ndim == 1:
        z = np.stack([-z / 2, z / 2], axis=1)
    full = np.full((len(x), n_classes), -1e9)
    full[:, model.classes_] = z
    return full


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
