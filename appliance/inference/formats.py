"""Checks that a file really is a model of the format its role needs, before it is trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from appliance.errors import ModelFormatError

GGUF_MAGIC = b"GGUF"


def check_model_file(path: Path, role: Literal["chat", "embedding"]) -> Literal["gguf", "onnx"]:
    """Return the format of a chat (GGUF) or embedding (ONNX) model file, or raise.

    Raises:
        ModelFormatError: the file is missing, not of the expected format, truncated or corrupt.
    """
    if not path.is_file():
        raise ModelFormatError(f"{path} does not exist or is not a file")
    if role == "chat":
        check_gguf(path)
        return "gguf"
    check_onnx(path)
    return "onnx"


def check_gguf(path: Path) -> None:
    """Parse the GGUF header and tensor table; a truncated file fails here."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFormatError(
            f"{path} is not a GGUF model (chat models must be GGUF files; convert it with "
            "llama.cpp's convert_hf_to_gguf.py first)"
        )
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError/IndexError/KeyError on bad data
        raise ModelFormatError(
            f"{path} is a truncated or corrupt GGUF file ({type(exc).__name__}): copy it again"
        ) from None
    if not reader.tensors:
        raise ModelFormatError(f"{path} is a GGUF file without tensors: not a usable model")
    end = max(t.data_offset + t.n_bytes for t in reader.tensors)
    if end > path.stat().st_size:
        raise ModelFormatError(f"{path} is truncated: its tensors end past the end of the file")


def check_onnx(path: Path) -> None:
    """Load and check the ONNX graph; a truncated or foreign file fails here."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, onnx ValidationError, ...
        raise ModelFormatError(
            f"{path} is not a valid ONNX model ({type(exc).__name__}): embedding models must be "
            "ONNX sentence encoders; copy the file again if it was cut short"
        ) from None
    inputs = {i.name for i in model.graph.input}
    if not {"input_ids", "attention_mask"} <= inputs:
        raise ModelFormatError(
            f"{path} is an ONNX model but not a text encoder: it needs inputs input_ids and "
            f"attention_mask, it has {sorted(inputs)}"
        )
