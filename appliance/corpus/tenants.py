"""Tenants: the isolation boundary. Each has its own key, document database and vectors.

A tenant's files live under ``<home>/index/<tenant>/``: ``corpus.db`` (SQLCipher, keyed
with the tenant's data key) and ``vectors.sealed`` (the FAISS index, sealed with the
tenant's vectors key). Deleting a tenant destroys its key first (crypto-shredding: any
copy of its files, in a backup say, is unreadable from then on), then removes its files.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config import Settings
from appliance.corpus.corpus import IndexSettings, TenantCorpus, reembed
from appliance.crypto import make_private_dir
from appliance.errors import NotFound
from appliance.inference.embedder import Embedder
from appliance.keyring import KeyRing, TenantInfo, check_tenant_name


@dataclass
class Tenants:
    """Creates, lists, opens and deletes tenants."""

    settings: Settings
    keyring: KeyRing
    _open: dict[str, TenantCorpus] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _dir(self, name: str) -> Path:
        return self.settings.index_dir / check_tenant_name(name)

    def folder(self, name: str) -> Path:
        """An existing tenant's private folder, for its stores beside the corpus."""
        if not self.exists(name):
            raise NotFound(f"unknown tenant {name!r}: see `appliance tenants list`")
        folder = self._dir(name)
        make_private_dir(folder)
        return folder

    def create(self, name: str) -> TenantInfo:
        folder = self._dir(name)
        self.keyring.create_tenant(name)
        if folder.exists():  # left by a deletion that was interrupted after the key was gone
            shutil.rmtree(folder)
        make_private_dir(self.settings.index_dir)
        make_private_dir(folder)
        return next(t for t in self.keyring.tenants() if t.name == name)

    def list(self) -> list[TenantInfo]:
        return self.keyring.tenants()

    def exists(self, name: str) -> bool:
        return any(t.name == name for t in self.keyring.tenants())

    def open(self, name: str, embedder: Embedder, embedder_ref: str) -> TenantCorpus:
        """The tenant's corpus, opened once per process; unknown tenant -> NotFound."""
        folder = self._dir(name)
        with self._lock:
            corpus = self._open.get(name)
            if corpus is None:
                keys = self.keyring.tenant_keys(name)
                make_private_dir(folder)
                corpus = TenantCorpus.open(
                    name,
                    folder,
                    keys,
                    embedder,
                    embedder_ref,
                    IndexSettings.from_settings(self.settings),
                )
                self._open[name] = corpus
            return corpus

    def reembed(
        self,
        name: str,
        embedder: Embedder,
        embedder_ref: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Re-embed a tenant's chunks with ``embedder``; its index is rebuilt on next open."""
        folder = self.folder(name)
        keys = self.keyring.tenant_keys(name)
        with self._lock:  # nobody opens the corpus while its embeddings are swapped
            corpus = self._open.pop(name, None)
            if corpus is not None:
                corpus.close()
            return reembed(name, folder, keys, embedder, embedder_ref, progress=progress)

    def delete(self, name: str) -> None:
        folder = self._dir(name)
        if not self.exists(name):
            raise NotFound(f"unknown tenant {name!r}: see `appliance tenants list`")
        with self._lock:
            corpus = self._open.pop(name, None)
            if corpus is not None:
                corpus.close()
        self.keyring.destroy_tenant(name)
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for corpus in self._open.values():
                corpus.close()
            self._open.clear()
