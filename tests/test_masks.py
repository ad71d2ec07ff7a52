"""The mask of the cell at the centre (data.masks, its cache, `python -m raybench.data masks`) and the inputs that use
it (input="..._mask" and "..._masked", §7.2), on synthetic images and the embedded ones."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SIZE, make_dataset
from PIL import Image

from raybench import batches, data, models, resources, spec
from raybench import trial as lifecycle
from raybench.data import cache, mask_check
from raybench.data.__main__ import main

PALE, STAIN, RED_CELL = (245, 228, 205), (110, 60, 150), (215, 160, 160)  # colours sampled from PBC images


def disc(shape, centre, radius):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return np.hypot(yy - centre[0], xx - centre[1]) <= radius


def synthetic(size=352, radius=50, centre=None, red_cells=()):
    """A pale image with a stain-coloured disc (at the centre unless said) and pink red-cell discs, a little noise."""
    rgb = np.empty((size, size, 3), dtype=np.float64)
    rgb[:] = PALE
    for where in red_cells:
        rgb[disc(rgb.shape, where, 35)] = RED_CELL
    cell = disc(rgb.shape, centre or (size // 2, size // 2), radius)
    rgb[cell] = STAIN
    rgb += np.random.default_rng(0).normal(0, 3, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), cell


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize(
    "centre, red_cells",
    [(None, ()), (None, [(60, 60), (290, 80), (70, 290)]), ((200, 150), [(50, 300)])],
    ids=["alone", "among-red-cells", "off-centre"],
)
def test_the_mask_of_a_stained_disc_on_a_pale_background_is_that_disc(centre, red_cells):
    rgb, cell = synthetic(centre=centre, red_cells=red_cells)
    mask = data.cell_mask(rgb)
    assert mask.dtype == bool and mask.shape == cell.shape
    assert iou(mask, cell) > 0.95, iou(mask, cell)  # the red cells are not the cell
    np.testing.assert_array_equal(data.cell_mask(rgb), mask)  # deterministic


def test_an_image_without_stain_has_an_empty_mask_and_the_cache_stores_uint8_0_1():
    blank = np.full((352, 352, 3), PALE, dtype=np.uint8)
    assert not data.cell_mask(blank).any()
    rgb, cell = synthetic()
    small = data.masks.preprocess_mask(Image.fromarray(rgb), 88)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1} and small.shape == (88, 88)
    assert iou(small.astype(bool), cell[2::4, 2::4]) > 0.9
    with pytest.raises(ValueError, match=r"expects an RGB image shaped \(H, W, 3\)"):
        data.cell_mask(np.zeros((8, 8)))


@pytest.fixture
def mask_count(monkeypatch):
    calls = []
    real = cache.preprocess_mask

    def counting(crop, image_size=352):
        calls.append(image_size)
        return real(crop, image_size)

    monkeypatch.setattr(cache, "preprocess_mask", counting)
    return calls


def test_masks_are_computed_once_per_image_cached_beside_the_grey_cache_and_deterministic(
    embedded, tmp_path, mask_count
):
    grey, y = data.load_split(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path)
    masks, y2 = data.load_masks(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path)
    assert len(mask_count) == 76 and masks.shape == grey.shape == (76, SIZE, SIZE) and (y == y2).all()
    assert masks.dtype == np.uint8 and set(np.unique(masks)) == {0, 1}
    files = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert len(files) == 2 and files[1].startswith("pbc-val-32px-mask-76-")  # its own file, named like the grey one
    again, _ = data.load_masks(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path)
    assert len(mask_count) == 76  # the second build read the cache
    np.testing.assert_array_equal(again, masks)
    elsewhere, _ = data.load_masks(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path / "other")
    assert len(mask_count) == 2 * 76  # computed afresh: the same masks
    np.testing.assert_array_equal(elsewhere, masks)
    # the masks are cells, not the frame: each image's mask covers its centre or lies near it, and is small
    assert (masks.mean((1, 2)) < 0.5).all() and masks[:, SIZE // 2, SIZE // 2].mean() > 0.8


def test_the_multiply_mode_zeroes_the_background_and_keeps_the_cell(embedded, tmp_path):
    config = spec.TrainConfig(image_size=SIZE, device="cpu", input="grey3_masked", val_order="class")
    trial = spec.Trial("resnet_18", "tiny", config=config)
    split = lifecycle.TrialData(embedded, tmp_path).split(trial, "val", device=torch.device("cpu"))
    grey, _ = data.load_split(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path)
    masks, _ = data.load_masks(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path)
    x = split.x.numpy()
    assert trial.channels == 3 and split.mask is None and x.shape == grey.shape
    assert (x[masks == 0] == 0).all() and (x[masks == 1] == grey[masks == 1]).all()
    colour = spec.Trial("resnet_18", "tiny", config=dataclasses.replace(config, input="colour_masked"))
    x = lifecycle.TrialData(embedded, tmp_path).split(colour, "val", device=torch.device("cpu")).x.numpy()
    assert x.shape == (76, 3, SIZE, SIZE) and (x.transpose(1, 0, 2, 3)[:, masks == 0] == 0).all()


def test_a_mask_channel_is_the_last_channel_and_moves_with_the_image_under_augmentation():
    x = torch.randint(0, 256, (16, SIZE, SIZE), dtype=torch.uint8)
    mask = torch.zeros(16, SIZE, SIZE, dtype=torch.uint8)
    mask[:, 4:12, 20:30] = 1  # off-centre, so that every flip, turn and shift shows
    plain = batches.to_input(x, 4, mask=mask)
    assert plain.shape == (16, 4, SIZE, SIZE) and torch.equal(plain[:, :3], batches.to_input(x, 3))
    torch.testing.assert_close(plain[:, 3], (mask.float() - 0.5) / 0.225)
    ops = ["flip", "rot90", "jitter", "shift", "noise"]
    augment = batches.Augmentation(ops, generator=torch.Generator().manual_seed(0), fill=(0.5,), mask_channel=True)
    out = batches.to_input(x, 4, mask=mask, augment=augment)
    moved = out[:, 3] * 0.225 + 0.5
    torch.testing.assert_close(moved, moved.round())  # still 0 or 1: not jittered, no noise, shifted in with 0
    assert 0 < moved.sum() <= mask.sum() and not torch.equal(moved, mask.float())
    # the image moved as its mask did: where the mask is, the image of a constant-inside input is that constant
    inside = torch.where(mask.bool(), torch.tensor(255, dtype=torch.uint8), torch.tensor(0, dtype=torch.uint8))
    augment = batches.Augmentation(["flip", "rot90", "shift"], generator=torch.Generator().manual_seed(1), fill=(0.0,))
    augment.mask_channel = True
    out = batches.to_input(inside, 2, mask=mask, augment=augment)
    torch.testing.assert_close(out[:, 0] * 0.225 + 0.5, out[:, 1] * 0.225 + 0.5)


@pytest.mark.parametrize("model, native", [("resnet_18", 3), ("lenet5", 1), ("mlpmixer_s32", 3)])
def test_mask_inputs_count_their_channel_in_the_model_the_parameters_and_the_memory(model, native):
    def trial(value):
        return spec.Trial(model, "tiny", config=spec.TrainConfig(image_size=64, input=value))

    assert trial("grey3_mask").channels == native + 1  # spec's rule, tested there
    built = models.build_model(model, image_size=64, channels=native + 1)
    counted = models.parameter_counts(model, image_size=64, channels=native + 1)
    assert models.count_parameters(built) == counted > models.parameter_counts(model, image_size=64)
    assert resources.estimate_gpu_memory_gb(trial("grey3_mask")) > resources.estimate_gpu_memory_gb(trial("grey3"))
    assert resources.estimate_gpu_memory_gb(trial("grey3_masked")) == resources.estimate_gpu_memory_gb(trial("grey3"))
    with torch.no_grad():
        assert built.eval()(torch.randn(2, native + 1, 64, 64)).shape == (2, 8)


def test_a_pretrained_model_starts_its_mask_channel_at_zero(tmp_path):
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    three = models.build_model("resnet_18", pretrained=True, weights_file=weights, image_size=64).eval()
    four = models.build_model(
        "resnet_18", pretrained=True, weights_file=weights, image_size=64, channels=4, mask_channel=True
    ).eval()
    four.fc.load_state_dict(three.fc.state_dict())
    assert four.conv1.weight.shape == (64, 4, 7, 7) and (four.conv1.weight[:, 3] == 0).all()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(four(torch.cat([x, torch.randn(2, 1, 64, 64)], 1)), three(x))


def test_bad_input_values_name_every_valid_one():
    with pytest.raises(ValueError, match="input must be one of grey3, grey1, colour, grey3_mask, grey3_masked"):
        spec.TrainConfig(input="grey3_mask_channel")
    assert spec.input_parts("colour_masked") == ("colour", "multiply") and spec.input_parts("grey1") == ("grey1", "")


def test_a_4_channel_model_trains_an_epoch_through_the_trial_path(embedded, tmp_path):
    options = {"input": "grey3_mask", "augment": "flip+jitter", "normalise": "measured", "max_epochs": 1}
    config = spec.TrainConfig(image_size=SIZE, device="cpu", **options)
    trial = spec.Trial("resnet_18", "tiny", config=config)
    result = lifecycle.train_trial(trial, lifecycle.TrialData(embedded, tmp_path))
    row = result.trial
    assert row["status"] == "ok" and row["epochs"] == 1 and len(result.predictions) == 115
    assert np.isfinite(result.epochs[0]["train_loss"]) and np.isfinite(result.epochs[0]["val_loss"])
    assert row["parameters"] == models.parameter_counts("resnet_18", image_size=SIZE, channels=4)[0]
    assert row["parameters"] == 11_180_616 + 64 * 7 * 7  # resnet_18's conv1 takes one channel more
    assert row["estimated_gpu_memory_gb"] == resources.estimate_gpu_memory_gb(trial)


def test_the_masks_command_draws_2_images_a_class_and_measures_every_image(tmp_path, capsys):
    root = make_dataset(tmp_path, per_class=3)
    (root / "platelet" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "figures" / "masks.png"
    assert main(["masks", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    with Image.open(out) as figure:
        assert figure.size[0] > 600 and figure.size[1] > 600
    assert "skipped platelet/broken.jpg" in printed
    (overall,) = [line for line in printed.splitlines() if line.startswith("all ")]
    assert overall.split()[1] == "24"  # every readable image measured
    table = mask_check.measure(root)
    assert len(table) == 25 and table.error.notna().sum() == 1
    assert list(mask_check.shares(table).class_name) == [*data.CLASSES, "all"]


def test_the_masks_command_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert main(["masks", str(tmp_path / "missing"), "--out", str(tmp_path / "m.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m raybench.data: error: ") and len(err.splitlines()) == 1
    root = make_dataset(tmp_path, per_class=1)
    assert main(["masks", str(root), "--out", str(tmp_path / "m.pdf")]) == 2
    assert "--out must be a .png file" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RAYBENCH_SHARED_DATA"), reason="needs RAYBENCH_SHARED_DATA (a PBC folder)")
def test_on_real_pbc_images_most_masks_are_the_cell_at_the_centre():
    root = data.find_root(Path(os.environ["RAYBENCH_SHARED_DATA"]))
    sample = mask_check.measure(root, per_class=20)  # 160 images: enough to see a broken segmentation
    assert len(sample) == 160 and sample.is_cell.mean() > 0.9
