from pathlib import Path

import pytest
import yaml

from dlforge.config import (
    RunConfig,
    apply_overrides,
    dump_config,
    load_config,
    validate_config,
)
from dlforge.errors import ConfigError

BASE = {"inputs": [{"name": "text"}], "output": {"name": "label"}}


def test_defaults_are_the_articles_model():
    cfg = validate_config(BASE)
    assert cfg.model.name == "transformer"
    assert (cfg.model.d_model, cfg.model.heads) == (512, 4)
    assert cfg.text.vocab_size == 10_000
    # The optimisation is left to the data-size recipe unless set (dlforge.train.recipe).
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr) == (None, None, None)


def test_unknown_key_names_its_path_and_the_valid_keys():
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key; valid keys here are: "
                                          r"epochs"):
        validate_config({**BASE, "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.vocab: unknown key"):
        validate_config({"inputs": [{"name": "t", "vocab": 3}], "output": {"name": "y"}})


def test_wrong_type_names_path_and_value():
    with pytest.raises(ConfigError, match=r"model\.heads: .*integer.*'four'"):
        validate_config({**BASE, "model": {"name": "transformer", "heads": "four"}})


def test_family_specific_keys_are_checked_per_family():
    with pytest.raises(ConfigError, match=r"model\.heads: unknown key"):
        validate_config({**BASE, "model": {"name": "cnn", "heads": 4}})
    with pytest.raises(ConfigError, match="unknown model 'bert'"):
        validate_config({**BASE, "model": {"name": "bert"}})


@pytest.mark.parametrize("train,match", [({"epochs": 0}, r"train\.epochs"),
                                         ({"lr": -0.1}, r"train\.lr"),
                                         ({"batch_size": 0}, r"train\.batch_size")])
def test_bad_numbers_are_rejected(train, match):
    with pytest.raises(ConfigError, match=match):
        validate_config({**BASE, "train": train})


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="divisible"):
        validate_config({**BASE, "model": {"name": "transformer", "d_model": 30, "heads": 4}})


def test_yaml_round_trip_keeps_every_default(tmp_path: Path):
    cfg = validate_config({**BASE, "model": {"name": "rnn", "cell": "lstm"}})
    dump_config(cfg, tmp_path / "c.yaml")
    text = (tmp_path / "c.yaml").read_text()
    assert "bidirectional: true" in text and "warmup: null" in text
    assert load_config(tmp_path / "c.yaml") == cfg


def test_overrides_win_over_the_file(tmp_path: Path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**BASE, "train": {"epochs": 7}}))
    cfg = load_config(tmp_path / "run.yaml", {"train.epochs": 2, "inputs.0.max_length": 32})
    assert cfg.train.epochs == 2 and cfg.text.max_length == 32


def test_switching_family_drops_the_old_familys_keys():
    data = {**BASE, "model": {"name": "transformer", "heads": 8}}
    cfg = validate_config(apply_overrides(data, {"model.name": "cnn"}))
    assert cfg.model.name == "cnn"


def test_yaml_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        load_config(bad)
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(tmp_path / "empty.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_schema_is_one_object():
    assert set(RunConfig.model_fields) == {"data", "inputs", "output", "forecast", "model",
                                           "train", "tune", "privacy", "tracking"}
