"""Sentence embedders: the ONNX runtime used in production and a hashing fake for unit tests.

Both implement :class:`Embedder`, so indexing and search code never knows which one it has.

Empty texts: the real model embeds ``""`` as its special tokens alone (``[CLS] [SEP]`` for
BERT), exactly as sentence-transformers does, which gives a valid unit vector. A text that a
tokenizer turns into no tokens at all (possible only with tokenizers that add no special
tokens) embeds to the zero vector: there is nothing to average, and a zero row can never look
similar to anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from appliance.errors import ConfigurationError, InvalidInput, ModelFormatError

Device = Literal["auto", "cpu", "cuda"]
_NORM_EPS = 1e-12
_SUPPORTED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_INT_TYPES: dict[str, type[np.integer[Any]]] = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_WORD = re.compile(r"\w+")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised vectors."""

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    @property
    def max_tokens(self) -> int:
        """Tokens read per text, special tokens included; the rest of a longer text is ignored."""
        ...

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts: shape ``(len(texts), dim)``, float32, unit rows, in input order."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text in the model's vocabulary, untruncated, special tokens excluded."""
        ...


def _check_texts(texts: Sequence[str]) -> None:
    # A bare string is a Sequence[str] too, and would be embedded character by character.
    if isinstance(texts, str):
        raise InvalidInput("texts must be a list of strings, not a single string")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInput(f"texts[{i}] is a {type(text).__name__}, not a string")


