"""Grid files as units: loading, validating and expanding, with no Ray and no subprocess."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from raybench import catalog, grid, models, spec


def sweep(**kw):
    return {"sweeps": [{"models": ["lenet5"], "tiers": ["tiny"], **kw}]}


def test_the_thesis_grid_is_99_trials_at_the_thesis_settings():
    g = grid.load_grid(ROOT / "grids" / "thesis.py")
    assert (g.name, len(g.trials)) == ("thesis", 99)
    assert sum(t.pretrained for t in g.trials) == 11 and {t.tier for t in g.trials if t.pretrained} == {"tiny"}
    assert {t.config for t in g.trials} == {spec.TrainConfig()}
    convnext = next(t for t in g.trials if t.model == "convnext_base" and not t.pretrained)
    assert convnext.batch_size == 8 and convnext.config.lr == catalog.LOOP_DEFAULTS["lr"]


def test_the_quickstart_grid_loads():
    g = grid.load_grid(ROOT / "grids" / "quickstart.py")
    assert [t.trial_id for t in g.trials] == [
        "lenet5-tiny-seed0",
        "resnet_18-tiny-seed0",
        "mobilenet_small-tiny-seed0",
        "mlpmixer_s32-tiny-seed0",
    ]
    assert g.trials[0].config.image_size == 64 and g.trials[0].batch_size == 16


def test_sweep_options_override_grid_options_and_seeds_multiply():
    g = grid.expand(
        {
            "options": {"max_epochs": 5, "lr": 0.05},
            "seeds": [0, 1],
            "sweeps": [{"models": ["lenet5", "resnet_18"], "tiers": ["tiny", "small"], "options": {"lr": 0.01}}],
        },
        source="g.py",
    )
    assert len(g.trials) == 8 and g.name == "g"
    assert {(t.config.max_epochs, t.config.lr) for t in g.trials} == {(5, 0.01)}


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"sweeps": [], "colour": 1}, "unknown key(s) ['colour']"),
        ({}, "has no 'sweeps'"),
        (sweep(models=["alexnet"]), "unknown model 'alexnet'"),
        (sweep(tiers=["huge"]), "unknown tier 'huge'"),
        (sweep(pretrained=True), "'lenet5' has no pretrained variant"),
        (sweep(pretrained="yes"), "pretrained must be True or False"),
        ({**sweep(), "options": {"epochs": 3}}, "unknown training option(s) ['epochs']"),
        ({**sweep(), "options": {"max_epochs": "3"}}, "max_epochs must be of type int"),
        ({**sweep(), "options": {"precision": "fp16"}}, "precision must be one of tf32, fp32, bf16"),
        ({**sweep(models=["vit_b_16"]), "options": {"image_size": 100}}, "not divisible by the patch size 16"),
        ({**sweep(), "seeds": [0.5]}, "seeds must be a non-empty list of int"),
        ({**sweep(), "tiers": {"tiny": 5}}, "tier 'tiny' needs a size of at least 10"),
        ({"sweeps": [{"models": ["lenet5"], "tiers": ["tiny"]}] * 2}, "more than once"),
    ],
)
def test_a_bad_grid_is_a_value_error_naming_the_problem(declared, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        grid.expand(declared, source="g.py")


def test_with_options_validates_as_expand_does():
    g = grid.expand(sweep(models=["vit_b_32"]) | {"options": {"image_size": 64}})
    assert g.with_options({"max_epochs": 2}).trials[0].config.max_epochs == 2
    with pytest.raises(ValueError, match="not divisible by the patch size 32"):
        g.with_options({"image_size": 80})


def test_select_keeps_matching_trials_and_names_a_pattern_that_matches_none():
    g = grid.expand({"sweeps": [{"models": ["lenet5", "resnet_18"], "tiers": ["tiny"]}]})
    assert [t.model for t in g.select("resnet").trials] == ["resnet_18"]
    with pytest.raises(ValueError, match=r"matches no trial.*lenet5-tiny-seed0"):
        g.select("vit")


def test_a_grid_file_without_grid_or_missing_is_refused(tmp_path):
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match="defines no GRID dict"):
        grid.load_grid(tmp_path / "empty.py")
    with pytest.raises(ValueError, match="does not exist"):
        grid.load_grid(tmp_path / "nowhere.py")


def test_a_grid_sweeps_the_options():
    from raybench import grid

    declared = {
        "name": "future",
        "options": {"image_size": 64, "optimizer": "momentum"},
        "sweeps": [
            {"models": ["lenet5"], "tiers": ["tiny"], "options": {"input": "colour", "normalise": "measured"}},
            {"models": ["resnet_18"], "tiers": ["tiny"], "pretrained": True, "options": {"finetune": "all"}},
        ],
    }
    trials = grid.expand(declared).trials
    assert [(t.config.optimizer, t.config.input, t.config.finetune, t.channels) for t in trials] == [
        ("momentum", "colour", "head", 3),
        ("momentum", "grey3", "all", 3),
    ]
    with pytest.raises(ValueError, match="tested must be one of"):
        grid.expand({**declared, "options": {"tested": "lowest"}})


MODULE = """
from torch import nn


