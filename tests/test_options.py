"""Chapter 7's future work as training options: each is off by default (the thesis's numbers), validated, recorded,
and changes what it says and nothing else."""

import hashlib
import json
import math
import re

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from raybench import batches, catalog, data, loop, models, spec
from raybench import trial as lifecycle
from raybench.data import cache

SIZE = 32


def make_trainer(*, seed=0, model="lenet5", channels=None, batch_size=8, base_batch_size=None, **options):
    """A Trainer on 32 random 32x32 training images and 16 validation ones (grey, or colour with 3 channels)."""
    config = spec.TrainConfig(
        image_size=SIZE, device="cpu", **{"es_start": 1, "es_patience": 3, "es_min_delta": 0.0, **options}
    )
    channels = channels or catalog.configuration(model).channels
    rng = np.random.default_rng(1)
    shape = (48, 3, SIZE, SIZE) if config.input == "colour" else (48, SIZE, SIZE)
    x, y = rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 8, 48)
    loop.seed_everything(seed)
    net = models.build_model(model, image_size=SIZE, channels=channels)

    def split(a, b):
        return batches.DeviceSplit(a, b, channels=channels, device=torch.device("cpu"))

    return loop.Trainer(
        net,
        split(x[:32], y[:32]),
        split(x[32:], y[32:]),
        config,
        seed=seed,
        batch_size=batch_size,
        base_batch_size=base_batch_size,
    )


def recorded(trainer):
    """Make `trainer` record the inputs and labels of its training and validation steps: {"train": [], "val": []}."""
    seen = {"train": [], "val": []}
    train_step, eval_step = trainer.train_step, trainer.eval_step

    def train(model, optimizer, x, y, precision):
        seen["train"].append((x.clone(), y.clone()))
        return train_step(model, optimizer, x, y, precision)

    def evaluate(model, x, y, precision):
        seen["val"].append((x.clone(), y.clone()))
        return eval_step(model, x, y, precision)

    trainer.train_step, trainer.eval_step = train, evaluate
    return seen


def losses(trainer, key="train_loss"):
    return [row[key] for row in trainer.history]


# ------------------------------------------------------------------------------------------ options as data


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
        ({"input": "rgb"}, "input must be one of grey3, grey1, colour, got 'rgb'"),
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


# ------------------------------------------------------------------------------------------ the defaults


def test_a_trial_with_every_option_at_its_default_gives_the_numbers_it_gave_before_them(tmp_path, embedded):
    # recorded with the code before these options existed (same machine: equal to the last bit; elsewhere fp32
    # summation order may move the last digits)
    config = spec.TrainConfig(image_size=SIZE, max_epochs=4, es_start=1, es_patience=2, val_order="class", device="cpu")
    result = lifecycle.train_trial(spec.Trial("lenet5", "tiny", config=config), lifecycle.TrialData(embedded, tmp_path))
    before = [
        (2.013232707977295, 2.009427309036255, 0.1, False),
        (1.9515992403030396, 1.959505319595337, 0.1, True),
        (1.8349708318710327, 1.860044240951538, 0.1, False),
        (1.8095588684082031, 1.8425507545471191, 0.1, True),
    ]
    for row, (train_loss, val_loss, lr, improved) in zip(result.epochs, before, strict=True):
        assert row["train_loss"] == pytest.approx(train_loss, rel=1e-5)
        assert row["val_loss"] == pytest.approx(val_loss, rel=1e-5)
        assert (row["lr"], row["improved"]) == (lr, improved)
    assert (result.trial["tested_epoch"], result.trial["test_accuracy"]) == (4, pytest.approx(36 / 115))


# ------------------------------------------------------------------------------------------ the optimiser


def test_momentum_changes_the_optimiser_and_the_losses_not_the_data_order():
    plain, momentum = make_trainer(max_epochs=2), make_trainer(max_epochs=2, optimizer="momentum")
    seen = [recorded(t) for t in (plain, momentum)]
    for trainer in (plain, momentum):
        loop.fit(trainer)
    group = momentum.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["dampening"], group["weight_decay"]) == (0.9, False, 0, 0)
    assert plain.optimizer.param_groups[0]["momentum"] == 0
    assert losses(plain) != losses(momentum)
    for (x, y), (x2, y2) in zip(seen[0]["train"], seen[1]["train"], strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)  # the same images in the same order


