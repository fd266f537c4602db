"""Build the live runtimes (chat model, embedder) from settings and the model catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.config import Settings
from appliance.errors import ConfigurationError
from appliance.inference.catalog import ModelCatalog, ModelEntry

if TYPE_CHECKING:
    from appliance.inference.chat import ChatModel
    from appliance.inference.embedder import Embedder


def load_chat(settings: Settings, catalog: ModelCatalog) -> tuple[ChatModel, ModelEntry | None]:
    """The configured chat backend: the active GGUF in-process, or the remote upstream."""
    if settings.chat_backend == "remote":
        from appliance.inference.remote import RemoteChat, validate_remote_url

        if not settings.remote_url or not settings.remote_model:
            raise ConfigurationError(
                "chat_backend=remote needs APPLIANCE_REMOTE_URL and APPLIANCE_REMOTE_MODEL"
            )
        remote = RemoteChat(
            validate_remote_url(settings.remote_url),
            settings.remote_model,
            api_key=settings.remote_api_key,
            timeout_s=settings.remote_timeout_s,
            n_ctx=settings.n_ctx,
        )
        return remote, None
    from appliance.inference.chat import LlamaCppChat

    entry, paths = catalog.resolve("chat")
    chat = LlamaCppChat(
        paths["weights"],
        entry.ref,
        n_ctx=settings.n_ctx,
        threads=settings.threads,
        n_gpu_layers=settings.n_gpu_layers,
        device=settings.device,
    )
    return chat, entry


def load_embedder(settings: Settings, catalog: ModelCatalog) -> tuple[Embedder, ModelEntry]:
    """The active ONNX embedding model."""
    from appliance.inference.embedder import OnnxEmbedder

    entry, paths = catalog.resolve("embedding")
    embedder = OnnxEmbedder(
        paths["weights"],
        paths["tokenizer"],
        threads=settings.threads,
        device=settings.device,
        batch_size=settings.embed_batch_size,
        spinning=settings.embed_spinning,
    )
    return embedder, entry
