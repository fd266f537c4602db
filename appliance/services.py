"""The one place that wires the appliance together from its settings.

The API (in its lifespan), the CLI and the tests all get their runtimes and stores from a
``Services`` built here. Heavy runtimes load on first use, once, behind a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from appliance.config import Settings
from appliance.inference.catalog import ModelCatalog, ModelEntry

if TYPE_CHECKING:
    from appliance.apikeys import ApiKeys
    from appliance.audit import AuditLog
    from appliance.corpus.corpus import TenantCorpus
    from appliance.corpus.tenants import Tenants
    from appliance.inference.chat import ChatModel
    from appliance.inference.embedder import Embedder
    from appliance.keyring import KeyRing, TenantKeys


class Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=Closable)


@dataclass
class Services:
    settings: Settings
    catalog: ModelCatalog
    _chat: tuple[ChatModel, ModelEntry | None] | None = field(default=None, repr=False)
    _embedder: tuple[Embedder, ModelEntry] | None = field(default=None, repr=False)
    _keyring: KeyRing | None = field(default=None, repr=False)
    _tenants: Tenants | None = field(default=None, repr=False)
    _audit: AuditLog | None = field(default=None, repr=False)
    _apikeys: ApiKeys | None = field(default=None, repr=False)
    _tenant_states: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

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

    def keyring(self) -> KeyRing:
        """The tenant keyring, opened with the master key (created on first use)."""
        from appliance.crypto import MasterKey, make_private_dir
        from appliance.keyring import KeyRing

        with self._lock:
            if self._keyring is None:
                keys = self.settings.keys_dir
                make_private_dir(self.settings.home)
                make_private_dir(keys)
                if self.settings.master_passphrase:
                    master = MasterKey.from_passphrase(
                        self.settings.master_passphrase, keys / "master.salt"
                    )
                else:
                    master = MasterKey.from_file(keys / "master.key", create=True)
                self._keyring = KeyRing(keys / "keyring.db", master)
            return self._keyring

    def audit(self) -> AuditLog:
        """The audit log (created with its signing key on first use)."""
        from appliance.audit import AuditLog
        from appliance.crypto import make_private_dir

        with self._lock:
            if self._audit is None:
                make_private_dir(self.settings.audit_dir)
                self._audit = AuditLog(
                    self.settings.audit_dir / "audit.db",
                    self.keyring(),
                    self.settings.keys_dir / "audit-signing.key",
                )
            return self._audit

    def apikeys(self) -> ApiKeys:
        from appliance.apikeys import ApiKeys
        from appliance.crypto import make_private_dir

        with self._lock:
            if self._apikeys is None:
                make_private_dir(self.settings.keys_dir)
                self._apikeys = ApiKeys(self.settings.keys_dir / "apikeys.db")
            return self._apikeys

    def tenants(self) -> Tenants:
        from appliance.corpus.tenants import Tenants

        with self._lock:
            if self._tenants is None:
                self._tenants = Tenants(self.settings, self.keyring())
            return self._tenants

    def corpus(self, tenant: str) -> TenantCorpus:
        """An existing tenant's corpus (NotFound for an unknown tenant)."""
        tenants = self.tenants()
        tenants.keyring.tenant_keys(tenant)  # NotFound before any model is loaded
        embedder, entry = self._embedder_entry()
        return tenants.open(tenant, embedder, entry.ref)

    def tenant_state(
        self, tenant: str, kind: str, open_state: Callable[[Path, TenantKeys], S]
    ) -> S:
        """A per-tenant store of one ``kind`` (answer cache, taxonomies...), opened once.

        ``open_state(folder, keys)`` gets the tenant's private folder and data keys; what it
        returns is kept until :meth:`close` or :meth:`delete_tenant`, which call its
        ``close()``. An unknown tenant is a ``NotFound``.
        """
        with self._lock:
            state = self._tenant_states.get((tenant, kind))
            if state is None:
                keys = self.keyring().tenant_keys(tenant)
                state = open_state(self.tenants().folder(tenant), keys)
                self._tenant_states[(tenant, kind)] = state
            return state

    def reindex(self, tenant: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Re-embed a tenant with the active embedding model (after activating a new one)."""
        embedder, entry = self._embedder_entry()
        return self.tenants().reembed(tenant, embedder, entry.ref, progress)

    def models_changed(self, role: str) -> None:
        """Drop the loaded model of ``role`` after an activation; the next use loads the new one.

        A generation already running keeps its model until it ends. A new embedding model
        also closes the open corpora: each is built for one embedding model and says so.
        """
        with self._lock:
            if role == "chat":
                self._chat = None
            elif role == "embedding":
                self._embedder = None
                if self._tenants is not None:
                    self._tenants.close()

    def open_tenant_states(self, kind: str) -> list[tuple[tuple[str, str], Any]]:
        """The per-tenant stores of ``kind`` open now (for metrics); never opens one."""
        with self._lock:
            return [(key, state) for key, state in self._tenant_states.items() if key[1] == kind]

    def delete_tenant(self, tenant: str) -> None:
        """Delete a tenant: close its stores, revoke its API keys, destroy its keys and files."""
        with self._lock:
            for key in [k for k in self._tenant_states if k[0] == tenant]:
                self._tenant_states.pop(key).close()
            self.tenants().delete(tenant)
            self.apikeys().revoke_tenant(tenant)

    def close(self) -> None:
        with self._lock:
            for state in self._tenant_states.values():
                state.close()
            self._tenant_states.clear()
            if self._tenants is not None:
                self._tenants.close()
                self._tenants = None
            if self._audit is not None:
                self._audit.checkpoint()  # seal this process's entries against truncation
                self._audit.close()
                self._audit = None
            if self._apikeys is not None:
                self._apikeys.close()
                self._apikeys = None
            if self._keyring is not None:
                self._keyring.close()
                self._keyring = None
            self._chat = None
            self._embedder = None