def build(*, num_classes, image_size):
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def not_a_model(*, num_classes, image_size):
    return 42
"""


def own_grid(folder: Path, models_text: str, *, module: str = "tiny_nets", sweeps=None) -> Path:
    (folder / f"{module}.py").write_text(MODULE)
    sweeps = sweeps or [{"models": ["own_net", "resnet_18"], "tiers": ["tiny"]}]
    path = folder / "own.py"
    path.write_text(f"MODELS = {models_text}\nGRID = {{'options': {{'image_size': 32}}, 'sweeps': {sweeps!r}}}\n")
    return path


def test_a_grid_registers_its_own_model_and_the_trial_process_builds_it(tmp_path):
    spec_text = "{'own_net': {'builder': 'tiny_nets:build', 'batch_size': 8, 'architecture': 'Tiny', 'channels': 1}}"
    g = grid.load_grid(own_grid(tmp_path, spec_text))
    assert [t.trial_id for t in g.trials] == ["own_net-tiny-seed0", "resnet_18-tiny-seed0"]
    (own,) = g.models
    assert (own.architecture, own.channels, own.builder_path, g.trials[0].batch_size) == ("Tiny", 1, str(tmp_path), 8)
    assert own.activation_mb == grid.OWN_ACTIVATION_MB
    # a fresh trial process knows only raybench's models until the grid's are registered (trainable.tune_trial does)
    model = models.build_model("own_net", image_size=32)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 8)
    assert models.parameter_counts("own_net", image_size=32) == models.count_parameters(model)
    assert "own_net" in catalog.known_names()


def test_a_grid_with_its_own_model_loads_without_torch(tmp_path):
    path = own_grid(tmp_path, "{'own_net': {'builder': 'tiny_nets:build', 'batch_size': 8}}")
    code = "\n".join(
        [
            "import sys",
            "for name in ('torch', 'torchvision', 'mlp_mixer_pytorch', 'ray'):",
            "    sys.modules[name] = None",
            "from raybench import grid",
            f"print(len(grid.load_grid({str(path)!r}).trials))",
        ]
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr


@pytest.mark.parametrize(
    "models_text, message",
    [
        ("{'own_net': {'builder': 'tiny_nets:build'}}", "batch_size must be a whole number"),
        (
            "{'own_net': {'builder': 'tiny_nets:build', 'batch_size': 2**63}}",
            "batch_size must be a whole number from 1 to",
        ),
        ("{'own_net': {'builder': 'tiny_nets.build', 'batch_size': 8}}", "builder must be an import path"),
        ("{'own_net': {'builder': 'tiny_nets:build', 'batch_size': 8, 'colour': 1}}", "unknown key(s) ['colour']"),
        ("{'own_net': {'builder': 'tiny_nets:build', 'batch_size': 8, 'channels': 2}}", "channels must be 1"),
        ("{'own-net': {'builder': 'tiny_nets:build', 'batch_size': 8}}", "letters, digits and '_'"),
        ("{'resnet_18': {'builder': 'tiny_nets:build', 'batch_size': 8}}", "one of raybench's configurations"),
    ],
)
def test_a_bad_own_model_is_one_clear_line(tmp_path, models_text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        grid.load_grid(own_grid(tmp_path, models_text))


def test_models_and_grid_models_together_are_refused(tmp_path):
    path = tmp_path / "both.py"
    path.write_text("MODELS = {}\nGRID = {'models': {}, 'sweeps': []}\n")
    with pytest.raises(ValueError, match="declares MODELS and GRID\\['models'\\]: keep one"):
        grid.load_grid(path)


def test_a_builder_that_cannot_be_imported_or_returns_no_module_is_one_line_at_build_time(tmp_path):
    text = "{'lost_net': {'builder': 'nowhere_nets:build', 'batch_size': 8}, "
    text += "'odd_net': {'builder': 'tiny_nets:not_a_model', 'batch_size': 8}}"
    grid.load_grid(own_grid(tmp_path, text, sweeps=[{"models": ["lost_net", "odd_net"], "tiers": ["tiny"]}]))
    with pytest.raises(ValueError) as error:
        models.build_model("lost_net", image_size=32)
    message = str(error.value)
    assert "'lost_net': its builder 'nowhere_nets:build' cannot be imported" in message and "\n" not in message
    assert str(tmp_path) in message and "ModuleNotFoundError" in message
    with pytest.raises(ValueError, match="returned int, not a torch Module"):
        models.build_model("odd_net", image_size=32)


def test_a_sweep_starts_from_an_earlier_trials_weights_and_another_saves_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = grid.expand(
        {
            "seeds": [0, 1],
            "sweeps": [
                {"models": ["resnet_18"], "tiers": ["large"], "save_weights": True},
                {
                    "models": ["resnet_18"],
                    "tiers": ["tiny"],
                    "label": "pbc",
                    "init_from": "results/x/weights/{model}-large-seed{seed}.npz",
                },
            ],
        }
    )
    saving = [t for t in g.trials if t.save_weights]
    starting = {t.trial_id: t.init_from for t in g.trials if t.init_from}
    assert [t.trial_id for t in saving] == ["resnet_18-large-seed0", "resnet_18-large-seed1"]
    assert starting == {
        "resnet_18-tiny-pbc-seed0": str(tmp_path / "results/x/weights/resnet_18-large-seed0.npz"),
        "resnet_18-tiny-pbc-seed1": str(tmp_path / "results/x/weights/resnet_18-large-seed1.npz"),
    }
    assert g.trials[-1].columns()["variant"] == "pbc"


@pytest.mark.parametrize(
    "sweep, message",
    [
        (
            {"pretrained": True, "init_from": "w.npz", "models": ["resnet_18"]},
            "ImageNet (pretrained) or from init_from",
        ),
        ({"init_from": "w-{epoch}.npz"}, "uses ['epoch']"),
        ({"init_from": 3}, "init_from must be a path"),
        ({"label": "adam w"}, "label must be letters"),
        ({"save_weights": "yes"}, "save_weights must be True or False"),
    ],
)
def test_bad_starts_and_labels_are_refused(sweep, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        grid.expand({"sweeps": [{"models": ["lenet5"], "tiers": ["tiny"], **sweep}]})


def test_the_same_trial_twice_asks_for_a_label():
    with pytest.raises(ValueError, match="give sweeps that change options or the start different 'label's"):
        grid.expand(
            {"sweeps": [{"models": ["lenet5"], "tiers": ["tiny"], "options": {"lr": lr}} for lr in (0.1, 0.01)]}
        )


def test_the_future_grid_studies_the_small_tiers_with_three_seeds():
    g = grid.load_grid(ROOT / "grids" / "future.py")
    assert list(g.tiers) == ["large", "medium", "small", "n2500", "n1500", "n1000", "n600", "tiny"]
    assert {t.seed for t in g.trials} == {0, 1, 2} and len(g.trials) == 744
    variants = {t.variant for t in g.trials}
    assert {"momentum", "adamw", "batch16_sqrt", "es_relative", "augment", "grey1", "colour", "measured"} <= variants
    masks = {t.variant: t.config.input for t in g.trials if t.variant.startswith(("mask", "colour_mask"))}
    assert masks == {"mask": "grey3_mask", "masked": "grey3_masked", "colour_mask": "colour_mask"}
    assert {t.channels for t in g.trials if t.variant == "mask"} == {4}  # resnet_18 and the MobileNets: 3 + 1
    assert {t.model for t in g.trials} >= {"convmixer_768_32", "xception", "vit_b_16"}
    assert {t.model for t in g.trials if t.pretrained} >= {"vit_b_16", "vit_b_32"}
    finetune_all = {t.config.finetune for t in g.trials if t.variant == "finetune_all"}
    assert finetune_all == {"all"} and all(t.pretrained for t in g.trials if t.variant == "finetune_all")
    assert sorted(t.trial_id for t in g.trials if t.save_weights) == sorted(
        f"{m}-large-seed{s}" for m in ("resnet_18", "mobilenet_small") for s in range(3)
    )


def test_the_pbc_grid_starts_from_the_future_grids_saved_weights():
    g = grid.load_grid(ROOT / "grids" / "future_pbc.py")
    starts = [t for t in g.trials if t.init_from]
    assert len(starts) == len(g.trials) / 2 == 18
    assert all(t.init_from.endswith(f"results/future/weights/{t.model}-large-seed{t.seed}.npz") for t in starts)


def test_the_quick_grid_compares_each_option_with_the_baseline_on_cpu_sizes():
    g = grid.load_grid(ROOT / "grids" / "future_quick.py")
    assert {t.seed for t in g.trials} == {0, 1, 2} and {t.tier for t in g.trials} == {"tiny"}
    assert {t.config.image_size for t in g.trials} == {64} and not any(t.pretrained for t in g.trials)
    by_variant = {}
    for t in g.trials:
        by_variant.setdefault(t.variant, set()).add(t.model)
    assert by_variant.pop("") == {"resnet_18", "mobilenet_small", "convmixer_256_8"}
    assert len(by_variant) >= 8 and all(m == {"resnet_18", "mobilenet_small"} for m in by_variant.values())
