"""The grid's live view: counts, an ETA range from measured epochs, one line per running trial and per end."""

import json

import pandas as pd

from raybench.console import GridProgress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def plan(*rows):
    options = json.dumps({"es_start": 10, "es_patience": 20})
    return pd.DataFrame([{"trial_id": f"{m}-{t}-seed0", "model": m, "tier": t, "parameters": p, "max_epochs": 100,
                          "options": options} for m, t, p in rows])  # fmt: skip


def test_durations_read_plainly():
    assert [duration(s) for s in (7, 245, 11520, -3)] == ["7s", "4m05s", "3h12m", "0s"]


def test_counts_eta_and_lines_follow_the_trials():
    clock = Clock()
    progress = GridProgress(plan(("lenet5", "tiny", 1000), ("lenet5", "small", 1000), ("resnet_18", "tiny", 2000)),
                            train_images={"tiny": 100, "small": 1000}, clock=clock)  # fmt: skip
    assert progress.render()[0].endswith("0/3 done, 0 running, 3 pending, 0 failed; ETA after the first epoch")
    progress.started_trial("lenet5-tiny-seed0")
    for epoch in (1, 2):
        progress.epoch_ended("lenet5-tiny-seed0", {"epoch": epoch, "epoch_seconds": 2.0, "val_loss": 1.5,
                                                   "val_accuracy": 0.5, "lr": 0.1})  # fmt: skip
    clock.now = 65
    lines = progress.render()
    assert lines[0].startswith("[1m05s] 0/3 done, 1 running, 2 pending, 0 failed; ETA ")
    assert "lenet5-tiny-seed0" in lines[1] and "epoch   2/100" in lines[1] and "val_acc 0.500" in lines[1]
    # seconds per epoch: 2 s measured on lenet5-tiny; lenet5-small has 10x the images, resnet_18-tiny 2x the weights
    # soonest: every trial stops at epoch 31 (es_start + es_patience + 1); latest: all run 100 epochs
    low, high = progress.eta()
    assert low == 29 * 2 + 31 * 20 + 31 * 4 and high == 98 * 2 + 100 * 20 + 100 * 4
    end = progress.trial_ended("lenet5-tiny-seed0", "ok", {"epochs": 31, "tested_epoch": 11, "test_accuracy": 0.25,
                                                           "train_seconds": 62})  # fmt: skip
    assert end == "done lenet5-tiny-seed0: 31 epochs (tested epoch 11), test accuracy 0.250, 1m02s"
    assert progress.trial_ended("resnet_18-tiny-seed0", "failed", {"error": "Traceback\nRuntimeError: boom"}) == (
        "FAILED resnet_18-tiny-seed0: RuntimeError: boom"
    )
    assert progress.counts() == {"done": 1, "running": 0, "pending": 1, "failed": 1}
