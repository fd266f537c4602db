"""The learned tier's numbers, on synthetic data whose right answers are known: calibrated
probabilities, the temperatures, the ECE, the word view, and a version that survives its
JSON form."""

from __future__ import annotations

import base64
import json
import random

import numpy as np
import numpy.typing as npt
import pytest

from appliance.errors import InvalidInput
from appliance.review import learner


def blobs(
    n_per_class: int, classes: int, spread: float, seed: int = 0
) -> tuple[npt.NDArray[np.float32], list[str]]:
    """Unit vectors around one random centre per class: overlap grows with ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 32))
    x = np.vstack([c + spread * rng.normal(size=(n_per_class, 32)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [f"l{k}" for k in range(classes) for _ in range(n_per_class)]
    return x.astype(np.float32), labels


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_probabilities_are_a_distribution_over_every_label(classes: int) -> None:
    x, labels = blobs(20, classes, spread=1.5)
    model = learner.train(x, labels)
    p = model.probabilities(x)
    assert p.shape == (len(x), classes)
    assert model.classes == tuple(sorted(set(labels)))
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    assert model.temperature > 0 and model.examples == len(x)
    assert model.ece is not None and 0 <= model.ece <= 1


def test_the_stored_form_gives_the_same_answers() -> None:
    x, labels = blobs(15, 3, spread=1.2)
    model = learner.train(x, labels)
    again = learner.LinearClassifier.from_json(model.to_json())
    np.testing.assert_array_equal(again.probabilities(x), model.probabilities(x))
    assert again.classes == model.classes and again.ece == model.ece


def test_the_temperature_undoes_a_known_overconfidence() -> None:
    # logits drawn so that softmax(z) is calibrated, then sharpened 4x: the fit should find ~4
    rng = np.random.default_rng(1)
    z = rng.normal(scale=2.0, size=(4000, 3))
    p_true = learner.softmax(z)
    y = np.array([rng.choice(3, p=row) for row in p_true])
    t = learner.fit_temperature(z * 4.0, y)
    assert 3.4 < t < 4.6
    before = learner.expected_calibration_error(learner.softmax(z * 4.0), y)
    after = learner.expected_calibration_error(learner.softmax(z * 4.0 / t), y)
    assert after < 0.03 < before


def test_ece_by_hand() -> None:
    # two bins used: 0.9 (2 of 2 right -> gap 0.1) and 0.6 (1 of 2 right -> gap 0.1)
    p = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    assert learner.expected_calibration_error(p, y) == pytest.approx(0.1)
    assert learner.expected_calibration_error(np.eye(2)[[0, 1]], np.array([0, 1])) == 0.0


def test_held_out_ece_is_small_where_classes_overlap() -> None:
    # the out-of-fold ECE a version reports should hold on data it never saw
    x, labels = blobs(150, 2, spread=3.0, seed=2)
    fit = np.r_[0:100, 150:250]
    held = np.r_[100:150, 250:300]
    model = learner.train(x[fit], [labels[i] for i in fit])
    y = np.array([int(labels[i][1:]) for i in held])
    p = model.probabilities(x[held])
    assert 0.6 < (p.argmax(axis=1) == y).mean() < 1.0  # genuinely uncertain data
    assert learner.expected_calibration_error(p, y) < 0.12


@pytest.mark.parametrize(
    ("labels", "detail"),
    [
        (["a", "a", "a", "a"], "training needs >= 2 labels"),
        (["a", "a", "a", "b"], "'b': 1"),
    ],
)
def test_training_refuses_too_few_examples(labels: list[str], detail: str) -> None:
    x, _ = blobs(2, 2, spread=1.0)
    with pytest.raises(InvalidInput, match=detail):
        learner.train(x, labels)


def test_zero_shot_scores_follow_similarity() -> None:
    labels = np.eye(3, dtype=np.float32)
    doc = np.array([[0.8, 0.6, 0.0]], dtype=np.float32)
    p = learner.zero_shot(doc, labels)[0]
    assert p.argmax() == 0 and p[0] > p[1] > p[2]
    assert p.sum() == pytest.approx(1.0)


def test_pooling_is_the_normalised_mean_of_the_chunks() -> None:
    chunks = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(learner.pool(chunks), [2**-0.5, 2**-0.5], rtol=1e-6)
    one = np.array([[0.6, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(learner.pool(one), one[0], rtol=1e-6)


FILLER = ["the", "of", "report", "page", "note", "item", "list", "section", "record"]
FILLER += ["year", "office", "staff", "review"]


def coded_texts(n_per_class: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Texts whose label only a code word tells (``ref alpha`` vs ``ref omega``), in filler."""
    rng = random.Random(seed)
    texts, labels = [], []
    for label in ("alpha", "omega"):
        for _ in range(n_per_class):
            words = rng.choices(FILLER, k=12)
            words.insert(rng.randrange(12), f"ref {label}")
            texts.append(" ".join(words))
            labels.append(label)
    return texts, labels


