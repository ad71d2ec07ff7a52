"""Grid files as units: loading, validating and expanding, with no Ray and no subprocess."""

import re
from pathlib import Path

import pytest

from raybench import catalog, grid, spec

ROOT = Path(__file__).resolve().parents[1]


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
