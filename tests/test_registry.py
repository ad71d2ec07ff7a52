"""The registry beyond the thesis's 22 (chapter 7): ConvMixer and Xception, a grid's own models, ImageNet ViTs at 352,
and trials that start from an earlier trial's weights."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raybench import catalog, grid, models, results, spec

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------ future architectures


def test_future_architectures_are_configurations_but_not_the_thesis_grid():
    assert catalog.FUTURE_NAMES == ("convmixer_768_32", "convmixer_256_8", "xception")
    assert not set(catalog.FUTURE_NAMES) & set(catalog.MODEL_NAMES)
    assert len(grid.load_grid(ROOT / "grids" / "thesis.py").trials) == 99
    for name in catalog.FUTURE_NAMES:
        config = catalog.configuration(name)
        assert not config.in_thesis and config.parameters is None and not config.pretrainable
        assert config.batch_size == config.chosen_batch_size and config.activation_mb > 0


def test_the_thesis_batch_sizes_come_from_its_tables_and_only_the_rest_from_the_records():
    for name, config in catalog.BUILT_IN.items():
        assert (config.chosen_batch_size is None) == config.in_thesis, name
        assert (config.chosen_pretrained_batch_size is None) == (
            name in catalog.PRETRAINABLE or not config.pretrainable
        )
    assert catalog.batch_size("resnet_18") == 64 and catalog.batch_size("xception") == 16
    with pytest.raises(ValueError, match="the thesis publishes its batch size"):
        catalog._check_batch_sizes(catalog.Configuration("resnet_18", "ResNet", "resnet18", 1.0, chosen_batch_size=8))
    with pytest.raises(ValueError, match="needs a batch size"):
        catalog._check_batch_sizes(catalog.Configuration("new_net", "New", "m:f", 1.0))


def test_xception_and_convmixer_have_their_papers_parameter_counts():
    with torch.device("meta"):
        xception = models.build_model("xception", num_classes=1000)
        convmixer = models.ConvMixer(dim=768, depth=32, kernel_size=7, patch_size=7, num_classes=1000)
    assert models.count_parameters(xception)[0] == 22_855_952  # Chollet (2017): 22.9 M (Keras: 22,855,952 trainable)
    assert models.count_parameters(convmixer)[0] == 21_110_248  # Trockman & Kolter (2022), ConvMixer-768/32: 21.1 M
    assert len(xception.middle) == 8 and len(models.build_model("convmixer_768_32", image_size=32).blocks) == 32


@pytest.mark.parametrize("name", catalog.FUTURE_NAMES)
@pytest.mark.parametrize("size", [32, 64])
def test_future_models_run_a_forward_and_backward_pass(name, size):
    torch.manual_seed(0)
    model = models.build_model(name, image_size=size)
    out = model(torch.randn(2, 3, size, size))
    out.sum().backward()
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    assert all(p.grad is not None for p in model.parameters())


def test_future_models_are_refused_pretrained_and_at_sizes_their_patch_does_not_divide():
    with pytest.raises(ValueError, match="'xception' has no pretrained variant"):
        models.build_model("xception", pretrained=True)
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        spec.Trial("convmixer_256_8", "tiny", config=spec.TrainConfig(image_size=72))


# ---------------------------------------------------------------------------------------- a grid's own models

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


# ------------------------------------------------------------------------------------ ViT ImageNet weights


def test_interpolated_position_embedding_keeps_the_class_token_and_the_coinciding_grid_points():
    torch.manual_seed(0)
    old = torch.randn(1, 1 + 14 * 14, 6)
    new = models.interpolate_position_embedding(old, 22)
    assert new.shape == (1, 1 + 22 * 22, 6) and torch.equal(new[:, 0], old[:, 0])
    old_grid, new_grid = old[0, 1:].reshape(14, 14, 6), new[0, 1:].reshape(22, 22, 6)
    # pixel centres aligned: new point i sits at (i + 0.5) x 14/22 - 0.5 = (7i - 2)/11, an old point for i = 5, 16
    for i, j in [(5, 3), (16, 10)]:
        for k, m in [(5, 3), (16, 10)]:
            torch.testing.assert_close(new_grid[i, k], old_grid[j, m], rtol=0, atol=1e-6)
    constant = torch.ones(1, 1 + 7 * 7, 3)  # the bicubic weights sum to 1: a constant embedding stays constant
    torch.testing.assert_close(models.interpolate_position_embedding(constant, 11), torch.ones(1, 1 + 11 * 11, 3))
    assert models.interpolate_position_embedding(old, 14) is old


@pytest.mark.parametrize("name, old_grid, new_grid", [("vit_b_32", 7, 11), ("vit_b_16", 14, 22)])
def test_vit_loads_imagenet_weights_trained_at_224_at_352_and_trains_its_head(tmp_path, name, old_grid, new_grid):
    torch.manual_seed(1)
    state = models.build_model(name, num_classes=1000, image_size=224).state_dict()
    torch.save(state, tmp_path / "imagenet.pth")
    model = models.build_model(name, pretrained=True, weights_file=tmp_path / "imagenet.pth", image_size=352)
    loaded = model.state_dict()
    embedding = loaded["encoder.pos_embedding"]
    assert embedding.shape == (1, 1 + new_grid * new_grid, 768)
    assert torch.equal(embedding[:, 0], state["encoder.pos_embedding"][:, 0])  # the class token's, kept
    old = state["encoder.pos_embedding"][0, 1:].reshape(old_grid, old_grid, -1)
    torch.testing.assert_close(embedding[0, 1:].reshape(new_grid, new_grid, -1)[5, 5], old[3, 3], rtol=0, atol=1e-6)
    for key, value in state.items():
        if key != "encoder.pos_embedding" and not key.startswith("heads."):
            assert torch.equal(loaded[key], value), key
    trainable = {key for key, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"heads.head.weight", "heads.head.bias"}
    assert models.count_parameters(model)[1] == 768 * 8 + 8 == models.parameter_counts(name, pretrained=True)[1]
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 352, 352)).shape == (1, 8)


def test_vits_are_pretrainable_but_the_thesis_grid_keeps_its_eleven_fine_tunes():
    assert set(catalog.IMAGENET_PRETRAINABLE) == {*catalog.PRETRAINABLE, "vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32"}
    assert catalog.batch_size("vit_l_16", pretrained=True) == 32
    g = grid.load_grid(ROOT / "grids" / "thesis.py")
    assert (
        sorted(t.model for t in g.trials if t.pretrained) == sorted(catalog.PRETRAINABLE)
        and len(catalog.PRETRAINABLE) == 11
    )


# ---------------------------------------------------------------------------------- starting from PBC weights


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


def test_saved_weights_travel_with_the_results_and_start_another_model(tmp_path):
    torch.manual_seed(0)
    trained = models.build_model("resnet_18", image_size=32)
    row = spec.Trial("resnet_18", "tiny", save_weights=True).columns() | {"status": "ok"}
    result = results.TrialResult(trial=row, epochs=[], predictions=[], weights=models.weight_arrays(trained))
    results.write_trial(tmp_path / "checkpoint", result)  # as the trainable's last checkpoint holds it
    again = results.read_trial(tmp_path / "checkpoint")
    results.write_trial(tmp_path / "run", again)  # as the driver's callback writes it
    path = results.weights_path(tmp_path / "run", "resnet_18-tiny-seed0")
    assert path.is_file() and again.weights.keys() == result.weights.keys()
    fresh = models.load_weights(models.build_model("resnet_18", image_size=32), path, name="t")
    for key, value in trained.state_dict().items():
        assert np.array_equal(fresh.state_dict()[key].numpy(), value.numpy()), key
    with pytest.raises(ValueError, match="holds weights of another model"):
        models.load_weights(models.build_model("resnet_34", image_size=32), path, name="t")
    with pytest.raises(FileNotFoundError, match="run the grid that saves them first"):
        models.load_weights(fresh, tmp_path / "nowhere.npz", name="t")