def test_the_word_view_learns_what_the_embedding_misses() -> None:
    texts, labels = coded_texts(40)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(texts), 16)).astype(np.float32)  # embeddings that say nothing
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    train, test = np.arange(0, 80, 2), np.arange(1, 80, 2)
    words = [learner.terms(t) for t in texts]
    both = learner.train(x[train], [labels[i] for i in train], words=[words[i] for i in train])
    alone = learner.train(x[train], [labels[i] for i in train])
    y = np.array([both.classes.index(labels[i]) for i in test])
    p_both = both.probabilities(x[test], [words[i] for i in test])
    p_alone = alone.probabilities(x[test])
    assert both.views == ["embedding", "words"] and alone.views == ["embedding"]
    assert (p_both.argmax(axis=1) == y).mean() >= 0.9
    assert (p_alone.argmax(axis=1) == y).mean() < 0.75
    # the fit trusts the view that predicted unseen examples: the words, not the noise
    assert both.words is not None and both.words.temperature < both.temperature


def test_a_two_view_version_survives_its_json_and_holds_no_word() -> None:
    texts, labels = coded_texts(15, seed=1)
    x, _ = blobs(15, 2, spread=1.2)
    words = [learner.terms(t) for t in texts]
    model = learner.train(x, labels, words=words)
    stored = json.dumps(model.to_json())
    again = learner.LinearClassifier.from_json(json.loads(stored))
    np.testing.assert_array_equal(again.probabilities(x, words), model.probabilities(x, words))
    assert again.views == ["embedding", "words"]
    # no word is kept: the strings are the labels and view names; the word view is numbers
    raw = json.loads(stored)
    packed = {k: raw["words"].pop(k) for k in ("columns", "idf", "coef")}
    assert set(strings(raw)) == {"alpha", "omega", "embedding", "words"}
    assert len(base64.b64decode(packed["columns"])) == 4 * len(model.words.columns)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="reads the words too"):
        model.probabilities(x)


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_terms_are_hashed_counts_that_survive_their_bytes() -> None:
    t = learner.terms("Rent is due. Rent is due monthly!")
    assert t.counts.sum() == 7 + 6  # 7 words of 2+ characters, 6 word pairs
    assert len(t.ids) == 4 + 4  # rent, is, due, monthly; rent is, is due, due rent, due monthly
    assert sorted(t.ids.tolist()) == t.ids.tolist()
    assert int(t.ids.max()) < learner.HASHED_FEATURES
    again = learner.Terms.from_bytes(t.to_bytes())
    assert again.ids.tolist() == t.ids.tolist() and again.counts.tolist() == t.counts.tolist()


def test_a_version_keeps_the_most_frequent_words_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(learner, "MAX_WORD_COLUMNS", 3)
    counts = learner.terms_matrix([learner.terms(t) for t in ["aa bb", "aa cc", "aa bb dd ee"]])
    columns, idf = learner.WordView.fit_columns(counts)
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    assert len(columns) == 3 and sorted(columns.tolist()) == columns.tolist()
    assert df[learner.terms("aa").ids[0]] == 3 and learner.terms("aa").ids[0] in columns
    assert learner.terms("bb").ids[0] in columns  # in two texts: kept before the singletons
    np.testing.assert_allclose(idf, np.log(4 / (1 + df[columns])) + 1.0)
