"""Settings: environment variables ``APPLIANCE_*``, an optional TOML file, defaults.

Built by ``create_app`` and the CLI, never at import time. Precedence, highest first:
constructor arguments, environment variables, the TOML file named by ``APPLIANCE_CONFIG``
(or ``<home>/appliance.toml`` when that exists), defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from appliance.errors import ConfigurationError

BUNDLE_ROOT = Path(__file__).resolve().parent.parent
# ask abstains below this nearest-chunk cosine; tuned on the end-to-end curve (docs/review.md)
ASK_MIN_EVIDENCE = 0.38
"""The bundle: the folder that holds ``appliance/``, ``models/``, ``index/``..."""


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class Settings(BaseSettings):
    """Everything an administrator can configure."""

    model_config = SettingsConfigDict(env_prefix="APPLIANCE_", extra="forbid")

    home: Path = Field(default=BUNDLE_ROOT, description="Data root: tenant data, keys, audit log.")
    models_dir: Path = Field(
        default=BUNDLE_ROOT / "models", description="Model store: catalog.toml and staged files."
    )
    config: Path | None = Field(default=None, description="Optional TOML settings file.")

    threads: int = Field(default_factory=_default_threads, ge=1, le=512)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    n_gpu_layers: int | Literal["auto"] = Field(
        default="auto", description="Layers offloaded to the GPU; auto = all when CUDA is usable."
    )
    n_ctx: int = Field(default=4096, ge=256, le=131072)
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    embed_spinning: bool = Field(
        default=False,
        description="Let onnxruntime's threads spin between operators. Off: on a machine "
        "whose cores are shared (the chat model, other services) spinning threads steal them.",
    )

    ask_min_evidence: float = Field(
        default=ASK_MIN_EVIDENCE,
        ge=0.0,
        le=1.0,
        description="Ask abstains when the nearest chunk's cosine is below this; tune it per "
        "embedding model with `appliance eval ask --curve`.",
    )

    chat_backend: Literal["llama_cpp", "remote"] = "llama_cpp"
    remote_url: str | None = Field(
        default=None, description="OpenAI-compatible server on the private network, e.g. vLLM."
    )
    remote_model: str | None = None
    remote_api_key: str | None = None
    remote_timeout_s: float = Field(default=120.0, gt=0)

    index_kind: Literal["auto", "flat", "hnsw"] = Field(
        default="auto", description="Vector index: flat up to hnsw_threshold vectors, then HNSW."
    )
    hnsw_threshold: int = Field(default=100_000, ge=1)
    chunk_tokens: int = Field(default=200, ge=32, le=2048)
    chunk_overlap_tokens: int = Field(default=32, ge=0, le=512)
    max_document_mb: float = Field(default=100.0, gt=0, description="Largest file accepted.")
    max_unpacked_mb: float = Field(default=500.0, gt=0, description="Zip containers, inflated.")
    ocr: bool = Field(default=True, description="OCR scanned pages when Tesseract is installed.")
    ocr_languages: str = "eng"

    llm_queue_limit: int = Field(
        default=8, ge=0, le=1000, description="Requests that may wait for the chat model; then 503."
    )
    llm_queue_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait for the chat model before a 503."
    )
    llm_request_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest generation; it is stopped after this."
    )

    tls_cert: Path | None = Field(default=None, description="PEM certificate: serve HTTPS.")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")

    master_passphrase: str | None = Field(
        default=None, description="Derive the master key from a passphrase instead of a key file."
    )

    @field_validator("home", "models_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlFileSource(settings_cls, init_settings))

    # --- derived locations -------------------------------------------------------

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    @property
    def catalog_path(self) -> Path:
        return self.models_dir / "catalog.toml"


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads the optional TOML settings file.

    The file is named by ``APPLIANCE_CONFIG`` (or the ``config`` argument); without it,
    ``<home>/appliance.toml`` is read when it exists.
    """

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._init = init

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ is used instead

    def __call__(self) -> dict[str, Any]:
        init_values = self._init()
        named = init_values.get("config") or os.environ.get("APPLIANCE_CONFIG")
        if named:
            path = Path(named).expanduser()
            if not path.is_file():
                raise ConfigurationError(
                    f"settings file {path} does not exist: fix APPLIANCE_CONFIG or create the file"
                )
        else:
            home = init_values.get("home") or os.environ.get("APPLIANCE_HOME") or BUNDLE_ROOT
            path = Path(home).expanduser() / "appliance.toml"
            if not path.is_file():
                return {}
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"settings file {path} is not valid TOML: {exc}") from None
        return data


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning validation failures into one readable ``ConfigurationError``."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
