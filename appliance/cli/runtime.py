"""``appliance chat`` and ``appliance embed``: the runtimes, straight from the shell."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from appliance.cli.common import print_json, services
from appliance.errors import InvalidInput


def chat(
    prompt: Annotated[str, typer.Argument(help="What to ask the chat model.")],
    max_tokens: Annotated[int, typer.Option(min=1, max=8192)] = 512,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.0,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
) -> None:
    """Stream the active chat model's answer to a prompt."""
    from appliance.inference.chat import GenerationParams, Message

    if not prompt.strip():
        raise InvalidInput("the prompt is empty")
    messages: list[Message] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    params = GenerationParams(max_tokens=max_tokens, temperature=temperature)
    for piece in services().chat().stream(messages, params):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def embed(
    texts: Annotated[list[str], typer.Argument(help="One or more texts.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full vectors as JSON.")
    ] = False,
) -> None:
    """Embed texts with the active embedding model."""
    svc = services()
    vectors = svc.embedder().embed(texts)
    ref = svc.embedder_entry().ref
    if as_json:
        print_json({"model": ref, "dim": vectors.shape[1], "embeddings": vectors.tolist()})
        return
    for text, vec in zip(texts, vectors, strict=True):
        head = ", ".join(f"{x:+.4f}" for x in vec[:6])
        print(f"{ref} dim={vec.shape[0]} [{head}, …]  {text[:60]!r}")


def register(app: typer.Typer) -> None:
    app.command()(chat)
    app.command()(embed)
