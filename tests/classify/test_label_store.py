"""The classification database on its own: the migration that gives examples their embedding
model, and batch jobs that a stopped process left running (real SQLCipher files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from appliance.encrypted_db import EncryptedDatabase
from appliance.errors import NotFound
from appliance.review.batch_jobs import process_token
from appliance.review.label_store import MIGRATIONS, LabelStore

KEY = bytes(range(32))
STAMP = "2026-01-01T00:00:00.000000+00:00"


def first_version_db(path: Path) -> None:
    """A database as the first schema left it: two taxonomies, examples, a running job."""
    db = EncryptedDatabase(path, KEY, "classification database", MIGRATIONS[:1])
    vector = np.ones(4, dtype=np.float32).tobytes()
    with db.transaction() as conn:
        for name in ("trained", "untrained"):
            spec = {"name": name, "labels": {"a": "", "b": ""}}
            conn.execute("INSERT INTO taxonomies VALUES (?, ?, ?)", (name, json.dumps(spec), STAMP))
            conn.executemany(
                "INSERT INTO examples (taxonomy, label, vector, origin, source, created_at) "
                "VALUES (?, ?, ?, 'train', 'old', ?)",
                [(name, label, vector, STAMP) for label in ("a", "a", "b", "b")],
            )
        for number, model in ((1, "minilm@1"), (2, "bge@2")):
            params = json.dumps({"embedding_model": model, "examples": 4})
            conn.execute(
                "INSERT INTO versions VALUES ('trained', ?, ?, ?, 'admin')", (number, params, STAMP)
            )
        conn.execute(
            "INSERT INTO jobs (taxonomy, total, done, failed, status, created_at) "
            "VALUES ('trained', 40, 12, 1, 'running', ?)",
            (STAMP,),
        )
    db.close()


def test_the_migration_names_each_examples_embedding_model(tmp_path: Path) -> None:
    path = tmp_path / "labels.db"
    first_version_db(path)
    store = LabelStore(path, KEY)
    # the latest version's model for a trained taxonomy; unknown (None) for the other
    assert store.example_models("trained") == {"bge@2": 4}
    assert store.example_models("untrained") == {None: 4}
    ex = store.examples("trained", "bge@2", words=True)
    assert ex.vectors.shape == (4, 4) and ex.labels == ["a", "a", "b", "b"]
    assert ex.terms == [None] * 4  # stored before examples kept their word counts
    assert store.examples("trained", "minilm@1")[1] == []
    assert store.examples("untrained", "bge@2")[1] == []
    # a job from before jobs recorded their process: no process can still be running it
    job = store.jobs.get(1)
    assert (job["status"], job["done"], job["failed"]) == ("interrupted", 12, 1)
    assert "stopped after 13 of 40 documents" in job["error"]
    store.close()
    reopened = LabelStore(path, KEY)  # the migration ran once: opening again changes nothing
    assert reopened.example_models("trained") == {"bge@2": 4}
    assert reopened.jobs.get(1)["finished_at"] == job["finished_at"]
    reopened.close()


def test_a_job_left_running_by_an_earlier_opening_becomes_interrupted(tmp_path: Path) -> None:
    store = LabelStore(tmp_path / "labels.db", KEY)
    job = store.jobs.create("films", 10)
    store.jobs.update(job, 3, 1)
    assert store.jobs.get(job)["status"] == "running"
    store.close()  # the process stops here, its job thread with it

    store = LabelStore(tmp_path / "labels.db", KEY)
    state = store.jobs.get(job)
    assert (state["status"], state["done"], state["failed"], state["total"]) == (
        "interrupted",
        3,
        1,
        10,
    )
    assert state["finished_at"] is not None
    assert state["error"].startswith("interrupted: the process running this job stopped after")
    assert "Submit the same batch again" in state["error"]
    store.jobs.update(job, 9, 1, "finished")  # a late write does not bring it back
    assert store.jobs.get(job) == state
    finished = store.jobs.create("films", 2)
    store.jobs.update(finished, 2, 0, "finished")
    store.close()
    store = LabelStore(tmp_path / "labels.db", KEY)
    assert store.jobs.get(finished)["status"] == "finished"
    assert store.jobs.get(finished)["error"] is None
    with pytest.raises(NotFound, match="no classification job 99 in this tenant"):
        store.jobs.get(99)
    store.close()


@pytest.mark.skipif(process_token(os.getpid()) is None, reason="needs /proc (Linux)")
def test_a_job_of_another_live_process_is_left_running(tmp_path: Path) -> None:
    path = tmp_path / "labels.db"
    LabelStore(path, KEY).close()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        token = process_token(other.pid)
        assert token is not None
        db = EncryptedDatabase(path, KEY, "classification database", MIGRATIONS)
        with db.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (taxonomy, total, done, failed, status, created_at, runner) "
                "VALUES ('films', 5, 2, 0, 'running', ?, ?)",
                (STAMP, token),
            )
        db.close()
        store = LabelStore(path, KEY)  # a CLI command opening the store beside the server
        assert store.jobs.get(1)["status"] == "running"
        store.close()
    finally:
        other.kill()
        other.wait()
    store = LabelStore(path, KEY)  # now that process is gone
    assert (store.jobs.get(1)["status"], store.jobs.get(1)["done"]) == ("interrupted", 2)
    store.close()