def test_nesterov_and_adamw():
    nesterov = make_trainer(optimizer="nesterov").optimizer
    assert isinstance(nesterov, torch.optim.SGD) and nesterov.param_groups[0]["nesterov"]
    assert nesterov.param_groups[0]["momentum"] == 0.9
    adamw = make_trainer(optimizer="adamw", lr=1e-3, max_epochs=2)
    group = adamw.optimizer.param_groups[0]
    assert isinstance(adamw.optimizer, torch.optim.AdamW) and (group["lr"], group["weight_decay"]) == (1e-3, 0.01)
    loop.fit(adamw)
    assert all(math.isfinite(v) for v in losses(adamw))


def test_the_plateau_schedule_takes_its_options():
    trainer = make_trainer(max_epochs=4, lr=1e-6, plateau_factor=0.5, plateau_patience=0, plateau_threshold=0.5)
    sched = trainer.scheduler
    assert (sched.factor, sched.patience, sched.threshold) == (0.5, 0, 0.5)
    loop.fit(trainer)  # no epoch halves the first's loss (threshold 0.5): each one after it lowers the next's rate
    assert [row["lr"] for row in trainer.history] == [1e-6, 1e-6, 5e-7, 2.5e-7]
    thesis = make_trainer(max_epochs=4, lr=1e-6)
    loop.fit(thesis)
    assert [row["lr"] for row in thesis.history] == [1e-6] * 4


# ------------------------------------------------------------------------------------------ rate and batch


@pytest.mark.parametrize("scaling, expected", [("none", 0.1), ("sqrt", 0.1 / math.sqrt(2)), ("linear", 0.05)])
def test_a_halved_batch_scales_the_rate(scaling, expected):
    built = []

    def build(batch_size):
        built.append(batch_size)
        return make_trainer(max_epochs=2, batch_size=batch_size, base_batch_size=16, lr_scaling=scaling)

    def on_epoch_end(row, trainer, start):
        if trainer.batch_size > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer = lifecycle.fit_halving_on_oom(build, batch_size=16, on_epoch_end=on_epoch_end)
    assert built == [16, 8]
    assert [row["lr"] for row in trainer.history] == pytest.approx([expected] * 2, rel=1e-12)


def test_a_batch_as_big_as_the_thesis_keeps_the_rate():
    assert loop.scaled_lr(0.1, batch_size=64, base_batch_size=64, scaling="linear") == 0.1
    assert loop.scaled_lr(0.1, batch_size=128, base_batch_size=64, scaling="sqrt") == 0.1
    assert loop.scaled_lr(0.1, batch_size=16, base_batch_size=64, scaling="sqrt") == pytest.approx(0.05)
    assert make_trainer(lr_scaling="linear", batch_size=8).optimizer.param_groups[0]["lr"] == 0.1  # no base given


# ------------------------------------------------------------------------------------------ early stopping


def scripted(losses, **kwargs):
    """(epochs run, 1-based tested epoch, the epochs flagged to checkpoint) of a scripted loss sequence."""
    stopper, flagged = loop.EarlyStopping(**kwargs), []
    for epoch, loss in enumerate(losses, start=1):
        if stopper.step(loss):
            flagged.append(epoch)
        if stopper.should_stop:
            break
    return epoch, stopper.tested_epoch + 1, flagged


def test_relative_early_stopping_stops_where_its_rule_says():
    losses = [1.0, 0.96, 0.94, 0.90, 0.89, 0.88, 0.87, 0.86]
    # relative 0.05: improvements must go below 0.95, then below 0.94 x 0.95 = 0.893; 0.88 and 0.87 are not below
    # 0.89 x 0.95 = 0.8455: two epochs without improvement stop at epoch 7
    assert scripted(losses, start=0, patience=2, min_delta=0.05, mode="relative") == (7, 5, [1, 3, 5])
    # absolute 0.05: 0.94 improves (below 0.95); 0.90 and 0.89 are not below 0.89: stop at epoch 5
    assert scripted(losses, start=0, patience=2, min_delta=0.05) == (5, 3, [1, 3])
    # the same relative rule at ten times the loss: the same epochs (an absolute one would not be)
    assert scripted([10 * v for v in losses], start=0, patience=2, min_delta=0.05, mode="relative") == (7, 5, [1, 3, 5])


