"""Taxonomies as data: routing by thresholds, rules and their spans, and the refusals."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.errors import InvalidInput
from appliance.review.labelling import Rule, Taxonomy

BASE: dict[str, Any] = {"name": "contracts", "labels": {"lease": "Leases", "nda": "NDAs"}}


def taxonomy(**changes: Any) -> Taxonomy:
    return Taxonomy.from_json({**BASE, **changes})


@pytest.mark.parametrize(
    ("confidence", "route"),
    [(1.0, "auto"), (0.95, "auto"), (0.9, "auto"), (0.80, "auto"), (0.7999, "human")],
)
def test_routes_with_no_sampling(confidence: float, route: str) -> None:
    # sample_rate 0 puts the whole review band (0.80-0.95) on the automated path
    tax = taxonomy(thresholds={"sample_rate": 0.0})
    assert tax.route(confidence, calibrated=True, sample_key="k") == route


def test_the_review_band_is_sampled_at_the_configured_rate_and_deterministically() -> None:
    band = taxonomy(thresholds={"auto": 0.95, "review": 0.80, "sample_rate": 0.25})
    routes = [band.route(0.9, calibrated=True, sample_key=f"doc:{i}|v1") for i in range(4000)]
    assert set(routes) == {"auto", "review"}
    assert 0.22 < routes.count("review") / len(routes) < 0.28
    assert routes == [
        band.route(0.9, calibrated=True, sample_key=f"doc:{i}|v1") for i in range(4000)
    ]
    every = taxonomy(thresholds={"sample_rate": 1.0})
    assert every.route(0.85, calibrated=True, sample_key="x") == "review"
    assert every.route(0.79, calibrated=True, sample_key="x") == "human"
    assert every.route(0.96, calibrated=True, sample_key="x") == "auto"


def test_automated_results_are_drawn_as_quality_samples_at_their_own_rate() -> None:
    tax = taxonomy(thresholds={"sample_rate": 0.25, "auto_sample_rate": 0.25})
    keys = [f"doc:{i}|v1" for i in range(4000)]
    drawn = [k for k in keys if tax.quality_sample("auto", sample_key=k)]
    assert 0.22 < len(drawn) / len(keys) < 0.28
    assert drawn == [k for k in keys if tax.quality_sample("auto", sample_key=k)]
    # another salt than the review band's draw: the two samples are not the same documents
    banded = {k for k in keys if tax.route(0.9, calibrated=True, sample_key=k) == "review"}
    assert 0.15 < len(banded & set(drawn)) / len(drawn) < 0.35
    # only automated results are drawn: the others reach a person anyway
    assert not any(tax.quality_sample(r, sample_key=k) for r in ("review", "human") for k in keys)
    assert taxonomy().thresholds.auto_sample_rate == 0.02
    never = taxonomy(thresholds={"auto_sample_rate": 0})
    assert not any(never.quality_sample("auto", sample_key=k) for k in keys)
    assert all(
        taxonomy(thresholds={"auto_sample_rate": 1}).quality_sample("auto", sample_key=k)
        for k in keys
    )


def test_a_taxonomy_stored_before_auto_sampling_gets_the_default_rate() -> None:
    stored = taxonomy().to_json()
    del stored["thresholds"]["auto_sample_rate"]
    assert Taxonomy.from_json(stored).thresholds.auto_sample_rate == 0.02


def test_uncalibrated_scores_wait_for_a_human_unless_an_admin_opts_in() -> None:
    assert taxonomy().route(0.999, calibrated=False, sample_key="k") == "human"
    opted = taxonomy(allow_uncalibrated_auto=True)
    assert opted.route(0.999, calibrated=False, sample_key="k") == "auto"
    assert opted.route(0.5, calibrated=False, sample_key="k") == "human"


def test_rules_match_case_insensitively_and_report_the_span() -> None:
    tax = taxonomy(
        rules=[
            {"label": "nda", "pattern": r"non-?disclosure"},
            {"label": "lease", "keywords": ["monthly rent", "landlord"]},
        ]
    )
    text = "This NonDisclosure agreement binds the Landlord."
    spans = [r.match(text) for r in tax.rules]
    assert spans == [(5, 18), (39, 47)]
    assert text[5:18] == "NonDisclosure" and text[39:47] == "Landlord"
    assert Rule("nda", keywords=("secret",)).match(text) is None
    assert tax.rules[0].confidence == 0.99


def test_labels_as_a_list_of_names_or_objects() -> None:
    tax = taxonomy(labels=["lease", {"name": "nda", "description": "Secrecy"}])
    assert tax.labels == {"lease": "", "nda": "Secrecy"}
    assert Taxonomy.from_json(tax.to_json() | {"rules": []}).labels == tax.labels


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"labels": {"only": ""}}, "needs 2 to 200 labels (got 1)"),
        ({"labels": []}, "needs 2 to 200 labels (got 0)"),
        ({"labels": ["a", "b", "a", "b"]}, "duplicate labels: a, b"),
        ({"labels": ["a", "B c"]}, "invalid label 'B c'"),
        ({"labels": "a,b"}, "labels: give a list"),
        ({"labels": {"a": "x", "b": 7}}, "the description must be text"),
        ({"rules": [{"label": "nda", "pattern": "[oops"}]}, "rules[0]: invalid regex '[oops'"),
        ({"rules": [{"label": "nda"}]}, "rules[0]: give either 'pattern'"),
        ({"rules": [{"label": "nda", "pattern": "x", "keywords": ["y"]}]}, "give either"),
        ({"rules": [{"label": "spam", "pattern": "x"}]}, "one of the taxonomy's labels"),
        ({"rules": [{"label": "nda", "keywords": [""]}]}, "non-empty strings"),
        ({"rules": [{"label": "nda", "pattern": "x", "confidence": 1.5}]}, "in (0, 1]"),
        ({"thresholds": {"auto": 0.7}}, "need 0 < review <= auto <= 1"),
        ({"thresholds": {"sample_rate": 2}}, "0 <= sample_rate <= 1"),
        (
            {"thresholds": {"auto_sample_rate": 1.5}},
            "thresholds: need 0 <= auto_sample_rate <= 1 (got 1.5)",
        ),
        (
            {"thresholds": {"auto_sample_rate": -0.1}},
            "thresholds: need 0 <= auto_sample_rate <= 1 (got -0.1)",
        ),
        ({"thresholds": {"auto_sample_rate": True}}, "auto_sample_rate must be numbers"),
        ({"thresholds": {"automatic": 0.9}}, "thresholds: an object with auto"),
        ({"min_examples": 1}, "min_examples must be an integer from 2 to 1000"),
        ({"allow_uncalibrated_auto": "yes"}, "must be true or false"),
        ({"name": "../etc"}, "invalid taxonomy name"),
    ],
)
def test_bad_taxonomies_are_refused_with_what_is_wrong(
    changes: dict[str, Any], detail: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        taxonomy(**changes)
    assert detail in str(caught.value)


def test_a_threshold_that_is_not_a_number_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="thresholds"):
        taxonomy(thresholds={"auto": "high"})


def test_an_unknown_label_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="unknown label 'memo' in taxonomy 'contracts'"):
        taxonomy().check_label("memo")
