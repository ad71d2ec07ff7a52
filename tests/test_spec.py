"""Training options as data (spec.py): the thesis's defaults, `--set` parsing, and every bad value refused by name."""

import json
import re

import pytest

from raybench import spec


def test_overrides_are_typed_and_checked():
    assert spec.parse_overrides(["max_epochs=5", "precision=bf16", "channels_last=true", "lr=0.01"]) == {
        "max_epochs": 5,
        "precision": "bf16",
        "channels_last": True,
        "lr": 0.01,
    }
    with pytest.raises(ValueError, match=r"unknown training option 'epochs'.*max_epochs"):
        spec.parse_overrides(["epochs=5"])
    with pytest.raises(ValueError, match="max_epochs expects a value of type int"):
        spec.parse_overrides(["max_epochs=five"])
    with pytest.raises(ValueError, match="precision must be"):
        spec.make_config({"precision": "fp16"})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr": float("nan")}, "lr must be a finite number above 0"),
        ({"lr": 0.0}, "lr must be a finite number above 0"),
        ({"es_patience": -1}, "es_patience must be a finite number of at least 0"),
        ({"es_min_delta": float("inf")}, "es_min_delta must be a finite number"),
        ({"device": "gpu"}, "device must be 'auto', 'cpu'"),
        ({"image_size": 400}, "image_size must be between 32 and 352"),
        ({"max_epochs": 2.5}, "max_epochs must be of type int"),
        ({"channels_last": 1}, "channels_last must be of type bool"),
    ],
)
def test_bad_options_are_refused_with_their_name(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        spec.make_config(options)


def test_every_option_defaults_to_the_thesis():
    config = spec.TrainConfig()
    assert {name: getattr(config, name) for name in spec.CHOICES} == {
        name: valid[0] for name, valid in spec.CHOICES.items()
    }
    assert (config.augment, config.plateau_factor, config.plateau_patience, config.plateau_threshold) == (
        "",
        0.1,
        10,
        1e-4,
    )
    assert (config.optimizer, config.lr_scaling, config.es_mode, config.tested) == (
        "sgd",
        "none",
        "absolute",
        "last_improvement",
    )
    assert (config.input, config.normalise, config.finetune) == ("grey3", "thesis", "head")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"optimizer": "adam"}, "optimizer must be one of sgd, momentum, nesterov, adamw, got 'adam'"),
        ({"lr_scaling": "log"}, "lr_scaling must be one of none, sqrt, linear, got 'log'"),
        ({"es_mode": "percent"}, "es_mode must be one of absolute, relative, got 'percent'"),
        ({"tested": "best"}, "tested must be one of last_improvement, lowest_val_loss, got 'best'"),
        (
            {"input": "rgb"},
            f"input must be one of {', '.join(spec.INPUTS)}, got 'rgb'",
        ),
        ({"normalise": "imagenet"}, "normalise must be one of thesis, measured, got 'imagenet'"),
        ({"finetune": "backbone"}, "finetune must be one of head, all, got 'backbone'"),
        (
            {"augment": "flip+crop"},
            "augment must be '' (none) or a '+'-joined set of flip, rot90, jitter, shift, noise",
        ),
        ({"augment": "flip+flip"}, "augment must be '' (none)"),
        ({"augment": "flip,rot90"}, "augment must be '' (none)"),
        ({"plateau_factor": 1.0}, "plateau_factor must be above 0 and below 1"),
        ({"plateau_factor": 0}, "plateau_factor must be above 0 and below 1"),
        ({"plateau_patience": -1}, "plateau_patience and plateau_threshold must be at least 0"),
        ({"plateau_threshold": float("nan")}, "plateau_patience and plateau_threshold must be at least 0"),
        (
            {"es_mode": "relative", "es_min_delta": 1.0},
            "es_min_delta must be a fraction below 1 with es_mode='relative'",
        ),
        ({"optimizer": 1}, "training option optimizer must be of type str"),
    ],
)
def test_a_bad_value_names_the_option_and_the_valid_values(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        spec.make_config(options)


def test_options_are_set_from_the_command_line_and_recorded_in_every_row():
    overrides = spec.parse_overrides(
        ["optimizer=nesterov", "plateau_patience=3", "augment=noise+flip", "es_min_delta=0.05", "input=colour"]
    )
    assert overrides == {
        "optimizer": "nesterov",
        "plateau_patience": 3,
        "augment": "noise+flip",
        "es_min_delta": 0.05,
        "input": "colour",
    }
    config = spec.make_config(overrides)
    assert config.augment == "flip+noise"  # one spelling per set: the order they are applied in
    recorded_options = json.loads(spec.Trial("lenet5", "tiny", config=config).columns()["options"])
    assert {k: recorded_options[k] for k in overrides} == {**overrides, "augment": "flip+noise"}
    for name in (*spec.CHOICES, "augment", "plateau_factor", "plateau_patience", "plateau_threshold"):
        assert name in recorded_options


def test_the_trial_says_how_many_channels_its_model_takes():
    def channels(model, value):
        return spec.Trial(model, "tiny", config=spec.TrainConfig(input=value)).channels

    # grey3, grey1, colour, then each with a mask channel ("_mask": one more) and multiplied by it ("_masked")
    assert [channels("lenet5", v) for v in spec.INPUTS] == [1, 1, 3, 2, 1, 2, 1, 4, 3]
    assert [channels("resnet_18", v) for v in spec.INPUTS] == [3, 1, 3, 4, 3, 2, 1, 4, 3]


def test_split_rule_and_dedupe_are_options_checked_by_name():
    assert spec.parse_overrides(["split_rule=exact", "dedupe=true"]) == {"split_rule": "exact", "dedupe": True}
    with pytest.raises(ValueError, match="split_rule must be one of thesis, exact, got 'floor'"):
        spec.make_config({"split_rule": "floor"})
    with pytest.raises(ValueError, match="dedupe must be of type bool"):
        spec.make_config({"dedupe": "yes"})
