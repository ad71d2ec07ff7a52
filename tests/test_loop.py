"""The shared loop (loop.py): the Trainer's epochs, optimisers, plateau schedule and rate scaling, its state and
resume, augmentation in training only, compiled steps, and the validation loss."""

import math
import pickle

import numpy as np
import pytest
import torch
from conftest import losses, make_trainer, recorded

from raybench import catalog, loop, spec
from raybench import trial as lifecycle


def test_plateau_schedule_is_torch_default():
    trainer = make_trainer(max_epochs=1)
    sched = trainer.scheduler
    assert (sched.factor, sched.patience, sched.threshold, sched.mode) == (0.1, 10, 1e-4, "min")
    opt = trainer.optimizer.param_groups[0]
    assert (opt["lr"], opt["momentum"], opt["dampening"], opt["weight_decay"]) == (0.1, 0, 0, 0)


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
        return [{k: v for k, v in r.items() if k not in ("epoch_seconds", "started_at", "ended_at")} for r in rows]

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


def test_a_batch_as_big_as_the_thesis_keeps_the_rate_and_a_larger_one_scales_it_up():
    assert loop.scaled_lr(0.1, batch_size=64, base_batch_size=64, scaling="linear") == 0.1
    assert loop.scaled_lr(0.1, batch_size=128, base_batch_size=64, scaling="sqrt") == pytest.approx(0.1 * math.sqrt(2))
    assert loop.scaled_lr(0.1, batch_size=512, base_batch_size=64, scaling="linear") == pytest.approx(0.8)
    assert loop.scaled_lr(0.1, batch_size=512, base_batch_size=64, scaling="none") == 0.1
    assert loop.scaled_lr(0.1, batch_size=16, base_batch_size=64, scaling="sqrt") == pytest.approx(0.05)
    assert make_trainer(lr_scaling="linear", batch_size=8).optimizer.param_groups[0]["lr"] == 0.1  # no base given


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


def _inf_validation_in_epoch(trainer, bad_epoch: int):
    """Make the validation loss of epoch `bad_epoch` infinite while the weights stay finite."""
    eval_step = trainer.eval_step

    def step(model, x, y, precision):
        losses, logits = eval_step(model, x, y, precision)
        return (losses + float("inf") if len(trainer.history) + 1 == bad_epoch else losses), logits

    trainer.eval_step = step


def test_a_non_finite_loss_with_finite_weights_trains_on_as_the_thesis_and_is_flagged():
    trainer = make_trainer(max_epochs=5, es_patience=50)
    _inf_validation_in_epoch(trainer, 2)
    loop.fit(trainer)
    assert len(trainer.history) == 5 and trainer.weights_finite  # not stopped at epoch 2
    assert math.isinf(trainer.history[1]["val_loss"]) and not trainer.history[1]["improved"]
    assert trainer.diverged.startswith("the val loss is not finite (inf) in epoch 2")
    old = make_trainer(max_epochs=5, es_patience=50, nonfinite_stop="loss")
    _inf_validation_in_epoch(old, 2)
    loop.fit(old)
    assert len(old.history) == 2  # the earlier behaviour, as an option


def test_the_thesis_precision_is_tf32():
    assert spec.TrainConfig().precision == "tf32" == catalog.LOOP_DEFAULTS["precision"]
    assert loop.PRECISIONS["tf32"] == (True, True, False)  # TF32 convolutions and matrix products (PyTorch 1.11)
