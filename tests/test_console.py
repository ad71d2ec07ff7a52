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


def test_the_final_table_reads_by_tier_then_accuracy_with_three_decimals_and_no_empty_columns():
    from raybench.console import final_table

    rows = [("resnet_18", "tiny", 0.713043, 20), ("lenet5", "tiny", 0.565217, 16), ("lenet5", "large", 0.2, 3),
            ("mlpmixer_s32", "tiny", 0.8, 9)]  # fmt: skip
    trials = pd.DataFrame(
        [
            {
                "model": m,
                "tier": t,
                "pretrained": False,
                "variant": "",
                "seed": 0,
                "status": "ok",
                "epochs": 20,
                "tested_epoch": e,
                "test_accuracy": a,
                "map_at_5": 0.475,
                "map_at_100": 0.08125,
                "train_seconds": 34.3,
            }
            for m, t, a, e in rows
        ]
    )
    header, *lines = final_table(trials, tier_order=["large", "medium", "small", "tiny"])
    assert header.split() == ["tier", "model", "epochs", "tested", "epoch", "test", "accuracy", "mAP@5", "mAP@100",
                              "time"]  # fmt: skip
    assert [line.split()[:2] for line in lines] == [["large", "lenet5"], ["tiny", "mlpmixer_s32"],
                                                    ["tiny", "resnet_18"], ["tiny", "lenet5"]]  # fmt: skip
    assert lines[2].split()[2:] == ["20", "20", "0.713", "0.475", "0.081", "34s"]
    assert "variant" not in header and "pretrained" not in header and "seed" not in header  # nothing to say
    assert all(len(line) < 120 for line in lines)


def test_the_next_commands_name_the_report_html_and_the_curves(tmp_path):
    from raybench.console import next_commands

    lines = next_commands(tmp_path / "quickstart")
    assert lines[0] == f"raybench report {tmp_path / 'quickstart'}   # writes {tmp_path}/quickstart/report/report.html"
    assert lines[1] == f"tensorboard --logdir {tmp_path / 'quickstart' / 'tensorboard'}"
