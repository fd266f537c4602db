"""`appliance chat` and `appliance embed` from the shell, with the real default models."""

from __future__ import annotations

import json

import numpy as np

from appliance.testing import run_cli


def test_chat_prints_the_answer(cli_env: dict[str, str]) -> None:
    result = run_cli("chat", "What is the capital of France? Answer in one sentence.", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_chat_refuses_an_empty_prompt(cli_env: dict[str, str]) -> None:
    result = run_cli("chat", "   ", env=cli_env)
    assert (result.returncode, result.stderr) == (1, "error: the prompt is empty\n")


def test_chat_rejects_bad_options(cli_env: dict[str, str]) -> None:
    result = run_cli("chat", "hi", "--max-tokens", "0", env=cli_env)
    assert result.returncode == 2 and "Invalid value for '--max-tokens'" in result.stderr


def test_embed_json_gives_unit_vectors(cli_env: dict[str, str]) -> None:
    texts = ["The contract ends in May.", "The agreement terminates in May.", "Bananas are yellow."]
    result = run_cli("embed", *texts, "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    vectors = np.array(body["embeddings"], dtype=np.float32)
    assert body["model"] == "all-minilm-l6-v2@1" and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_env_vars_select_the_model_store(cli_env: dict[str, str]) -> None:
    activated = run_cli("models", "activate", "all-minilm-l6-v2-int8", env=cli_env)
    assert activated.returncode == 0, activated.stderr
    result = run_cli("embed", "hello", "--json", env=cli_env)
    assert json.loads(result.stdout)["model"] == "all-minilm-l6-v2-int8@1"


def test_unknown_command_is_a_usage_error(cli_env: dict[str, str]) -> None:
    result = run_cli("frobnicate", env=cli_env)
    assert result.returncode == 2 and "No such command 'frobnicate'" in result.stderr
