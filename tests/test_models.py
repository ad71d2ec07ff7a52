"""The model registry: the thesis's parameter counts, forward passes, errors and the pretrained loading path."""

import math

import numpy as np
import pytest
import torch
import torchvision
import torchvision.models as tvm

from raybench import catalog, models, results, spec

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


@pytest.mark.parametrize("name", catalog.MODEL_NAMES)
def test_grey1_changes_only_the_first_layers_input_channels(name):
    with torch.device("meta"):
        three = dict(models.build_model(name, image_size=224).named_parameters())
        one = dict(models.build_model(name, image_size=224, channels=1).named_parameters())
    assert list(three) == list(one)
    changed = [key for key in three if three[key].shape != one[key].shape]
    native = catalog.configuration(name).channels
    if native == 1:  # lenet5 takes 1 already
        assert changed == []
        return
    assert len(changed) == 1 and changed[0].endswith("weight")
    old, new = three[changed[0]].shape, one[changed[0]].shape
    assert new[1] * 3 == old[1] and (new[0], *new[2:]) == (old[0], *old[2:])  # a third of the inputs, nothing else


@pytest.mark.parametrize(
    "name", ["lenet5", "resnet_18", "mobilenet_small", "convnext_tiny", "vit_b_32", "mlpmixer_s32"]
)
def test_grey1_and_colour_models_run_on_their_channels(name):
    for channels in (1, 3):
        model = models.build_model(name, image_size=64, channels=channels).eval()
        with torch.no_grad():
            assert model(torch.randn(2, channels, 64, 64)).shape == (2, 8)


def test_a_new_first_layer_is_initialised_as_its_architecture_does():
    torch.manual_seed(0)
    conv = models.build_model("resnet_18", channels=1).conv1
    assert conv.weight.shape == (64, 1, 7, 7)
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / (64 * 49)), rel=0.05)  # kaiming, fan_out
    vit = models.build_model("vit_b_32", image_size=64, channels=1).conv_proj
    assert float(vit.weight.detach().std()) == pytest.approx(
        math.sqrt(1 / (32 * 32)), rel=0.1
    )  # truncated normal, fan_in


def test_pretrained_grey1_sums_the_imagenet_first_layer_so_grey_images_give_the_same_outputs(tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    three = models.build_model("resnet_18", pretrained=True, weights_file=weights, image_size=64).eval()
    one = models.build_model("resnet_18", pretrained=True, weights_file=weights, image_size=64, channels=1).eval()
    one.fc.load_state_dict(three.fc.state_dict())  # the same new head
    imagenet = torch.load(weights)["conv1.weight"]
    assert torch.equal(one.conv1.weight, imagenet.sum(1, keepdim=True)) and not one.conv1.weight.requires_grad
    grey = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(one(grey), three(grey.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
    assert models.count_parameters(one)[1] == models.count_parameters(three)[1] == 4104


def test_finetune_all_leaves_every_parameter_trainable():
    with torch.device("meta"):
        for name in ("resnet_18", "mobilenet_small", "convnext_tiny"):
            head = models.freeze_backbone(models.build_model(name, num_classes=1000), num_classes=8)
            every = models.freeze_backbone(models.build_model(name, num_classes=1000), num_classes=8, finetune="all")
            total, trainable = models.count_parameters(every)
            assert trainable == total == models.count_parameters(head)[0] > models.count_parameters(head)[1]
    with pytest.raises(ValueError, match="finetune must be one of head, all"):
        models.freeze_backbone(torchvision.models.resnet18(), num_classes=8, finetune="none")


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
