"""The model registry: the thesis's parameter counts, forward passes, errors and the pretrained loading path."""

import pytest
import torch
import torchvision.models as tvm

from raybench import models

# Thesis (results.csv, tables 5.1-5.7): name -> (parameters at 352x352 and 8 classes, batch size).
THESIS = {
    "lenet5": (13_885_580, 64),
    "resnet_18": (11_180_616, 64),
    "resnet_34": (21_288_776, 64),
    "resnet_50": (23_524_424, 32),
    "resnet_101": (42_516_552, 16),
    "resnet_152": (58_160_200, 16),
    "mobilenet_small": (1_526_056, 64),
    "mobilenet_large": (4_212_280, 64),
    "convnext_tiny": (27_826_280, 32),
    "convnext_small": (49_460_840, 16),
    "convnext_base": (87_574_664, 8),
    "convnext_large": (196_242_632, 8),
    "vit_b_16": (86_025_992, 16),
    "vit_b_32": (87_516_680, 4),
    "vit_l_16": (303_604_744, 4),
    "vit_l_32": (305_592_328, 4),
    "mlpmixer_s32": (4_640_048, 64),
    "mlpmixer_s16": (17_530_280, 64),
    "mlpmixer_b32": (10_909_124, 64),
    "mlpmixer_b16": (30_244_472, 32),
    "mlpmixer_l32": (31_283_584, 32),
    "mlpmixer_l16": (71_133_928, 8),
}
# Thesis table 5.15: name -> (trainable parameters of the pretrained model, batch size).
THESIS_PRETRAINED = {
    "resnet_18": (4_104, 64),
    "resnet_34": (4_104, 64),
    "resnet_50": (16_392, 64),
    "resnet_101": (16_392, 64),
    "resnet_152": (16_392, 64),
    "mobilenet_small": (599_048, 64),
    "mobilenet_large": (1_240_328, 64),
    "convnext_tiny": (7_688, 32),
    "convnext_small": (7_688, 32),
    "convnext_base": (10_248, 32),
    "convnext_large": (15_368, 32),
}


def test_registry_names_are_the_thesis_names_in_order():
    assert models.MODEL_NAMES == tuple(THESIS)
    assert models.PRETRAINABLE == tuple(THESIS_PRETRAINED)


# Counting needs the structure, not the values: the meta device skips allocating and initialising 1.4 G floats.
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_parameter_count_at_352_equals_the_thesis(name):
    with torch.device("meta"):
        model = models.build_model(name, num_classes=8, image_size=352)
    assert models.count_parameters(model) == (THESIS[name][0], THESIS[name][0])


@pytest.mark.parametrize("name", models.PRETRAINABLE)
def test_pretrained_trainable_count_equals_table_5_15(name):
    # The same head rule build_model(pretrained=True) applies after loading the weights.
    with torch.device("meta"):
        model = models.freeze_backbone(models.build_model(name, num_classes=1000), num_classes=8)
    assert models.count_parameters(model) == (THESIS[name][0], THESIS_PRETRAINED[name][0])


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_thesis_batch_size(name):
    assert models.thesis_batch_size(name) == THESIS[name][1]
    if name in THESIS_PRETRAINED:
        assert models.thesis_batch_size(name, pretrained=True) == THESIS_PRETRAINED[name][1]


@pytest.mark.parametrize("name", models.MODEL_NAMES)  # the largest take about 4 s each on 2 CPU cores
def test_every_model_runs_a_forward_pass_at_a_small_size(name):
    torch.manual_seed(0)
    model = models.build_model(name, image_size=64).eval()
    with torch.no_grad():
        out = model(torch.randn(2, models.input_channels(name), 64, 64))
    assert out.shape == (2, 8)
    assert torch.isfinite(out).all()


