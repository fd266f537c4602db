"""Chat models: the protocol, and the in-process llama.cpp runtime.

A chat model takes messages and returns text, either whole or as a stream of pieces,
optionally constrained to a JSON schema. The in-process runtime is not thread-safe, so
every generation holds the model's lock; a stream releases it as soon as its consumer
stops reading (``close()`` on the generator, which a departing HTTP client triggers) or
sets the ``cancel`` event.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict

from appliance.errors import GenerationError, InvalidInput, ModelFormatError

if TYPE_CHECKING:
    import llama_cpp


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "cancelled"]
    model: str


@dataclass(slots=True)
class StreamStats:
    """Filled in while a stream runs; read it after the stream ends."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Literal["stop", "length", "cancelled"] = "stop"


class ChatModel(Protocol):
    """What the rest of the appliance needs from a chat model."""

    @property
    def model_ref(self) -> str: ...

    @property
    def context_length(self) -> int: ...

    def count_tokens(self, text: str) -> int: ...

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams = ...,
        *,
        json_schema: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]: ...

    def complete(
        self,
        messages: Sequence[Message],
        params: GenerationParams = ...,
        *,
        json_schema: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion: ...


def check_json_schema(schema: dict[str, Any]) -> None:
    """Raise ``InvalidInput`` when ``schema`` is not a valid JSON Schema."""
    import jsonschema

    if not isinstance(schema, dict):
        raise InvalidInput("the schema must be a JSON object")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidInput(f"not a valid JSON Schema: {exc.message}") from None


def validate_json_output(text: str, schema: dict[str, Any], model: str) -> Any:
    """Parse generated JSON and validate it against the schema it was constrained to."""
    import jsonschema

    try:
        value = json.loads(text)
        jsonschema.validate(value, schema)
    except (ValueError, jsonschema.ValidationError) as exc:
        raise GenerationError(
            f"model {model} produced output that does not satisfy the schema "
            f"({type(exc).__name__}); raise max_tokens or simplify the schema"
        ) from None
    return value


def complete_from_stream(
    model: ChatModel,
    messages: Sequence[Message],
    params: GenerationParams,
    json_schema: dict[str, Any] | None,
    cancel: threading.Event | None,
) -> Completion:
    """Collect a stream into one ``Completion`` (shared by every ``ChatModel``)."""
    stats = StreamStats()
    pieces = list(
        model.stream(messages, params, json_schema=json_schema, cancel=cancel, stats=stats)
    )
    text = "".join(pieces)
    if json_schema is not None and stats.finish_reason != "cancelled":
        validate_json_output(text, json_schema, model.model_ref)
    return Completion(
        text, stats.prompt_tokens, stats.completion_tokens, stats.finish_reason, model.model_ref
    )


# llama-cpp-python's converter lets a JSON string hold raw control characters (a newline,
# say), which no JSON parser accepts; the model then "satisfies" the grammar with invalid
# JSON. Upstream llama.cpp excludes them; so do we.
_LAX_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def strict_json_strings(gbnf: str) -> str:
    """The grammar with control characters (U+0000-U+001F, U+007F) barred from strings."""
    return gbnf.replace(_LAX_CHAR, _STRICT_CHAR)


def resolve_gpu_layers(
    setting: int | Literal["auto"], device: Literal["auto", "cpu", "cuda"], gpu_build: bool
) -> int:
    """How many layers to offload: all when the build has CUDA and a GPU is present."""
    if device == "cpu":
        return 0
    if device == "cuda" and not gpu_build:
        raise ModelFormatError(
            "device=cuda but llama-cpp-python was built without CUDA: "
            "run installer/install.sh --cuda, or set APPLIANCE_DEVICE=cpu"
        )
    if setting == "auto":
        return -1 if gpu_build else 0
    return setting


@dataclass
class LlamaCppChat:
    """A GGUF chat model run in-process by llama.cpp."""

    model_path: Path
    model_ref: str
    n_ctx: int = 4096
    threads: int = 2
    n_gpu_layers: int | Literal["auto"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    _llama: llama_cpp.Llama = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        import llama_cpp

        layers = resolve_gpu_layers(
            self.n_gpu_layers, self.device, bool(llama_cpp.llama_supports_gpu_offload())
        )
        self.gpu_layers = layers
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                n_gpu_layers=layers,
                verbose=False,
            )
        except ValueError as exc:
            raise ModelFormatError(
                f"llama.cpp could not load {self.model_path} ({exc}): check the file with "
                "`appliance models verify`"
            ) from None

    @property
    def context_length(self) -> int:
        return int(self._llama.n_ctx())

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def stream(
        self,
        messages: Sequence[Message],
        params: GenerationParams = GenerationParams(),
        *,
        json_schema: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
        stats: StreamStats | None = None,
    ) -> Iterator[str]:
        grammar = self._grammar(json_schema) if json_schema is not None else None
        stats = stats if stats is not None else StreamStats()
        with self._lock:
            chunks = self._llama.create_chat_completion(
                messages=list(messages),  # type: ignore[arg-type]
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stop=list(params.stop) or None,
                seed=params.seed,
                grammar=grammar,
                stream=True,
            )
            try:
                yield from self._pieces(chunks, cancel, stats)  # type: ignore[arg-type]
            finally:
                chunks.close()  # type: ignore[union-attr]

    def _pieces(
        self, chunks: Iterator[Any], cancel: threading.Event | None, stats: StreamStats
    ) -> Iterator[str]:
        for chunk in chunks:
            if cancel is not None and cancel.is_set():
                stats.finish_reason = "cancelled"
                return
            choice = chunk["choices"][0]
            piece = choice["delta"].get("content")
            if piece:
                stats.completion_tokens += 1
                yield piece
            if choice.get("finish_reason") == "length":
                stats.finish_reason = "length"
        stats.prompt_tokens = int(self._llama.n_tokens) - stats.completion_tokens

    def complete(
        self,
        messages: Sequence[Message],
        params: GenerationParams = GenerationParams(),
        *,
        json_schema: dict[str, Any] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        return complete_from_stream(self, messages, params, json_schema, cancel)

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        check_json_schema(schema)
        try:
            gbnf = strict_json_strings(json_schema_to_gbnf(json.dumps(schema)))
            return LlamaGrammar.from_string(gbnf, verbose=False)
        except Exception as exc:  # the converter raises plain Exception/ValueError/KeyError
            raise InvalidInput(
                f"the schema cannot be expressed as a grammar ({type(exc).__name__}: {exc})"
            ) from None
