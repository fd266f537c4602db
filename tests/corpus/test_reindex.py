"""`appliance reindex`: a tenant moves to a newly activated embedding model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.config import Settings
from appliance.corpus.ingest import discover, ingest
from appliance.corpus.search import search
from appliance.errors import ConfigurationError
from appliance.inference.catalog import ModelCatalog
from appliance.services import Services
from appliance.testing import run_cli

INT8 = "all-minilm-l6-v2-int8@1"


@pytest.fixture
def indexed(settings: Settings, tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lease.txt").write_text("The warehouse lease ends in June and renews for five years.")
    (docs / "payroll.txt").write_text("Payroll runs on the last working day of every month.")
    svc = Services.from_settings(settings)
    svc.tenants().create("acme")
    assert not ingest(svc.corpus("acme"), discover([docs])).failed
    svc.close()
    ModelCatalog(settings.models_dir).activate(INT8)
    return settings.index_dir / "acme"


def test_a_new_embedding_model_needs_a_reindex_and_gets_one(
    indexed: Path, settings: Settings, cli_env: dict[str, str]
) -> None:
    svc = Services.from_settings(settings)
    with pytest.raises(ConfigurationError, match="appliance reindex --tenant acme"):
        svc.corpus("acme")
    svc.close()

    result = run_cli("reindex", "--tenant", "acme", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"re-embedded 2 chunks of tenant acme with {INT8}\n"
    assert not (indexed / "vectors.sealed").exists()  # rebuilt from the store on open

    svc = Services.from_settings(settings)
    corpus = svc.corpus("acme")
    assert corpus.store.meta("embedding_model") == INT8
    hits = search(corpus, "when does the warehouse lease end", mode="vector", k=1)
    assert hits[0].source == "lease.txt"
    ids = corpus.store.live_chunk_ids()
    expected = svc.embedder().embed([corpus.store.chunks(ids.tolist())[int(i)].text for i in ids])
    assert np.allclose(corpus.store.embeddings(ids), expected, atol=1e-6)
    svc.close()
    assert (indexed / "vectors.sealed").exists()
    audit = run_cli("audit", "verify", env=cli_env)
    assert audit.returncode == 0, audit.stdout


def test_reindex_of_an_unknown_tenant_is_one_clear_line(cli_env: dict[str, str]) -> None:
    result = run_cli("reindex", "--tenant", "nobody", env=cli_env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown tenant 'nobody'")


def test_a_corpus_that_changed_meanwhile_is_left_as_it_was(
    indexed: Path, settings: Settings
) -> None:
    svc = Services.from_settings(settings)
    ModelCatalog(settings.models_dir).rollback("embedding")
    store = svc.corpus("acme").store
    ids = store.live_chunk_ids()
    before = store.embeddings(ids)
    version = store.corpus_version
    with pytest.raises(ConfigurationError, match="changed while it was being re-embedded"):
        store.replace_embeddings(ids[:1], before[:1], INT8)
    assert np.array_equal(store.embeddings(ids), before)
    assert store.corpus_version == version
    assert store.meta("embedding_model") == "all-minilm-l6-v2@1"
    svc.close()
