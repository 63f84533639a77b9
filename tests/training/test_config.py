"""The config tree: presets, TOML in and out, flags over files, one-line errors naming the key."""

import dataclasses

import pytest

from unet_from_scratch.train import build_parser
from unet_from_scratch.training.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    flag_fields,
    load_config,
    presets,
    to_toml,
    validate,
)


def test_the_three_presets_ship_with_the_package():
    assert set(presets()) >= {"quick", "paper", "advanced"}


@pytest.mark.parametrize("name", ["quick", "paper", "advanced"])
def test_a_preset_round_trips_through_toml(name, tmp_path):
    config = validate(load_config(name))
    path = tmp_path / "config.toml"
    path.write_text(to_toml(config))
    assert load_config(str(path)) == config


def test_the_presets_say_what_the_issue_asks_of_them():
    paper, advanced = load_config("paper"), load_config("advanced")
    assert (paper.model.padding, paper.optimizer.name, paper.optimizer.momentum, paper.run.batch_size) == (
        "valid", "momentum", 0.99, 1,
    )  # fmt: skip
    assert paper.loss.name == "weighted-ce" and "elastic" in paper.data.augment
    assert advanced.model.name == "attention-unet" and advanced.loss.name == "combined"
    assert advanced.loss.coefficients == [0.4, 0.4, 0.2]
    assert (advanced.schedule.name, advanced.schedule.warmup_epochs) == ("warmup-cosine", 10.0)
    assert (advanced.run.clip, advanced.run.patience, advanced.run.batch_size) == (1.0, 15, 16)
    assert set(advanced.data.augment) == {"flip", "rot90"}


def test_the_quick_preset_is_the_dataclass_defaults():
    # The defaults are stated twice (the dataclasses document them, quick.toml is what runs): they must agree.
    assert load_config("quick") == TrainConfig()


def test_flags_override_the_file_and_are_typed():
    config = apply_overrides(load_config("quick"), {"model.depth": "4", "run.amp": True, "data.augment": "flip,elastic",
                                                    "optimizer.lr": "1e-4"})  # fmt: skip
    assert config.model.depth == 4 and config.run.amp is True
    assert config.data.augment == ["flip", "elastic"] and config.optimizer.lr == 1e-4


def test_lr_auto_switches_the_finder_on():
    config = apply_overrides(TrainConfig(), {"optimizer.lr": "auto"})
    assert config.optimizer.lr == "auto" and config.run.lr_find


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model]\ndept = 3\n", "unknown key 'model.dept'"),
        ("[modle]\ndepth = 3\n", "unknown table [modle]"),
        ("[model]\ndepth = 'three'\n", "model.depth must be an integer, got 'three'"),
        ("[run]\namp = 1\n", "run.amp must be true or false, got 1"),
        ("[loss]\nname = 'mse'\n", "loss.name must be one of ce, weighted-ce, dice, focal, combined, got 'mse'"),
        ("[data]\naugment = ['flip', 'mixup']\n", "data.augment: 'mixup' is not one of"),
        ("[model\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    assert message in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.dropout": "1.0"}, "model.dropout must lie in [0, 1)"),
        ({"run.epochs": "0"}, "run.epochs must be >= 1"),
        ({"optimizer.lr": "-1"}, "optimizer.lr must be > 0"),
        ({"optimizer.lr": "nan"}, "optimizer.lr must be a finite number or 'auto'"),
        ({"data.val_fraction": "1"}, "data.val_fraction must lie in (0, 1)"),
    ],
)
def test_a_value_out_of_range_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        validate(apply_overrides(TrainConfig(), overrides))


def test_a_missing_config_file_is_named():
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-preset")


def test_every_field_has_one_flag_and_the_help_shows_its_default():
    help_text = build_parser().format_help()
    fields = flag_fields()
    tables = [getattr(TrainConfig(), f.name) for f in dataclasses.fields(TrainConfig)]
    assert len(fields) == sum(len(dataclasses.fields(table)) for table in tables)
    for flag in ["data", "model", "depth", "base-channels", "padding", "batch-norm", "dropout", "loss", "optimizer",
                 "b1", "b2", "schedule", "epochs", "batch-size", "lr", "clip", "patience", "seed", "device", "amp",
                 "workers", "crop", "out", "init-from", "lr-find"]:  # fmt: skip
        assert flag in fields, flag
        assert f"--{flag}" in help_text
    assert "--resume" in help_text and "(default: 12)" in help_text and "(default: combined)" in help_text
