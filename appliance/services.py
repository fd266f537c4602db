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
    from appliance.apikeys import ApiKeys
    from appliance.audit import AuditLog
    from appliance.corpus.corpus import TenantCorpus
    from appliance.corpus.tenants import Tenants
    from appliance.inference.chat import ChatModel
    from appliance.inference.embedder import Embedder
    from appliance.keyring import KeyRing


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

    def close(self) -> None:
        with self._lock:
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
