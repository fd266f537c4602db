from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import BUNDLE_ROOT, Settings, load_settings
from appliance.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("APPLIANCE_"):
            monkeypatch.delenv(key)


def test_defaults_point_at_the_bundle() -> None:
    s = load_settings()
    assert s.home == BUNDLE_ROOT
    assert s.models_dir == BUNDLE_ROOT / "models"
    assert s.index_dir == BUNDLE_ROOT / "index"


def test_environment_variables_set_home_and_models_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path / "a"))
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("APPLIANCE_THREADS", "3")
    s = load_settings()
    assert (s.home, s.models_dir, s.threads) == (tmp_path / "a", tmp_path / "m", 3)
    assert s.keys_dir == tmp_path / "a" / "keys"


def test_toml_file_under_home_is_read_and_env_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "appliance.toml").write_text('threads = 5\nn_ctx = 1024\ndevice = "cpu"\n')
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    monkeypatch.setenv("APPLIANCE_N_CTX", "2048")
    s = load_settings()
    assert (s.threads, s.n_ctx, s.device) == (5, 2048, "cpu")


def test_named_settings_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = tmp_path / "conf.toml"
    conf.write_text('chat_backend = "remote"\nremote_url = "http://10.0.0.5:8000"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(conf))
    assert load_settings().remote_url == "http://10.0.0.5:8000"


def test_missing_named_settings_file_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("APPLIANCE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigurationError, match=r"nope.toml does not exist"):
        load_settings()


def test_invalid_toml_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "appliance.toml").write_text("threads = [unclosed\n")
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"appliance.toml is not valid TOML"):
        load_settings()


def test_invalid_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_THREADS", "0")
    monkeypatch.setenv("APPLIANCE_DEVICE", "tpu")
    with pytest.raises(ConfigurationError, match=r"invalid settings: threads: .*device: "):
        load_settings()


def test_unknown_setting_in_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "appliance.toml").write_text("thraeds = 4\n")
    monkeypatch.setenv("APPLIANCE_HOME", str(tmp_path))
    with pytest.raises(ConfigurationError, match=r"thraeds: Extra inputs are not permitted"):
        load_settings()


def test_constructor_arguments_win(tmp_path: Path) -> None:
    assert Settings(home=tmp_path, threads=1).threads == 1
