"""The model registry: the thesis's parameter counts, forward passes, errors and the pretrained loading path."""

import pytest
import torch
import torchvision.models as tvm

from raybench import catalog, models

NAMES = catalog.MODEL_NAMES


# Counting needs the structure, not the values: the meta device skips allocating and initialising 1.4 G floats.
@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_at_352_equals_the_thesis(name):
    with torch.device("meta"):
        model = models.build_model(name, num_classes=8, image_size=352)
    expected = catalog.configuration(name).parameters  # tables 5.1-5.7
    assert models.count_parameters(model) == (expected, expected)


@pytest.mark.parametrize("name", catalog.PRETRAINABLE)
def test_pretrained_trainable_count_equals_table_5_15(name):
    # The same head rule build_model(pretrained=True) applies after loading the weights.
    with torch.device("meta"):
        model = models.freeze_backbone(models.build_model(name, num_classes=1000), num_classes=8)
    config = catalog.configuration(name)
    assert models.count_parameters(model) == (config.parameters, config.pretrained_trainable)


def test_parameter_counts_of_the_plan_match_a_built_model():
    assert models.parameter_counts("resnet_18") == (11_180_616, 11_180_616)
    assert models.parameter_counts("resnet_18", pretrained=True) == (11_180_616, 4_104)


@pytest.mark.parametrize("name", NAMES)  # the largest take about 4 s each on 2 CPU cores
def test_every_model_runs_a_forward_pass_at_a_small_size(name):
    torch.manual_seed(0)
    model = models.build_model(name, image_size=64).eval()
    with torch.no_grad():
        out = model(torch.randn(2, catalog.configuration(name).channels, 64, 64))
    assert out.shape == (2, 8)
    assert torch.isfinite(out).all()


def test_lenet5_takes_one_channel_and_its_first_fc_follows_the_image_size():
    assert catalog.configuration("lenet5").channels == 1
    assert {catalog.configuration(n).channels for n in NAMES if n != "lenet5"} == {3}
    for size, side in [(352, 85), (128, 29), (96, 21), (33, 5)]:
        model = models.build_model("lenet5", image_size=size, num_classes=3)
        assert model.classifier[1].in_features == 16 * side * side
        assert model(torch.randn(2, 1, size, size)).shape == (2, 3)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet18'.*resnet_18.*mlpmixer_l16"):
        models.build_model("resnet18")
    for check in (catalog.configuration, catalog.batch_size):
        with pytest.raises(ValueError, match="valid names"):
            check("alexnet")


def test_pretrained_is_refused_for_models_without_a_pretrained_variant():
    with pytest.raises(ValueError, match=r"'mlpmixer_s32' has no pretrained variant.*convnext_large.*vit_l_32"):
        models.build_model("mlpmixer_s32", pretrained=True)
    with pytest.raises(ValueError, match="lenet5"):
        catalog.batch_size("lenet5", pretrained=True)


@pytest.mark.parametrize(
    "name, size, patch",
    [("vit_b_16", 100, 16), ("vit_l_32", 352 + 16, 32), ("mlpmixer_s32", 64 + 16, 32), ("mlpmixer_b16", 72, 16)],
)
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
    state = models.build_model(name, num_classes=1000, image_size=224).state_dict()
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


@pytest.mark.parametrize(
    "name, head, new_layer",
    [
        ("resnet_18", "fc.", "fc."),
        ("mobilenet_small", "classifier.", "classifier.3."),
        ("convnext_tiny", "classifier.", "classifier.2."),
    ],
)
def test_pretrained_loads_a_weights_file_freezes_the_backbone_and_trains_the_head(tmp_path, name, head, new_layer):
    state = _imagenet_weights_file(name, tmp_path / "imagenet.pth")
    model = models.build_model(name, pretrained=True, weights_file=tmp_path / "imagenet.pth", image_size=64)
    _assert_loaded_and_frozen(model, state, head, new_layer)
    assert models.count_parameters(model)[1] == catalog.configuration(name).pretrained_trainable
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