def test_lowest_val_loss_tests_the_lowest_epoch_and_stops_as_the_thesis():
    losses = [3.0] * 10 + [2.0, 1.5, 1.45, 1.42] + [1.44] * 30
    assert scripted(losses) == (32, 12, [11, 12])  # the thesis: the last improvement
    assert scripted(losses, tested="lowest_val_loss") == (32, 14, [11, 12, 13, 14])  # 1.42, not an improvement
    early = [0.1] * 10 + [5.0, 4.0, 4.5] + [4.5] * 30  # the epochs before es_start are never tested
    assert scripted(early, tested="lowest_val_loss")[1] == 12


def test_a_restored_stopper_with_the_new_rules_decides_as_an_uninterrupted_one():
    losses = [3.0] * 10 + [2.0, 1.85, 1.9, 1.7, 1.68] + [1.75] * 40
    rules = {"min_delta": 0.05, "mode": "relative", "tested": "lowest_val_loss"}
    expected = scripted(losses, **rules)
    first = loop.EarlyStopping(**rules)
    for loss in losses[:13]:
        first.step(loss)
    second = loop.EarlyStopping(start=0, patience=1, min_delta=5.0)  # the state carries the rule too
    second.load_state_dict(first.state_dict())
    epoch = 13
    for loss in losses[13:]:
        epoch += 1
        second.step(loss)
        if second.should_stop:
            break
    assert (epoch, second.tested_epoch + 1) == expected[:2] == (34, 15)  # 1.68 is the lowest, 1.7 the last improvement
    assert (second.mode, second.tested, second.best_epoch + 1) == ("relative", "lowest_val_loss", 14)


def test_the_trainer_keeps_the_lowest_epochs_model():
    trainer = make_trainer(max_epochs=6, es_start=1, es_patience=9, es_min_delta=1.0, tested="lowest_val_loss")
    script = [5.0, 3.0, 2.5, 2.75, 2.25, 2.5]  # only 3.0 improves (by 1.0); 2.25 is the lowest from es_start on

    def scripted_eval(model, x, y, precision):  # the model trains for real; its validation loss is scripted
        return torch.full((len(y),), script[trainer.epoch]), torch.zeros(len(y), 8)

    trainer.eval_step = scripted_eval
    states = []
    loop.fit(
        trainer, on_epoch_end=lambda row, t: states.append({k: v.clone() for k, v in t.model.state_dict().items()})
    )
    assert (trainer.stopper.tested_epoch, trainer.stopper.tested_loss, trainer.stopper.best_epoch) == (4, 2.25, 1)
    assert [row["improved"] for row in trainer.history] == [False, True, True, False, True, False]  # each new lowest
    for key, value in trainer.tested_model.items():
        assert torch.equal(value, states[4][key])
    assert not all(torch.equal(value, states[5][key]) for key, value in trainer.tested_model.items())


# ------------------------------------------------------------------------------------------ augmentation


def test_augmentation_changes_the_training_batches_not_validation_nor_the_order():
    plain, augmented = make_trainer(max_epochs=2), make_trainer(max_epochs=2, augment="flip+rot90+jitter+shift+noise")
    seen = [recorded(t) for t in (plain, augmented)]
    for trainer in (plain, augmented):
        loop.fit(trainer)
    for (x, y), (x2, y2) in zip(seen[0]["train"], seen[1]["train"], strict=True):
        assert not torch.equal(x, x2) and torch.equal(y, y2)  # other pixels, the same images in the same order
        assert x2.shape == x.shape
    for (x, y), (x2, y2) in zip(seen[0]["val"], seen[1]["val"], strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)  # validation is never augmented
    assert losses(plain) != losses(augmented)


def test_an_augmented_trial_repeats_exactly_and_a_resumed_one_too(tmp_path):
    options = {"augment": "flip+rot90+jitter+shift+noise", "max_epochs": 3}
    whole, again = make_trainer(**options), make_trainer(**options)
    loop.fit(whole)
    loop.fit(again)
    assert losses(whole) == losses(again)
    first = make_trainer(**options)
    first.run_epoch()
    first.run_epoch()
    first.save(tmp_path / "state.pt")
    resumed = make_trainer(**options, seed=9)
    resumed.load(tmp_path / "state.pt")
    loop.fit(resumed)
    assert losses(resumed) == losses(whole)
    other = make_trainer(**options, seed=1)
    loop.fit(other)
    assert losses(other) != losses(whole)


