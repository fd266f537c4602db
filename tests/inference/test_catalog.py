"""The model catalog and `appliance models`, with the real staged default models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from appliance.errors import (
    ConfigurationError,
    InvalidInput,
    ModelFormatError,
    ModelIntegrityError,
    UnknownModel,
)
from appliance.inference.catalog import ModelCatalog
from appliance.testing import replace_bytes, run_cli

GGUF = "smollm2-135m-instruct/1/SmolLM2-135M-Instruct.Q4_1.gguf"
ONNX = "all-minilm-l6-v2/1/model.onnx"


def test_defaults_are_active_and_verified(models_dir: Path) -> None:
    catalog = ModelCatalog(models_dir)
    assert catalog.active("chat").ref == "smollm2-135m-instruct@1"
    assert catalog.active("embedding").ref == "all-minilm-l6-v2@1"
    checks = [c for e in catalog.entries() for c in catalog.verify_entry(e)]
    assert len(checks) == 5 and all(c.ok for c in checks)


def test_list_shows_every_model(cli_env: dict[str, str]) -> None:
    result = run_cli("models", "list", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    rows = {f"{r['name']}@{r['version']}": r for r in json.loads(result.stdout)}
    assert set(rows) == {"smollm2-135m-instruct@1", "all-minilm-l6-v2@1", "all-minilm-l6-v2-int8@1"}
    chat = rows["smollm2-135m-instruct@1"]
    assert chat["active"] and chat["sha256_ok"] and chat["license"] == "Apache-2.0"
    assert chat["size"] == 98362432 and chat["role"] == "chat"
    assert not rows["all-minilm-l6-v2-int8@1"]["active"]


def test_verify_fails_on_a_changed_byte(cli_env: dict[str, str], models_dir: Path) -> None:
    assert run_cli("models", "verify", env=cli_env).returncode == 0
    path = models_dir / ONNX
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    replace_bytes(path, bytes(data))
    result = run_cli("models", "verify", env=cli_env)
    assert result.returncode == 1
    assert "BAD all-minilm-l6-v2@1" in result.stdout and "catalog pins" in result.stdout
    assert "4 of 5 files match" in result.stdout


def test_activate_refuses_a_tampered_model_and_keeps_the_active_one(
    cli_env: dict[str, str], models_dir: Path
) -> None:
    path = models_dir / "all-minilm-l6-v2-int8/1/model.onnx"
    replace_bytes(path, path.read_bytes()[:-10] + b"0123456789")
    result = run_cli("models", "activate", "all-minilm-l6-v2-int8", env=cli_env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: model all-minilm-l6-v2-int8@1 refused: ")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert ModelCatalog(models_dir).active("embedding").ref == "all-minilm-l6-v2@1"


def test_activate_and_rollback(cli_env: dict[str, str], models_dir: Path) -> None:
    result = run_cli("models", "activate", "all-minilm-l6-v2-int8@1", env=cli_env)
    assert result.returncode == 0 and "all-minilm-l6-v2-int8@1" in result.stdout
    assert ModelCatalog(models_dir).active("embedding").ref == "all-minilm-l6-v2-int8@1"
    result = run_cli("models", "rollback", "embedding", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert ModelCatalog(models_dir).active("embedding").ref == "all-minilm-l6-v2@1"
    history = json.loads((models_dir / "active.json").read_text())["history"]
    assert [h["ref"] for h in history] == ["all-minilm-l6-v2-int8@1", "all-minilm-l6-v2@1"]


def test_rollback_with_nothing_earlier(models_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="no earlier chat model"):
        ModelCatalog(models_dir).rollback("chat")


def test_import_gguf_adds_a_version_and_keeps_the_active_one(
    cli_env: dict[str, str], models_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "my-model.gguf"
    shutil.copy(models_dir / GGUF, src)
    result = run_cli(
        "models",
        "import",
        str(src),
        "--name",
        "smollm2-135m-instruct",
        "--role",
        "chat",
        "--license",
        "Apache-2.0",
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    assert "imported smollm2-135m-instruct@2" in result.stdout
    catalog = ModelCatalog(models_dir)
    assert catalog.active("chat").ref == "smollm2-135m-instruct@1"
    new = catalog.get("smollm2-135m-instruct")
    assert new.version == "2" and all(c.ok for c in catalog.verify_entry(new))
    assert (models_dir / "smollm2-135m-instruct/2/my-model.gguf").is_file()
    assert run_cli("models", "activate", "smollm2-135m-instruct@2", env=cli_env).returncode == 0
    assert ModelCatalog(models_dir).active("chat").ref == "smollm2-135m-instruct@2"
    # the catalog keeps its comments and the old version
    text = (models_dir / "catalog.toml").read_text()
    assert (
        text.startswith("# The model catalog.")
        and text.count('name = "smollm2-135m-instruct"') == 2
    )


def test_import_onnx_embedding_with_its_tokenizer(models_dir: Path, tmp_path: Path) -> None:
    catalog = ModelCatalog(models_dir)
    entry = catalog.import_model(models_dir / ONNX, name="minilm-copy", role="embedding")
    assert entry.ref == "minilm-copy@1"
    assert {f.kind for f in entry.files} == {"weights", "tokenizer"}


@pytest.mark.parametrize(
    ("content", "role", "message"),
    [
        (b"just some text, not a model\n" * 10, "chat", "is not a GGUF model"),
        (b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 20, "chat", "GGUF file without tensors"),
        (
            b"GGUF" + b"\x03\x00\x00\x00" + b"\x05" + b"\x00" * 20,
            "chat",
            "truncated or corrupt GGUF",
        ),
        (b"\x08\x07garbage that is not protobuf", "embedding", "is not a valid ONNX model"),
    ],
)
def test_import_refuses_non_models(
    cli_env: dict[str, str],
    models_dir: Path,
    tmp_path: Path,
    content: bytes,
    role: str,
    message: str,
) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    before = (models_dir / "catalog.toml").read_text()
    result = run_cli("models", "import", str(bad), "--name", "bad", "--role", role, env=cli_env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert str(bad) in result.stderr and "Traceback" not in result.stderr
    assert (models_dir / "catalog.toml").read_text() == before
    assert not (models_dir / "bad").exists()


def test_import_refuses_a_truncated_gguf(models_dir: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes((models_dir / GGUF).read_bytes()[:40_000_000])
    with pytest.raises(ModelFormatError, match=r"cut\.gguf is (truncated|a truncated or corrupt)"):
        ModelCatalog(models_dir).import_model(cut, name="cut", role="chat")


def test_import_refuses_a_truncated_onnx(models_dir: Path, tmp_path: Path) -> None:
    cut = tmp_path / "model.onnx"
    cut.write_bytes((models_dir / ONNX).read_bytes()[:1_000_000])
    with pytest.raises(ModelFormatError, match=r"model\.onnx is not a valid ONNX model"):
        ModelCatalog(models_dir).import_model(cut, name="cut", role="embedding")


def test_import_of_an_embedding_without_tokenizer(models_dir: Path, tmp_path: Path) -> None:
    lone = tmp_path / "model.onnx"
    shutil.copy(models_dir / ONNX, lone)
    with pytest.raises(InvalidInput, match=r"needs its tokenizer\.json"):
        ModelCatalog(models_dir).import_model(lone, name="lone", role="embedding")


def test_import_with_a_bad_name_or_role_clash(models_dir: Path) -> None:
    with pytest.raises(InvalidInput, match=r"model name '\.\./evil' is not allowed"):
        ModelCatalog(models_dir).import_model(models_dir / GGUF, name="../evil", role="chat")
    with pytest.raises(InvalidInput, match="already exists with role embedding"):
        ModelCatalog(models_dir).import_model(
            models_dir / GGUF, name="all-minilm-l6-v2", role="chat"
        )


def test_unknown_model_name(cli_env: dict[str, str]) -> None:
    result = run_cli("models", "activate", "gpt-9", env=cli_env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown model 'gpt-9': known models are ")
    result = run_cli("models", "activate", "smollm2-135m-instruct@7", env=cli_env)
    assert "has no version '7'" in result.stderr


def test_unknown_role(cli_env: dict[str, str]) -> None:
    result = run_cli("models", "rollback", "vision", env=cli_env)
    assert result.returncode == 1 and "unknown role 'vision'" in result.stderr


def test_missing_models_dir(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(cli_env, APPLIANCE_MODELS_DIR=str(tmp_path / "nowhere"))
    for args in (("models", "list"), ("models", "verify"), ("chat", "hi"), ("embed", "hi")):
        result = run_cli(*args, env=env)
        assert result.returncode == 1, args
        assert result.stderr == (
            f"error: models dir {tmp_path / 'nowhere'} does not exist: set APPLIANCE_MODELS_DIR to "
            "the bundle's models folder or run installer/install.sh\n"
        )


def test_missing_model_file_is_refused_at_load(models_dir: Path) -> None:
    (models_dir / GGUF).unlink()
    with pytest.raises(ModelIntegrityError, match="is missing"):
        ModelCatalog(models_dir).resolve("chat")


def test_unknown_model_error_class(models_dir: Path) -> None:
    with pytest.raises(UnknownModel):
        ModelCatalog(models_dir).get("nope")


def test_corrupt_activation_state(models_dir: Path) -> None:
    (models_dir / "active.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"active\.json is corrupt"):
        ModelCatalog(models_dir).active("chat")