def test_lenet5_takes_one_channel_and_its_first_fc_follows_the_image_size():
    assert models.input_channels("lenet5") == 1
    assert {models.input_channels(n) for n in models.MODEL_NAMES if n != "lenet5"} == {3}
    for size, side in [(352, 85), (128, 29), (96, 21), (33, 5)]:
        model = models.build_model("lenet5", image_size=size, num_classes=3)
        assert model.classifier[1].in_features == 16 * side * side
        assert model(torch.randn(2, 1, size, size)).shape == (2, 3)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet18'.*resnet_18.*mlpmixer_l16"):
        models.build_model("resnet18")
    for check in (models.input_channels, models.thesis_batch_size, models.check_model_name):
        with pytest.raises(ValueError, match="valid names"):
            check("alexnet")


def test_pretrained_is_refused_for_models_without_a_pretrained_variant():
    with pytest.raises(ValueError, match="'vit_b_16' has no pretrained variant.*convnext_large"):
        models.build_model("vit_b_16", pretrained=True)
    with pytest.raises(ValueError, match="lenet5"):
        models.thesis_batch_size("lenet5", pretrained=True)


@pytest.mark.parametrize("name, size, patch", [("vit_b_16", 100, 16), ("vit_l_32", 352 + 16, 32),
                                               ("mlpmixer_s32", 64 + 16, 32), ("mlpmixer_b16", 72, 16)])
def test_patch_models_need_a_size_their_patch_divides(name, size, patch):
    with pytest.raises(ValueError, match=rf"{name}: image_size {size} is not divisible by the patch size {patch}"):
        models.build_model(name, image_size=size)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="image_size must be an integer of at least 32, got 16"):
        models.build_model("resnet_18", image_size=16)
    with pytest.raises(ValueError, match="num_classes"):
        models.build_model("resnet_18", num_classes=0)
    with pytest.raises(ValueError, match="only used with pretrained=True"):
        models.build_model("resnet_18", weights_file="w.pth")


def _imagenet_weights_file(name, path):
    """Save a randomly initialised torchvision ImageNet model's state_dict, as the real weights file would be."""
    torch.manual_seed(1)
    state = models.REGISTRY[name](num_classes=1000, image_size=224).state_dict()
    torch.save(state, path)
    return state


def _assert_loaded_and_frozen(model, state, head_prefix, new_layer):
    loaded = model.state_dict()
    for key, value in state.items():
        if key.startswith(new_layer):
            continue  # the new output layer
        assert torch.equal(loaded[key], value), key
    for key, param in model.named_parameters():
        assert param.requires_grad == key.startswith(head_prefix), key


@pytest.mark.parametrize("name, head, new_layer", [
    ("resnet_18", "fc.", "fc."),
    ("mobilenet_small", "classifier.", "classifier.3."),
    ("convnext_tiny", "classifier.", "classifier.2."),
])
def test_pretrained_loads_a_weights_file_freezes_the_backbone_and_trains_the_head(tmp_path, name, head, new_layer):
    state = _imagenet_weights_file(name, tmp_path / "imagenet.pth")
    model = models.build_model(name, pretrained=True, weights_file=tmp_path / "imagenet.pth", image_size=64)
    _assert_loaded_and_frozen(model, state, head, new_layer)
    assert models.count_parameters(model)[1] == THESIS_PRETRAINED[name][0]
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 8)


def test_pretrained_reads_torchvision_cache_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = tvm.ResNet18_Weights.IMAGENET1K_V1.url
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = _imagenet_weights_file("resnet_18", checkpoints / url.rsplit("/", 1)[1])
    model = models.build_model("resnet_18", pretrained=True, allow_download=False)
    _assert_loaded_and_frozen(model, state, "fc.", "fc.")


def test_missing_weights_say_which_file_is_needed_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1.url
    with pytest.raises(FileNotFoundError) as error:
        models.build_model("convnext_tiny", pretrained=True, allow_download=False)
    message = str(error.value)
    assert url in message
    assert str(tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]) in message
    assert "allow_download is False" in message and "weights_file" in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.build_model("resnet_18", pretrained=True, weights_file=tmp_path / "nowhere.pth")


def test_a_weights_file_of_another_model_is_refused(tmp_path):
    _imagenet_weights_file("resnet_18", tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match="does not hold torchvision's ImageNet weights for resnet_34"):
        models.build_model("resnet_34", pretrained=True, weights_file=tmp_path / "resnet18.pth")