def augment(ops, x, seed=0, fill=(0.5,)):
    return batches.Augmentation(ops, generator=torch.Generator().manual_seed(seed), fill=fill)(x)


def test_flip_and_rot90_give_flipped_and_turned_images():
    x = torch.rand(64, 1, 8, 8)
    flipped, turned = augment(["flip"], x), augment(["rot90"], x)
    counts = {"flip": set(), "rot90": set()}
    for image, a, b in zip(x, flipped, turned, strict=True):
        flips = [image, image.flip(-1), image.flip(-2), image.flip(-1).flip(-2)]
        counts["flip"].add(next(i for i, f in enumerate(flips) if torch.equal(a, f)))
        counts["rot90"].add(next(k for k in range(4) if torch.equal(b, torch.rot90(image, k, (-2, -1)))))
    assert counts == {"flip": {0, 1, 2, 3}, "rot90": {0, 1, 2, 3}}


def test_shift_translates_by_up_to_8_percent_padding_with_the_mean():
    x = torch.rand(32, 3, SIZE, SIZE)
    fill = (0.2, 0.5, 0.8)
    shifted = augment(["shift"], x, fill=fill)
    pad = round(0.08 * SIZE)
    moves = set()
    for image, out in zip(x, shifted, strict=True):
        found = None
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                expected = torch.tensor(fill).view(3, 1, 1).expand(3, SIZE, SIZE).clone()
                src = image[:, max(dy, 0) : SIZE + min(dy, 0), max(dx, 0) : SIZE + min(dx, 0)]
                expected[:, max(-dy, 0) : SIZE + min(-dy, 0), max(-dx, 0) : SIZE + min(-dx, 0)] = src
                if torch.equal(out, expected):
                    found = (dy, dx)
        assert found is not None
        moves.add(found)
    assert len(moves) > 10  # each image draws its own


def test_jitter_changes_exposure_and_contrast_and_noise_adds_a_little():
    x = 0.4 + 0.2 * torch.rand(16, 1, 8, 8)  # mid-grey: nothing is clipped
    jittered = augment(["jitter"], x)
    for image, out in zip(x, jittered, strict=True):
        centred, out_centred = image - image.mean(), out - out.mean()
        contrast = float(out_centred.std() / centred.std())
        assert 0.8 <= contrast <= 1.2 and torch.allclose(out_centred, centred * contrast, atol=1e-5)
        assert abs(float(out.mean() - image.mean())) <= 0.1 + 1e-6
    noisy = augment(["noise"], x)
    assert float((noisy - x).std()) == pytest.approx(0.02, rel=0.1) and abs(float((noisy - x).mean())) < 0.002
    assert torch.equal(augment(["noise"], x, seed=3), augment(["noise"], x, seed=3))


# ------------------------------------------------------------------------------------------ input


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


def test_the_trial_says_how_many_channels_its_model_takes():
    def channels(model, value):
        return spec.Trial(model, "tiny", config=spec.TrainConfig(input=value)).channels

    assert [channels("lenet5", v) for v in spec.INPUTS] == [1, 1, 3]
    assert [channels("resnet_18", v) for v in spec.INPUTS] == [3, 1, 3]