def _normalise(rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    normalised: npt.NDArray[np.float32] = (rows / np.maximum(norms, _NORM_EPS)).astype(np.float32)
    return normalised


def _ort_load_errors() -> tuple[type[Exception], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph")
    return tuple(getattr(state, name) for name in (*names, "NotImplemented"))


def _ort_run_errors() -> tuple[type[Exception], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return (state.Fail, state.InvalidArgument, state.RuntimeException)


def _providers(device: Device) -> list[str]:
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not has_cuda:
        raise ConfigurationError(
            "device 'cuda' was asked for but this onnxruntime has no CUDA support: "
            "install onnxruntime-gpu or set the embedding device to 'cpu' or 'auto'"
        )
    if device != "cpu" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _open_session(path: Path, threads: int | None, device: Device, spinning: bool) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise ModelFormatError(f"{path} does not exist: copy the ONNX model file there")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0 lets onnxruntime use the physical cores
    options.inter_op_num_threads = 1
    # a spinning worker keeps its core busy between operators: on shared cores it is
    # preempted work, not saved latency (measured in docs/benchmarks.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # CUDA placement notices are noise at warning level
    providers = _providers(device)
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except _ort_load_errors() as exc:
        raise ModelFormatError(
            f"{path} is not a loadable ONNX model, or it is truncated ({exc}): "
            "copy the file again or re-run the conversion"
        ) from exc
    if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ConfigurationError(
            "device 'cuda' was asked for but onnxruntime could not start CUDA: check the "
            "driver and CUDA libraries, or set the embedding device to 'cpu'"
        )
    return session


def _input_types(session: Any, path: Path) -> dict[str, type[np.integer[Any]]]:
    types: dict[str, type[np.integer[Any]]] = {}
    for node in session.get_inputs():
        if node.name not in _SUPPORTED_INPUTS or node.type not in _INT_TYPES:
            raise ModelFormatError(
                f"{path}: input '{node.name}' ({node.type}) is not supported; a sentence "
                "encoder takes int64 or int32 input_ids, attention_mask and optionally "
                "token_type_ids"
            )
        types[node.name] = _INT_TYPES[node.type]
    if not {"input_ids", "attention_mask"} <= types.keys():
        raise ModelFormatError(f"{path}: the model needs inputs input_ids and attention_mask")
    return types


def _rank_error(path: Path, name: str, rank: int) -> ModelFormatError:
    return ModelFormatError(
        f"{path}: output '{name}' has rank {rank}; a sentence encoder gives [batch, dim] "
        "sentence vectors or [batch, tokens, dim] token vectors"
    )


def _pick_output(session: Any, path: Path) -> tuple[str, int | None]:
    """The output to read, and its last dimension when the graph declares it. Exporters that
    declare no shape leave the rank to be checked on the first run."""
    outputs = {node.name: node for node in session.get_outputs()}
    node = outputs.get("sentence_embedding") or session.get_outputs()[0]
    shape = list(node.shape or [])
    if shape and len(shape) not in (2, 3):
        raise _rank_error(path, node.name, len(shape))
    last = shape[-1] if shape else None
    return str(node.name), last if isinstance(last, int) and last > 0 else None


def _load_tokenizers(path: Path, max_tokens: int | None) -> tuple[Any, Any, int]:
    """The truncating tokenizer that feeds the model, an untruncated one for counting, and
    the token limit (``max_tokens``, else the file's own truncation length)."""
    from tokenizers import Tokenizer

    try:
        text = path.read_text(encoding="utf-8")
        feeding, counting = Tokenizer.from_str(text), Tokenizer.from_str(text)
    except FileNotFoundError:
        raise ModelFormatError(
            f"{path} does not exist: copy the model's tokenizer.json there"
        ) from None
    except Exception as exc:  # the Rust side raises a bare Exception for a malformed file
        raise ModelFormatError(
            f"{path} is not a valid tokenizer.json ({exc}): copy the model's tokenizer again"
        ) from exc
    limit = max_tokens or (feeding.truncation or {}).get("max_length")
    if not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(
            f"{path} sets no truncation length and max_tokens was not given: pass the model's "
            "max_tokens (its max_seq_length) when adding it"
        )
    # Padding is done per sorted batch in numpy; the file's own padding would get in the way.
    feeding.no_padding()
    feeding.enable_truncation(max_length=limit)
    counting.no_padding()
    counting.no_truncation()
    return feeding, counting, limit


def _pad_id(tokenizer: Any) -> int:
    padding = tokenizer.padding or {}
    pad_id = padding.get("pad_id", tokenizer.token_to_id(str(padding.get("pad_token", "[PAD]"))))
    return int(pad_id or 0)


class OnnxEmbedder:
    """Sentence embeddings from an ONNX encoder through onnxruntime.

    Accepts graphs that output pooled vectors (rank 2) or token vectors (rank 3, mean-pooled
    over the attention mask here), with or without a ``token_type_ids`` input. Rows are always
    L2-normalised. Texts are sorted by token length and batched so padding is minimal; results
    come back in input order. Safe to call from several threads.

    Args:
        model_path: The ONNX model.
        tokenizer_path: Its ``tokenizer.json`` (Hugging Face ``tokenizers`` format).
        threads: Threads for one inference (``intra_op_num_threads``); ``None`` for all cores.
        device: ``"cuda"`` needs CUDA, ``"cpu"`` never uses it, ``"auto"`` uses it when present.
        batch_size: Texts per inference call.
        max_tokens: Tokens read per text; ``None`` takes the tokenizer's truncation length.
        spinning: Let onnxruntime's intra-op threads spin-wait for work (its own default);
            off yields the cores between operators.

    Raises:
        ModelFormatError: A file is missing, not ONNX / not a tokenizer, truncated, or the
            graph's inputs or outputs are not those of a sentence encoder.
        ConfigurationError: A bad argument, CUDA asked for but unavailable, or no token limit.
    """

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        threads: int | None = None,
        device: Device = "auto",
        batch_size: int = 32,
        max_tokens: int | None = None,
        spinning: bool = False,
    ) -> None:
        for name, value in (
            ("threads", threads),
            ("batch_size", batch_size),
            ("max_tokens", max_tokens),
        ):
            if value is not None and value < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {value}")
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigurationError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self._tokenizer, self._counter, self._max_tokens = _load_tokenizers(
            tokenizer_path, max_tokens
        )
        self._session = _open_session(model_path, threads, device, spinning)
        self._input_types = _input_types(self._session, model_path)
        self._model_path, self._tokenizer_path = model_path, tokenizer_path
        self._output, dim = _pick_output(self._session, model_path)
        self._pad_id = _pad_id(self._tokenizer)
        self._batch_size = batch_size
        # A graph exported with a symbolic last axis reveals it only by running.
        self._dim = dim or int(self._run([[self._pad_id]], [[0]]).shape[1])

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Tokens read per text, special tokens included."""
        return self._max_tokens

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers in use, preferred first."""
        return list(self._session.get_providers())

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts.

        Args:
            texts: The texts; empty strings are allowed (see the module docstring).

        Returns:
            Float32 array of shape ``(len(texts), dim)``, unit rows, in input order.

        Raises:
            InvalidInput: ``texts`` is a single string or holds something that is not a string.
        """
        _check_texts(texts)
        result = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return result
        encodings = self._tokenizer.encode_batch(list(texts))
        token_ids = [encoding.ids for encoding in encodings]
        type_ids = [encoding.type_ids for encoding in encodings]
        order = np.argsort([len(ids) for ids in token_ids], kind="stable")
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            result[rows] = self._run([token_ids[i] for i in rows], [type_ids[i] for i in rows])
        return result

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, untruncated, special tokens excluded.

        Raises:
            InvalidInput: ``texts`` is a single string or holds something that is not a string.
        """
        _check_texts(texts)
        encodings = self._counter.encode_batch(list(texts), add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]

    def _run(
        self, token_ids: list[list[int]], type_ids: list[list[int]]
    ) -> npt.NDArray[np.float32]:
        lengths = [len(ids) for ids in token_ids]
        width = max(1, max(lengths))  # onnxruntime rejects a zero-length axis
        ids = np.full((len(token_ids), width), self._pad_id, dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, (tokens, kinds) in enumerate(zip(token_ids, type_ids, strict=True)):
            ids[row, : len(tokens)] = tokens
            types[row, : len(kinds)] = kinds
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        inputs = {
            name: feeds[name].astype(dtype, copy=False) for name, dtype in self._input_types.items()
        }
        try:
            (output,) = self._session.run([self._output], inputs)
        except _ort_run_errors() as exc:  # e.g. a token id past the end of the model's vocabulary
            raise ModelFormatError(
                f"{self._model_path} failed on this input ({exc}): check that "
                f"{self._tokenizer_path} is the tokenizer that belongs to this model"
            ) from exc
        vectors = np.asarray(output, dtype=np.float32)
        if vectors.ndim not in (2, 3):
            raise _rank_error(self._model_path, self._output, vectors.ndim)
        if vectors.ndim == 3:
            weights = mask[:, :, None].astype(np.float32)
            vectors = (vectors * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        vectors[mask.sum(axis=1) == 0] = 0.0  # nothing to average: see the module docstring
        return _normalise(vectors)


class HashEmbedder:
    """A deterministic stand-in for :class:`OnnxEmbedder` in unit tests: no weights, no runtime.

    Each lower-cased word is hashed (BLAKE2b, so the same on every run and machine) into one of
    ``dim`` buckets; a text's vector is its normalised bucket counts. Texts that share words
    therefore get a higher cosine than texts that share none. A text without words gets the
    unit vector of bucket 0, as the real model gives ``""`` a fixed unit vector. Only the first
    :attr:`max_tokens` words count, mirroring truncation.

    Args:
        dim: Length of each vector.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 1:
            raise ConfigurationError(f"dim must be at least 1, got {dim}")
        self._dim = dim

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Words read per text."""
        return 256

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed texts: shape ``(len(texts), dim)``, float32, unit rows, in input order.

        Raises:
            InvalidInput: ``texts`` is a single string or holds something that is not a string.
        """
        _check_texts(texts)
        counts = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())[: self.max_tokens]
            for word in words:
                digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
                counts[row, int.from_bytes(digest, "little") % self._dim] += 1.0
            if not words:
                counts[row, 0] = 1.0
        return _normalise(counts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Words per text, untruncated.

        Raises:
            InvalidInput: ``texts`` is a single string or holds something that is not a string.
        """
        _check_texts(texts)
        return [len(_WORD.findall(text)) for text in texts]
