"""`appliance tenants | ingest | search | documents` as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.services import Services
from appliance.testing import run_cli


@pytest.fixture
def tenant(cli_env: dict[str, str]) -> str:
    result = run_cli("tenants", "create", "acme", env=cli_env)
    assert result.returncode == 0, result.stderr
    return "acme"


def write_corpus(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"memo-{i:03}.txt").write_text(
            f"Memo {i}. The quarterly budget review {i} covers travel, payroll and rent.\n\n"
            + f"Paragraph two of memo {i} lists action items for team {i % 7}. " * 20
        )
    return folder


def test_tenants_lifecycle(cli_env: dict[str, str]) -> None:
    assert run_cli("tenants", "create", "acme", env=cli_env).stdout == "created tenant acme\n"
    dup = run_cli("tenants", "create", "acme", env=cli_env)
    assert dup.returncode == 1 and dup.stderr.startswith("error: tenant 'acme' already exists")
    bad = run_cli("tenants", "create", "Bad Name!", env=cli_env)
    assert bad.returncode == 1 and "invalid tenant name 'Bad Name!'" in bad.stderr
    listed = json.loads(run_cli("tenants", "list", "--json", env=cli_env).stdout)
    assert [t["name"] for t in listed] == ["acme"]
    gone = run_cli("tenants", "delete", "acme", "--yes", env=cli_env)
    assert gone.returncode == 0 and "its key is destroyed" in gone.stdout
    again = run_cli("tenants", "delete", "acme", "--yes", env=cli_env)
    assert again.returncode == 1 and "unknown tenant 'acme'" in again.stderr


def test_delete_tenant_asks_first(cli_env: dict[str, str], tenant: str) -> None:
    result = run_cli("tenants", "delete", tenant, env=cli_env, stdin="n\n")
    assert result.returncode == 130
    assert "acme" in run_cli("tenants", "list", env=cli_env).stdout


def test_ingest_search_show_delete(cli_env: dict[str, str], tenant: str, tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "docs", 3)
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    result = run_cli("ingest", str(folder), "--tenant", tenant, env=cli_env)
    assert result.returncode == 1  # one file failed
    assert result.stdout.rstrip().endswith("3 ingested, 0 unchanged, 1 failed")
    assert "FAILED    broken.docx: " in result.stdout
    again = run_cli("ingest", str(folder), "--tenant", tenant, "--json", env=cli_env)
    body = json.loads(again.stdout)
    assert body["summary"] == "0 ingested, 3 unchanged, 1 failed"
    assert body["failed"][0]["problem"] == "corrupt-document"

    hits = json.loads(
        run_cli(
            "search",
            "budget review 2 travel",
            "--tenant",
            tenant,
            "--k",
            "2",
            "--json",
            env=cli_env,
        ).stdout
    )
    assert hits[0]["source"] == "memo-002.txt" and len(hits) == 2
    assert {"bm25_score", "vector_score", "start", "end", "page", "document_id"} <= set(hits[0])

    docs = json.loads(
        run_cli("documents", "list", "--tenant", tenant, "--json", env=cli_env).stdout
    )
    memo = next(d for d in docs if d["source"] == "memo-002.txt")
    shown = json.loads(
        run_cli(
            "documents",
            "show",
            str(memo["id"]),
            "--tenant",
            tenant,
            "--text",
            "--json",
            env=cli_env,
        ).stdout
    )
    assert shown["text"].startswith("Memo 2. The quarterly budget review 2")
    assert (
        run_cli("documents", "delete", str(memo["id"]), "--tenant", tenant, env=cli_env).returncode
        == 0
    )
    missing = run_cli("documents", "show", str(memo["id"]), "--tenant", tenant, env=cli_env)
    assert (missing.returncode, missing.stderr) == (
        1,
        f"error: no document {memo['id']} in this tenant\n",
    )


def test_acl_and_groups_from_the_cli(cli_env: dict[str, str], tenant: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("Board minutes about the acquisition of Initech.")
    assert (
        run_cli("ingest", str(secret), "--tenant", tenant, "--acl", "board", env=cli_env).returncode
        == 0
    )
    as_hr = run_cli(
        "search", "acquisition Initech", "--tenant", tenant, "--groups", "hr", "--json", env=cli_env
    )
    assert json.loads(as_hr.stdout) == []
    as_board = run_cli(
        "search",
        "acquisition Initech",
        "--tenant",
        tenant,
        "--groups",
        "board",
        "--json",
        env=cli_env,
    )
    assert json.loads(as_board.stdout)[0]["source"] == "secret.txt"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("ingest", "/nonexistent/path", "--tenant", "acme"),
            "error: /nonexistent/path does not exist",
        ),
        (("ingest", ".", "--tenant", "nobody"), "error: tenant 'nobody' does not exist"),
        (("search", "x", "--tenant", "nobody"), "error: tenant 'nobody' does not exist"),
        (("search", "  ", "--tenant", "acme"), "error: the query is empty"),
        (("search", "x", "--tenant", "acme", "--mode", "fuzzy"), "error: unknown mode 'fuzzy'"),
        (("ingest", ".", "--tenant", "acme", "--acl", "a b"), "error: invalid group name 'a b'"),
        (("documents", "list", "--tenant", "nobody"), "error: tenant 'nobody' does not exist"),
    ],
)
def test_bad_input_gets_one_clear_line(
    cli_env: dict[str, str], tenant: str, args: tuple[str, ...], message: str
) -> None:
    result = run_cli(*args, env=cli_env)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_an_ingest_killed_midway_leaves_no_half_document_and_a_rerun_completes(
    cli_env: dict[str, str], tenant: str, tmp_path: Path, home: Path, models_dir: Path
) -> None:
    folder = write_corpus(tmp_path / "many", 40)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "ingest", str(folder), "--tenant", tenant],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = Settings(home=home, models_dir=models_dir, threads=2)
    watcher = Services.from_settings(settings)
    store = watcher.corpus(tenant).store
    deadline = time.monotonic() + 120
    while len(store.documents()) < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = store.documents()
    assert 5 <= len(stored) < 40, "the kill should land in the middle of the batch"
    for doc in stored:  # every visible document is whole
        text = store.document_text(doc.id)
        assert doc.chunks >= 2 and text.startswith("Memo ")
    watcher.close()

    rerun = run_cli("ingest", str(folder), "--tenant", tenant, env=cli_env)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.rstrip().endswith(
        f"{40 - len(stored)} ingested, {len(stored)} unchanged, 0 failed"
    )
    check = Services.from_settings(settings)
    corpus = check.corpus(tenant)
    assert len(corpus.store.documents()) == 40
    assert corpus.vectors.size == len(corpus.store.live_chunk_ids())  # healed
    check.close()