def test_the_colour_cache_is_rgb_and_keyed_apart_from_the_grey_one(embedded, tmp_path):
    assert data.PREPROCESS_VERSION == "pbc-grey(0.2989,0.587,0.114)-round-centercrop352-bilinear-v2"
    grey, y = data.load_split(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    colour, y2 = data.load_split(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path, colour=True)
    assert colour.shape == (76, 3, SIZE, SIZE) and grey.shape == (76, SIZE, SIZE) and (y == y2).all()
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert {k: after[k] for k in files} == files  # the grey cache is untouched, its names and bytes
    assert len(after) == 2 * len(files) and all("-32px-rgb-76-" in name for name in set(after) - set(files))
    # the grey key is the one it always was: its version, the size and the images' content
    block = embedded.manifest.query("tier == 'large' and split == 'val'")
    key = hashlib.sha256("\n".join([data.PREPROCESS_VERSION, str(SIZE), *block.sha256]).encode()).hexdigest()
    assert any(key[:20] in name for name in files)
    rows = embedded.manifest.query("tier == 'tiny' and split == 'val'")
    with Image.open(embedded.root / rows.image.iloc[0]) as img:
        full = cache.preprocess_colour(img).astype(np.float64)
        luminance = np.rint(0.2989 * full[0] + 0.587 * full[1] + 0.114 * full[2])
        np.testing.assert_array_equal(luminance, data.preprocess(img))  # the same crop, before the luminance
        np.testing.assert_array_equal(colour[0], cache.preprocess_colour(img, SIZE))


def test_measured_normalisation_uses_the_training_splits_statistics(embedded, tmp_path):
    config = spec.TrainConfig(image_size=SIZE, device="cpu", input="colour", normalise="measured", max_epochs=1)
    trainer = lifecycle.build_trainer(
        spec.Trial("lenet5", "tiny", config=config), lifecycle.TrialData(embedded, tmp_path)
    )
    pixels = trainer.train.x.numpy().astype(np.float64) / 255
    assert trainer.train.x.shape[1:] == (3, SIZE, SIZE) and trainer.model.features[0].in_channels == 3  # LeNet-5
    np.testing.assert_allclose(trainer.train.mean, pixels.mean((0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(trainer.train.std, pixels.std((0, 2, 3)), rtol=1e-9)
    assert (trainer.val.mean, trainer.val.std) == (trainer.train.mean, trainer.train.std)  # not the val split's own
    batch = torch.cat([x for x, _ in trainer.train.batches(64)])
    np.testing.assert_allclose(batch.mean((0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(batch.std((0, 2, 3)), 1, atol=1e-3)
    thesis = lifecycle.build_trainer(
        spec.Trial("lenet5", "tiny", config=spec.TrainConfig(image_size=SIZE, device="cpu")),
        lifecycle.TrialData(embedded, tmp_path),
    )
    assert (thesis.train.mean, thesis.train.std) == ((0.5,), (0.225,))


# ------------------------------------------------------------------------------------------ fine-tuning


def test_finetune_all_leaves_every_parameter_trainable():
    with torch.device("meta"):
        for name in ("resnet_18", "mobilenet_small", "convnext_tiny"):
            head = models.freeze_backbone(models.build_model(name, num_classes=1000), num_classes=8)
            every = models.freeze_backbone(models.build_model(name, num_classes=1000), num_classes=8, finetune="all")
            total, trainable = models.count_parameters(every)
            assert trainable == total == models.count_parameters(head)[0] > models.count_parameters(head)[1]
    with pytest.raises(ValueError, match="finetune must be one of head, all"):
        models.freeze_backbone(torchvision.models.resnet18(), num_classes=8, finetune="none")


# ------------------------------------------------------------------------------------------ a real trial


def test_a_trial_with_several_options_at_once(tmp_path, embedded):
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    options = {
        "optimizer": "nesterov",
        "plateau_patience": 1,
        "lr_scaling": "sqrt",
        "batch_size": 16,  # a quarter of the thesis's 64: the rate is 0.1 x sqrt(1/4)
        "es_mode": "relative",
        "es_min_delta": 0.01,
        "tested": "lowest_val_loss",
        "augment": "flip+rot90+jitter+shift+noise",
        "input": "colour",
        "normalise": "measured",
        "finetune": "all",
    }
    config = spec.TrainConfig(image_size=SIZE, max_epochs=3, es_start=0, device="cpu", **options)
    trial = spec.Trial("resnet_18", "tiny", pretrained=True, config=config)
    result = lifecycle.train_trial(trial, lifecycle.TrialData(embedded, tmp_path / "cache"), weights_file=weights)
    row = result.trial
    recorded_options = json.loads(row["options"])
    assert {k: recorded_options[k] for k in options} == options
    assert row["status"] == "ok" and row["epochs"] == 3 and len(result.predictions) == 115
    assert row["trainable_parameters"] == row["parameters"] == 11_180_616
    assert result.epochs[0]["lr"] == pytest.approx(0.05)
    val = [e["val_loss"] for e in result.epochs]
    assert row["tested_epoch"] == val.index(min(val)) + 1 and row["tested_val_loss"] == min(val)
