"""``appliance eval classify``: the classifier measured on labelled data, beside a baseline.

The data is one folder per label of ``.txt`` files. Per label, ``train_per_label`` texts
train; the rest are split in two halves: a *stream* that plays the part of incoming
documents (those routed to a person are "corrected" with their true label, as a reviewer
would, then the classifier is retrained: the learning curve) and a *test* set no step
ever trains on. A TF-IDF + logistic regression baseline trains on the same examples and
is scored on the same test set, routed by the same thresholds, in the same run, and so is
the embedding view of our classifier alone (``embedding_only``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.errors import InvalidInput
from appliance.inference.embedder import Embedder
from appliance.review import learner
from appliance.review.classification import embed_chunks
from appliance.review.labelling import Thresholds

MAX_FILE_BYTES = 2 * 2**20


@dataclass(frozen=True)
class Labelled:
    label: str
    text: str


def load_folders(data: Path) -> list[Labelled]:
    """Every ``DIR/<label>/*.txt`` (UTF-8); at least two labels with files."""
    if not data.is_dir():
        raise InvalidInput(f"{data} is not a folder (expected one sub-folder per label)")
    items = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.glob("*.txt")):
            if path.stat().st_size > MAX_FILE_BYTES:
                raise InvalidInput(f"{path}: over 2 MB")
            text = path.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                items.append(Labelled(folder.name, text))
    labels = {i.label for i in items}
    if len(labels) < 2:
        raise InvalidInput(f"{data}: needs at least two label folders with .txt files")
    return items


def split(
    items: list[Labelled], per_label: int, seed: int
) -> tuple[list[Labelled], list[Labelled], list[Labelled]]:
    """(train, stream, test): ``per_label`` per label to train, the rest halved."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not a secret
    train, stream, test = [], [], []
    for label in sorted({i.label for i in items}):
        mine = [i for i in items if i.label == label]
        rng.shuffle(mine)
        if len(mine) < per_label + 2:
            raise InvalidInput(f"label {label!r} has {len(mine)} texts: need > {per_label + 1}")
        rest = mine[per_label:]
        train += mine[:per_label]
        stream += rest[: len(rest) // 2]
        test += rest[len(rest) // 2 :]
    return train, stream, test


def route_report(
    probabilities: npt.NDArray[np.float64], y: npt.NDArray[np.int64], t: Thresholds
) -> dict[str, Any]:
    """Coverage and precision of each route (sampling aside: ``review`` is automated too)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    routes = {
        "auto": confidence >= t.auto,
        "review": (confidence >= t.review) & (confidence < t.auto),
        "human": confidence < t.review,
    }
    report: dict[str, Any] = {}
    for name, mask in routes.items():
        report[name] = {
            "coverage": round(float(mask.mean()), 4),
            "precision": round(float(correct[mask].mean()), 4) if mask.any() else None,
        }
    return report


def _scores(p: npt.NDArray[np.float64], y: npt.NDArray[np.int64], t: Thresholds) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    predicted = p.argmax(axis=1)
    return {
        "accuracy": round(float((predicted == y).mean()), 4),
        "macro_f1": round(float(f1_score(y, predicted, average="macro")), 4),
        "ece": round(learner.expected_calibration_error(p, y), 4),
        "routes": route_report(p, y, t),
    }


def evaluate(
    embedder: Embedder, items: list[Labelled], per_label: int, seed: int = 0
) -> dict[str, Any]:
    """Train on ``per_label`` per label; score ours and the baseline on the same test set."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, stream, test = split(items, per_label, seed)
    classes = sorted({i.label for i in items})
    vec = {id(i): learner.pool(embed_chunks(embedder, i.text)) for i in train + stream + test}
    words = {id(i): learner.terms(i.text) for i in train + stream + test}

    def xy(part: list[Labelled]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        x = np.stack([vec[id(i)] for i in part])
        return x, np.array([classes.index(i.label) for i in part])

    def w(part: list[Labelled]) -> list[learner.Terms]:
        return [words[id(i)] for i in part]

    t = Thresholds()
    x_train, y_train = xy(train)
    x_test, y_test = xy(test)
    model = learner.train(x_train, [i.label for i in train], words=w(train), seed=seed)
    ours = _scores(model.probabilities(x_test, w(test)), y_test, t)
    ours["train_ece_out_of_fold"] = round(model.ece or 0.0, 4)
    # the embedding view alone, as the classifier was before it read the words too
    alone = learner.train(x_train, [i.label for i in train], seed=seed)
    embedding_only = _scores(alone.probabilities(x_test), y_test, t)

    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=1, ngram_range=(1, 2))
    baseline = LogisticRegression(C=4.0, max_iter=2000).fit(
        tfidf.fit_transform([i.text for i in train]), y_train
    )
    base = _scores(baseline.predict_proba(tfidf.transform([i.text for i in test])), y_test, t)

    # the learning curve: what reviewers would see from the stream gets corrected
    x_stream, y_stream = xy(stream)
    p_stream = model.probabilities(x_stream, w(stream))
    to_review = p_stream.max(axis=1) < t.auto
    x_more = np.vstack([x_train, x_stream[to_review]])
    labels_more = [i.label for i in train] + [classes[j] for j in y_stream[to_review]]
    words_more = w(train) + [t_ for t_, r in zip(w(stream), to_review, strict=True) if r]
    retrained = learner.train(x_more, labels_more, words=words_more, seed=seed)
    after = _scores(retrained.probabilities(x_test, w(test)), y_test, t)
    return {
        "labels": classes,
        "train_per_label": per_label,
        "seed": seed,
        "sizes": {"train": len(train), "stream": len(stream), "test": len(test)},
        "ours": ours,
        "embedding_only": embedding_only,
        "baseline_tfidf_lr": base,
        "after_review_corrections": {
            "corrected_examples": int(to_review.sum()),
            **after,
        },
    }
