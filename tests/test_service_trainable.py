"""The trainable's checkpoints, read back the way the driver reads them (no Ray session needed)."""

from pathlib import Path

import pytest
from conftest import finished_result as finished
from ray import tune

from raybench.service import trainable


def test_a_finished_trials_checkpoint_holds_its_rows_and_its_epochs(tmp_path: Path):
    trainable.write_checkpoint(tmp_path, None, finished())
    checkpoint = tune.Checkpoint.from_directory(str(tmp_path))
    result = trainable.result_from_checkpoint(checkpoint)
    assert result.trial["trial_id"] == "lenet5-tiny-seed0" and [e["epoch"] for e in result.epochs] == [1, 2, 3]
    # a failure after training (a lost node, the driver) still finds the epochs it trained, not 0
    assert [e["epoch"] for e in trainable.history_from_checkpoint(checkpoint)] == [1, 2, 3]
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))  # nothing pickled


def test_fault_drills_fail_where_they_say():
    once, always = trainable.FaultDrill.parse("once:2"), trainable.FaultDrill.parse("always:3")
    with pytest.raises(trainable.InjectedFailure, match="after epoch 2"):
        once.check(2, 0)
    once.check(2, 2)  # resumed at epoch 2: it does not fail again
    once.check(3, 0)
    always.check(2, 0)
    for epoch, start in ((3, 0), (5, 4)):  # every retry fails too
        with pytest.raises(trainable.InjectedFailure):
            always.check(epoch, start)
    with pytest.raises(ValueError, match="once:N"):
        trainable.FaultDrill.parse("sometimes")


def test_tensorboards_hparams_show_only_the_options_the_grid_varies():
    from raybench import spec
    from raybench.service.callbacks import varying_options

    base = spec.TrainConfig(image_size=32)
    trials = [
        spec.Trial("lenet5", "tiny", config=base),
        spec.Trial("lenet5", "tiny", config=spec.TrainConfig(image_size=32, optimizer="adamw", lr=0.001), variant="a"),
        spec.Trial("resnet_18", "tiny", seed=1, config=base),
    ]
    assert varying_options(trials) == ["lr", "optimizer"]  # model and seed are identity columns, always shown
    trials.append(spec.Trial("lenet5", "small", config=spec.TrainConfig(image_size=32, batch_size=8)))
    assert varying_options(trials) == ["batch_size", "lr", "optimizer"]


def test_an_oom_drill_raises_cudas_out_of_memory_once_at_the_trials_own_batch():
    import torch

    drill = trainable.FaultDrill.parse("oom:2")
    drill.check(1, 0)  # not yet
    with pytest.raises(torch.cuda.OutOfMemoryError, match="injected out of memory after epoch 2"):
        drill.check(2, 0)
    drill.check(2, 0, halved=True)  # the halved retry trains on
