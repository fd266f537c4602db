"""The one place that wires the appliance together from its settings.

The API (in its lifespan), the CLI and the tests all get their runtimes and stores from a
``Services`` built here. Heavy runtimes load on first use, once, behind a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from appliance.config import Settings
from appliance.inference.catalog import ModelCatalog, ModelEntry

if TYPE_CHECKING:
    from appliance.inference.chat import ChatModel
    from appliance.inference.embedder import Embedder


@dataclass
class Services:
    settings: Settings
    catalog: ModelCatalog
    _chat: tuple[ChatModel, ModelEntry | None] | None = field(default=None, repr=False)
    _embedder: tuple[Embedder, ModelEntry] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        return cls(settings=settings, catalog=ModelCatalog(settings.models_dir))

    def chat(self) -> ChatModel:
        return self._chat_entry()[0]

    def chat_entry(self) -> ModelEntry | None:
        """The catalog entry of the in-process chat model (None for a remote upstream)."""
        return self._chat_entry()[1]

    def _chat_entry(self) -> tuple[ChatModel, ModelEntry | None]:
        with self._lock:
            if self._chat is None:
                from appliance.inference.runtime import load_chat

                self._chat = load_chat(self.settings, self.catalog)
            return self._chat

    def embedder(self) -> Embedder:
        return self._embedder_entry()[0]

    def embedder_entry(self) -> ModelEntry:
        return self._embedder_entry()[1]

    def _embedder_entry(self) -> tuple[Embedder, ModelEntry]:
        with self._lock:
            if self._embedder is None:
                from appliance.inference.runtime import load_embedder

                self._embedder = load_embedder(self.settings, self.catalog)
            return self._embedder

    def close(self) -> None:
        with self._lock:
            self._chat = None
            self._embedder = None
