import pickle
import re

import numpy as np
import pytest
import torch

from raybench import batches, catalog, loop, models, spec, train
from raybench import trial as lifecycle


def scripted_stop(losses, **kwargs):
    """Feed a scripted loss sequence to EarlyStopping; return (epochs run, 1-based tested epoch)."""
    stopper = loop.EarlyStopping(**kwargs)
    for epoch, loss in enumerate(losses, start=1):
        stopper.step(loss)
        if stopper.should_stop:
            return epoch, stopper.best_epoch + 1
    return len(losses), (stopper.best_epoch + 1 if stopper.best_epoch is not None else None)


def test_best_at_epoch_11_stops_after_31():
    losses = [2.0] * 10 + [1.0] + [0.95] * 100  # 0.95 is not below 1.0 - 0.1
    assert scripted_stop(losses) == (31, 11)


def test_first_ten_epochs_are_never_considered():
    losses = [0.1] * 10 + [5.0] + [5.0] * 100  # the low early losses do not count
    assert scripted_stop(losses) == (31, 11)


def test_improvement_must_beat_best_minus_a_tenth_strictly():
    # epoch 12 is only 0.1 below epoch 11's loss: not strictly below best - 0.1 (fig. 4.5)
    losses = [3.0] * 10 + [2.0, 1.9] + [1.95] * 30
    assert scripted_stop(losses) == (31, 11)
    losses = [3.0] * 10 + [2.0, 1.85] + [1.95] * 30
    assert scripted_stop(losses) == (32, 12)


def test_the_tested_checkpoint_is_the_last_improvement_not_the_lowest_loss():
    losses = [3.0] * 10 + [2.0, 1.5, 1.45, 1.42] + [1.44] * 30
    epochs, best = scripted_stop(losses)
    assert best == 12 and epochs == 32  # 1.42 at epoch 14 is lower but not an improvement


def test_cap_without_stop():
    losses = [10.0 - 0.2 * i for i in range(100)]
    assert scripted_stop(losses) == (100, 100)


def test_a_stopper_restored_mid_run_decides_as_an_uninterrupted_one():
    losses = [3.0] * 10 + [2.0, 1.85, 1.9, 1.7] + [1.95] * 40
    expected = scripted_stop(losses)
    first = loop.EarlyStopping()
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
    assert (epoch, second.best_epoch + 1) == expected == (34, 14)


def test_plateau_schedule_is_torch_default():
    trainer = make_trainer(max_epochs=1)
    sched = trainer.scheduler
    assert (sched.factor, sched.patience, sched.threshold, sched.mode) == (0.1, 10, 1e-4, "min")
    opt = trainer.optimizer.param_groups[0]
    assert (opt["lr"], opt["momentum"], opt["dampening"], opt["weight_decay"]) == (0.1, 0, 0, 0)


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


def make_trainer(*, seed=0, model="lenet5", **options):
    config = spec.TrainConfig(
        image_size=32, device="cpu", **{"es_start": 1, "es_patience": 3, "es_min_delta": 0.0, **options}
    )
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (48, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 8, 48)
    loop.seed_everything(seed)
    channels = catalog.configuration(model).channels
    model = models.build_model(model, image_size=32)

    def split(a, b):
        return batches.DeviceSplit(a, b, channels=channels, device=torch.device("cpu"))

    return loop.Trainer(model, split(x[:32], y[:32]), split(x[32:], y[32:]), config, seed=seed, batch_size=8)


