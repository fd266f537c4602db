"""Examples per embedding model: after a tenant moves to another embedding model (here a
fake embedder of another dimension, as ``appliance reindex`` would bring a real one),
training uses only the new model's examples or refuses with the counts, and classifying
never mixes vector spaces. Real services and SQLCipher; only the embedder is a fake."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.config import Settings
from appliance.errors import InvalidInput
from appliance.inference.embedder import HashEmbedder
from appliance.review.classification import Classification, label_store
from appliance.review.labelling import Taxonomy
from appliance.services import Services

OLD, NEW = "hash-64@1", "hash-32@1"
TAXONOMY = {
    "name": "contracts",
    "labels": {"lease": "Property leases", "nda": "Non-disclosure agreements"},
    "thresholds": {"auto": 1.0, "review": 1.0},  # every result waits for a person
    "min_examples": 2,
}
LEASE = "The tenant pays the monthly rent to the landlord for the flat, lease {}."
NDA = "The parties keep the confidential information secret under this agreement {}."


def examples(n: int) -> list[tuple[str, str, str]]:
    return [("lease", LEASE.format(i), f"lease-{i}") for i in range(n)] + [
        ("nda", NDA.format(i), f"nda-{i}") for i in range(n)
    ]


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = Services.from_settings(settings)
    svc.tenants().create("acme")
    label_store(svc, "acme").create_taxonomy(Taxonomy.from_json(TAXONOMY))
    yield svc
    svc.close()


def classification(services: Services, dim: int, ref: str) -> Classification:
    return Classification(
        label_store(services, "acme"), services.corpus("acme"), HashEmbedder(dim), ref
    )


def test_training_after_a_model_change_refuses_with_the_counts(services: Services) -> None:
    old = classification(services, 64, OLD)
    assert old.add_examples("contracts", examples(3)) == 6
    assert old.train("contracts", "admin")["left_out"] == {
        "examples": 0,
        "by_embedding_model": {},
        "reason": None,
    }
    new = classification(services, 32, NEW)
    with pytest.raises(InvalidInput) as refused:
        new.train("contracts", "admin")
    assert refused.value.status == 422
    assert str(refused.value) == (
        "training needs >= 2 labels with >= 2 examples each (have {}) among the examples of "
        f"embedding model {NEW}; 6 examples made by another embedding model than {NEW} were "
        f"left out ({OLD}: 6); add them again from their sources to train on them"
    )
    versions = new.store.versions("contracts")
    assert [(v["version"], v["embedding_model"]) for v in versions] == [(1, OLD)]


def test_classifying_under_the_new_model_neither_mixes_nor_crashes(services: Services) -> None:
    old = classification(services, 64, OLD)
    old.add_examples("contracts", examples(3))
    old.train("contracts", "admin")
    new = classification(services, 32, NEW)
    result = new.classify("contracts", new.text(LEASE.format("x")))
    # v1 belongs to the old model: zero-shot, and no old example to compare with
    assert (result["tier"], result["classifier"]) == ("zero-shot", f"zero-shot:{NEW}")
    assert result["signals"]["nearest_examples"] == []
    assert result["embedding_model"] == NEW


def test_training_leaves_the_old_models_examples_out_and_says_so(services: Services) -> None:
    old = classification(services, 64, OLD)
    old.add_examples("contracts", examples(3))
    old.train("contracts", "admin")
    new = classification(services, 32, NEW)
    new.add_examples("contracts", examples(2))
    version = new.train("contracts", "admin")
    assert (version["version"], version["examples"], version["embedding_model"]) == (2, 4, NEW)
    assert version["left_out"]["examples"] == 6
    assert version["left_out"]["by_embedding_model"] == {OLD: 6}
    assert f"left out ({OLD}: 6)" in version["left_out"]["reason"]

    result = new.classify("contracts", new.text(NDA.format("y")))
    assert (result["tier"], result["classifier"]) == ("model", "v2")
    nearest = result["signals"]["nearest_examples"]
    assert len(nearest) == 3 and nearest[0]["label"] == "nda"


def test_a_reviewers_correction_is_an_example_of_the_results_model(services: Services) -> None:
    new = classification(services, 32, NEW)
    new.add_examples("contracts", examples(2))
    new.train("contracts", "admin")
    result = new.classify("contracts", new.text("A memo about the car park."))
    item = new.store.review_items("contracts")[0]
    assert item.result_id == result["id"]
    right = "lease" if result["label"] == "nda" else "nda"
    new.decide(item.id, "correct", right, None, "reviewer")
    assert new.store.example_models("contracts") == {NEW: 5}
    assert new.store.examples("contracts", OLD)[1] == []


def test_a_reviewers_correction_keeps_the_documents_word_counts(services: Services) -> None:
    new = classification(services, 32, NEW)
    new.add_examples("contracts", examples(2))
    new.train("contracts", "admin")
    subject = new.text("A memo about the car park.")
    new.classify("contracts", subject)
    item = new.store.review_items("contracts")[0]
    new.decide(item.id, "correct", "lease", None, "reviewer")
    corrected = new.store.examples("contracts", NEW, words=True).terms[-1]
    assert corrected is not None
    assert corrected.ids.tolist() == subject.terms.ids.tolist()
    assert corrected.counts.tolist() == subject.terms.counts.tolist()


def test_examples_without_word_counts_train_the_embedding_view_only(services: Services) -> None:
    new = classification(services, 32, NEW)
    new.add_examples("contracts", examples(3))
    assert new.train("contracts", "admin")["views"] == ["embedding", "words"]
    with new.store.transaction() as conn:  # as examples stored before word counts were kept
        conn.execute("UPDATE examples SET terms = NULL WHERE source LIKE 'lease-%'")
    version = new.train("contracts", "admin")
    assert (version["version"], version["views"], version["words_missing"]) == (
        2,
        ["embedding"],
        3,
    )
    result = new.classify("contracts", new.text(NDA.format("z")))
    assert (result["tier"], result["classifier"], result["label"]) == ("model", "v2", "nda")
    assert list(result["signals"]["views"]) == ["embedding"]
