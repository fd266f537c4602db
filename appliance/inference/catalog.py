"""The model catalog: every model file pinned by sha256, versions, activation and rollback.

``<models_dir>/catalog.toml`` lists the models (the bundle's defaults and what admins
imported); the files live beside it under ``<name>/<version>/``. Which version is active
for each role, and the history that rollback walks back, is per installation and lives in
``<models_dir>/active.json``. Both files are replaced atomically under a lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import tomlkit

from appliance.errors import (
    ConfigurationError,
    InvalidInput,
    ModelIntegrityError,
    UnknownModel,
)
from appliance.inference.formats import check_model_file

Role = Literal["chat", "embedding"]
ROLES: tuple[Role, ...] = ("chat", "embedding")
FileKind = Literal["weights", "tokenizer"]
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelFile:
    kind: FileKind
    path: str  # relative to the models dir
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    version: str
    role: Role
    format: Literal["gguf", "onnx"]
    license: str
    origin: str
    files: tuple[ModelFile, ...]
    default: bool = False
    added: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, kind: FileKind) -> ModelFile:
        for f in self.files:
            if f.kind == kind:
                return f
        raise ConfigurationError(f"catalog entry {self.ref} has no {kind} file")


@dataclass(slots=True)
class Activation:
    role: Role
    ref: str
    at: str
    by: str


@dataclass(frozen=True, slots=True)
class FileCheck:
    entry: ModelEntry
    file: ModelFile
    ok: bool
    problem: str = ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass
class ModelCatalog:
    """Reads and changes the catalog of one models dir."""

    models_dir: Path
    _verified: dict[tuple[str, int, int], str] = field(default_factory=dict, repr=False)
    _parsed: tuple[tuple[int, int], list[ModelEntry]] | None = field(default=None, repr=False)

    @property
    def catalog_path(self) -> Path:
        return self.models_dir / "catalog.toml"

    @property
    def active_path(self) -> Path:
        return self.models_dir / "active.json"

    # --- reading -------------------------------------------------------------------

    def _require_dir(self) -> None:
        if not self.models_dir.is_dir():
            raise ConfigurationError(
                f"models dir {self.models_dir} does not exist: set APPLIANCE_MODELS_DIR to the "
                "bundle's models folder or run installer/install.sh"
            )
        if not self.catalog_path.is_file():
            raise ConfigurationError(
                f"model catalog {self.catalog_path} is missing: copy models/catalog.toml from the "
                "bundle or run installer/install.sh"
            )

    def _document(self) -> tomlkit.TOMLDocument:
        self._require_dir()
        try:
            return tomlkit.parse(self.catalog_path.read_text(encoding="utf-8"))
        except (tomlkit.exceptions.ParseError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"model catalog {self.catalog_path} is not valid TOML: {exc}"
            ) from None

    def entries(self) -> list[ModelEntry]:
        """The catalog's entries, re-read whenever the file changes (parsing TOML costs ms,
        and the API asks on every chat request)."""
        self._require_dir()
        stat = self.catalog_path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._parsed is None or self._parsed[0] != stamp:
            doc = self._document().unwrap()
            self._parsed = (stamp, [_entry_from_toml(raw) for raw in doc.get("model", [])])
        return list(self._parsed[1])

    def get(self, spec: str) -> ModelEntry:
        """Find ``NAME`` (newest version) or ``NAME@VERSION``."""
        name, _, version = spec.partition("@")
        matches = [e for e in self.entries() if e.name == name]
        if not matches:
            known = ", ".join(sorted({e.name for e in self.entries()})) or "none"
            raise UnknownModel(
                f"unknown model {name!r}: known models are {known} (see `appliance models list`)"
            )
        if not version:
            return max(matches, key=lambda e: _version_key(e.version))
        for entry in matches:
            if entry.version == version:
                return entry
        versions = ", ".join(e.version for e in matches)
        raise UnknownModel(f"model {name!r} has no version {version!r}: versions are {versions}")

    def path(self, file: ModelFile) -> Path:
        return self.models_dir / file.path

    # --- activation ----------------------------------------------------------------

    def _history(self) -> list[Activation]:
        if not self.active_path.exists():
            return []
        try:
            raw = json.loads(self.active_path.read_text(encoding="utf-8"))
            return [Activation(**item) for item in raw["history"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"{self.active_path} is corrupt ({exc}): delete it to fall back to the defaults"
            ) from None

    def active(self, role: Role) -> ModelEntry:
        """The active model of a role: the last activation, else the catalog's default."""
        for act in reversed(self._history()):
            if act.role == role:
                return self.get(act.ref)
        defaults = [e for e in self.entries() if e.role == role and e.default]
        if not defaults:
            raise UnknownModel(
                f"no {role} model is active and the catalog names no default: "
                f"run `appliance models activate NAME`"
            )
        return defaults[0]

    def activate(self, spec: str, *, by: str = "cli") -> ModelEntry:
        """Make a model version the active one of its role, after verifying its files."""
        entry = self.get(spec)
        self.verify_entry(entry, raise_on_error=True)
        with self._lock():
            history = self._history()
            history.append(Activation(entry.role, entry.ref, _now(), by))
            self._write_history(history)
        return entry

    def rollback(self, role: Role, *, by: str = "cli") -> ModelEntry:
        """Re-activate the model that was active before the current one."""
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}: use chat or embedding")
        with self._lock():
            history = self._history()
            current = self.active(role).ref
            earlier = [a.ref for a in history if a.role == role]
            defaults = [e.ref for e in self.entries() if e.role == role and e.default]
            previous = [ref for ref in defaults + earlier if ref != current]
            if not previous:
                raise InvalidInput(f"no earlier {role} model to roll back to (active: {current})")
            target = self.get(previous[-1])
            self.verify_entry(target, raise_on_error=True)
            history.append(Activation(role, target.ref, _now(), f"{by} (rollback)"))
            self._write_history(history)
        return target

    def _write_history(self, history: list[Activation]) -> None:
        body = {"history": [_asdict(a) for a in history]}
        _atomic_write(self.active_path, json.dumps(body, indent=2) + "\n")

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self._require_dir()
        with (self.models_dir / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # --- verification ----------------------------------------------------------------

    def check_file(self, entry: ModelEntry, file: ModelFile) -> FileCheck:
        path = self.path(file)
        if not path.is_file():
            return FileCheck(entry, file, False, f"{path} is missing")
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        digest = self._verified.get(key) or sha256_file(path)
        if digest != file.sha256:
            return FileCheck(
                entry,
                file,
                False,
                f"{path} has sha256 {digest[:12]}…, catalog pins {file.sha256[:12]}…",
            )
        self._verified[key] = digest
        return FileCheck(entry, file, True)

    def verify_entry(self, entry: ModelEntry, *, raise_on_error: bool = False) -> list[FileCheck]:
        checks = [self.check_file(entry, f) for f in entry.files]
        bad = [c for c in checks if not c.ok]
        if bad and raise_on_error:
            raise ModelIntegrityError(
                f"model {entry.ref} refused: {bad[0].problem}; restore the file from the bundle "
                "or re-import it with `appliance models import`"
            )
        return checks

    def resolve(self, role: Role) -> tuple[ModelEntry, dict[FileKind, Path]]:
        """The active model of a role with the paths of its verified files."""
        entry = self.active(role)
        self.verify_entry(entry, raise_on_error=True)
        return entry, {f.kind: self.path(f) for f in entry.files}

    # --- import ------------------------------------------------------------------------

    def import_model(
        self,
        source: Path,
        *,
        name: str,
        role: Role,
        tokenizer: Path | None = None,
        license: str = "unknown",
        origin: str = "imported by an administrator",
    ) -> ModelEntry:
        """Copy a model file into the store, pin it, and add it as a new version.

        The active model does not change: run ``activate`` once the new version is checked.
        """
        _check_name(name)
        fmt = check_model_file(source, role)
        sources: list[tuple[FileKind, Path]] = [("weights", source)]
        if role == "embedding":
            tok = tokenizer or source.with_name("tokenizer.json")
            if not tok.is_file():
                raise InvalidInput(
                    f"embedding model {source} needs its tokenizer.json: pass --tokenizer FILE"
                )
            _check_tokenizer(tok)
            sources.append(("tokenizer", tok))
        with self._lock():
            existing = [e for e in self.entries() if e.name == name]
            if existing and existing[0].role != role:
                raise InvalidInput(
                    f"model {name!r} already exists with role {existing[0].role}, not {role}"
                )
            version = str(1 + max((_version_key(e.version)[0] for e in existing), default=0))
            files = self._stage(sources, name, version)
            entry = ModelEntry(name, version, role, fmt, license, origin, files, False, _now())
            self._append(entry)
        return entry

    def add_staged(self, entry: ModelEntry) -> None:
        """Record an entry whose files are already in place (used by the bundle staging)."""
        with self._lock():
            self._append(entry)

    def _stage(
        self, sources: list[tuple[FileKind, Path]], name: str, version: str
    ) -> tuple[ModelFile, ...]:
        target = self.models_dir / name / version
        partial = target.with_name(f".{version}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        files = []
        for kind, src in sources:
            dst = partial / src.name
            shutil.copyfile(src, dst)
            rel = f"{name}/{version}/{src.name}"
            files.append(ModelFile(kind, rel, sha256_file(dst), dst.stat().st_size))
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)
        return tuple(files)

    def _append(self, entry: ModelEntry) -> None:
        doc = self._document()
        models = doc.get("model")
        if models is None:
            models = tomlkit.aot()
            doc.append("model", models)
        models.append(_entry_to_toml(entry))
        _atomic_write(self.catalog_path, tomlkit.dumps(doc))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _asdict(act: Activation) -> dict[str, str]:
    return {"role": act.role, "ref": act.ref, "at": act.at, "by": act.by}


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", name):
        raise InvalidInput(
            f"model name {name!r} is not allowed: use lower-case letters, digits, '.', '_' or '-'"
        )


def _check_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception subclass
        raise InvalidInput(f"{path} is not a valid tokenizer.json: {exc}") from None


def _entry_from_toml(raw: dict[str, Any]) -> ModelEntry:
    try:
        files = tuple(
            ModelFile(f["kind"], f["path"], f["sha256"], int(f["size"])) for f in raw["files"]
        )
        return ModelEntry(
            name=raw["name"],
            version=str(raw["version"]),
            role=raw["role"],
            format=raw["format"],
            license=raw.get("license", "unknown"),
            origin=raw.get("origin", ""),
            files=files,
            default=bool(raw.get("default", False)),
            added=raw.get("added", ""),
        )
    except (KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"model catalog entry {raw.get('name')!r} is incomplete: {exc}"
        ) from None


def _entry_to_toml(entry: ModelEntry) -> tomlkit.items.Table:
    table = tomlkit.table()
    for key in ("name", "version", "role", "format", "license", "origin", "default", "added"):
        table.add(key, getattr(entry, key))
    files = tomlkit.array()
    for f in entry.files:
        inline = tomlkit.inline_table()
        inline.update({"kind": f.kind, "path": f.path, "sha256": f.sha256, "size": f.size})
        files.append(inline)
    table.add("files", files.multiline(True))
    return table