def test_restored_training_gives_the_numbers_of_an_uninterrupted_one(tmp_path):
    # mobilenet_small has dropout: its numbers depend on the global torch RNG, not only on the data order
    whole = make_trainer(model="mobilenet_small", max_epochs=5, lr=0.05)
    loop.fit(whole)

    first = make_trainer(model="mobilenet_small", max_epochs=5, lr=0.05)
    for _ in range(2):
        first.run_epoch()
    first.save(tmp_path / "state.pt")
    resumed = make_trainer(model="mobilenet_small", max_epochs=5, lr=0.05, seed=7)
    torch.manual_seed(123)  # disturb every RNG after building: the state must bring them back
    np.random.seed(123)
    resumed.load(tmp_path / "state.pt")
    loop.fit(resumed)

    def drop_time(rows):
        return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]

    assert drop_time(resumed.history) == drop_time(whole.history)
    for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.stopper.state_dict() == whole.stopper.state_dict()


def test_same_seed_same_numbers_and_different_seed_differs():
    a, b, c = make_trainer(max_epochs=2), make_trainer(max_epochs=2), make_trainer(max_epochs=2, seed=1)
    for t in (a, b, c):
        loop.fit(t)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert [r["train_loss"] for r in a.history] != [r["train_loss"] for r in c.history]


def test_lr_column_is_the_rate_used_for_that_epoch():
    trainer = make_trainer(max_epochs=3, lr=1e-9)  # no learning: losses flat, plateau never reached in 3 epochs
    loop.fit(trainer)
    assert [r["lr"] for r in trainer.history] == [1e-9, 1e-9, 1e-9]


def test_out_of_memory_halves_the_batch_size_and_starts_again():
    built = []

    def build(batch_size):
        built.append(batch_size)
        trainer = make_trainer(max_epochs=2)
        trainer.batch_size = batch_size
        return trainer

    def on_epoch_end(row, trainer, start):
        if trainer.batch_size > 8:  # a card that holds 8 images at most
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer = lifecycle.fit_halving_on_oom(build, batch_size=32, on_epoch_end=on_epoch_end)
    assert built == [32, 16, 8] and trainer.batch_size == 8 and trainer.epoch == 2
    with pytest.raises(torch.cuda.OutOfMemoryError):
        lifecycle.fit_halving_on_oom(build, batch_size=32, on_epoch_end=on_epoch_end, min_batch_size=16)


def test_one_trial_runner_writes_the_four_files(tmp_path, capsys):
    import pandas as pd

    from raybench import metrics

    out = tmp_path / "one"
    train.main(
        [
            "--model",
            "mlpmixer_s32",
            "--tier",
            "tiny",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
            "--set",
            "image_size=32",
            "--set",
            "max_epochs=4",
            "--set",
            "es_start=1",
            "--set",
            "es_patience=2",
        ]
    )
    printed = capsys.readouterr().out
    assert "epoch   1" in printed and "mlpmixer_s32-tiny-seed0" in printed
    r = {n: pd.read_parquet(out / f"{n}.parquet") for n in ("trials", "epochs", "predictions", "manifest")}
    t = r["trials"].iloc[0]
    assert (t.status, t.n_train, t.n_val, t.n_test, t.parameters) == ("ok", 198, 76, 115, t.trainable_parameters)
    assert t.duplicate_pairs_train_test == 0  # the embedded sample has no duplicates
    assert list(r["epochs"].epoch) == list(range(1, t.epochs + 1)) and 1 <= t.tested_epoch <= t.epochs
    assert len(r["manifest"]) == 389 and set(r["manifest"].tier) == {"tiny"}  # the thesis's rule leaves 11 out
    p = r["predictions"]
    scores = p[[c for c in p.columns if c.startswith("score_")]].to_numpy()
    assert len(p) == 115 and set(p.image) == set(r["manifest"].query("split == 'test'").image)
    assert t.test_accuracy == pytest.approx(metrics.accuracy(scores, p.label.to_numpy()))
    logits = p[[c for c in p.columns if c.startswith("logit_")]].to_numpy()  # §5.1.1 ranks by the raw outputs
    assert t.map_at_5 == pytest.approx(metrics.map_at_n(logits, p.label.to_numpy(), 5))


def test_one_trial_runner_names_a_bad_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--model", "lenet5", "--tier", "tiny", "--out", str(tmp_path), "--set", "epochs=3"])
    assert "unknown training option 'epochs'" in capsys.readouterr().err


def test_a_pretrained_trial_in_bf16_and_channels_last_runs_and_records_it(tmp_path, embedded):
    import torchvision

    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    config = spec.TrainConfig(
        image_size=32, max_epochs=2, es_start=0, precision="bf16", channels_last=True, device="cpu"
    )
    trial = spec.Trial("resnet_18", "tiny", pretrained=True, config=config)
    result = lifecycle.train_trial(trial, lifecycle.TrialData(embedded, tmp_path / "cache"), weights_file=weights)
    row = result.trial
    assert (row["pretrained"], row["precision"], row["channels_last"], row["trainable_parameters"]) == (
        True,
        "bf16",
        True,
        4104,
    )
    assert row["batch_size"] == 64 and row["epochs"] == 2 and len(result.predictions) == 115
    assert '"precision": "bf16"' in row["options"]


def test_a_loss_that_is_not_finite_ends_the_trial_and_says_so(tmp_path, embedded):
    config = spec.TrainConfig(image_size=32, max_epochs=6, es_start=0, lr=1e30, device="cpu")  # diverges at once
    result = lifecycle.train_trial(spec.Trial("lenet5", "tiny", config=config), lifecycle.TrialData(embedded, tmp_path))
    row = result.trial
    assert row["status"] == "diverged" and "is not finite" in row["error"] and row["epochs"] < 6
    assert len(result.epochs) == row["epochs"]


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


class Payload:
    """Stands for a pickled object in a tampered checkpoint: loading it must not construct it."""

    def __reduce__(self):
        return (print, ("this ran on load",))


def test_a_checkpoint_is_loaded_without_unpickling_objects(tmp_path):
    trainer = make_trainer(max_epochs=1)
    trainer.save(tmp_path / "state.pt")
    make_trainer(max_epochs=1).load(tmp_path / "state.pt")  # the real state is tensors and plain values
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    torch.save({**state, "history": [Payload()]}, tmp_path / "tampered.pt")
    with pytest.raises(pickle.UnpicklingError):
        make_trainer(max_epochs=1).load(tmp_path / "tampered.pt")


@pytest.mark.slow  # torch.compile builds C++ kernels for the CPU: about a minute the first time
def test_a_compiled_step_gives_the_numbers_of_the_eager_one():
    eager, compiled = make_trainer(max_epochs=3, step="eager"), make_trainer(max_epochs=3, step="compiled")
    assert compiled.compiled and not eager.compiled
    loop.fit(eager)
    loop.fit(compiled)
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
        assert (b["val_accuracy"], b["lr"]) == (a["val_accuracy"], a["lr"])


def test_the_validation_loss_does_not_depend_on_the_evaluation_batches():
    trainer = make_trainer(max_epochs=1)
    val = trainer.val
    thesis = [loop.evaluate(trainer.model, val.batches(b), loss_batch_size=8)[0] for b in (3, 8, 16)]
    per_image = [loop.evaluate(trainer.model, val.batches(b))[0] for b in (3, 8, 16)]
    assert max(thesis) - min(thesis) < 1e-6 and max(per_image) - min(per_image) < 1e-6
    # 16 images in batches of 8: the two rules agree; in batches of 6 the short last batch (4) weighs more
    assert thesis[0] == pytest.approx(per_image[0], abs=1e-6)
    losses = [loop.evaluate(trainer.model, val.batches(6, torch.arange(i, i + 6)))[0] for i in (0, 6)]
    tail = loop.evaluate(trainer.model, val.batches(4, torch.arange(12, 16)))[0]
    weighted = loop.evaluate(trainer.model, val.batches(16), loss_batch_size=6)[0]
    assert weighted == pytest.approx((losses[0] + losses[1] + tail) / 3, abs=1e-6)
