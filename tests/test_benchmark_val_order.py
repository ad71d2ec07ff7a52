"""The val_order study: its report's counts from known rows, its command line on the real sample, bad input."""

import os

import pandas as pd
import pytest

from benchmarks.val_order import EPOCHS_CSV, REPORT, TRIALS_CSV, VARIANTS
from benchmarks.val_order.__main__ import main
from benchmarks.val_order.study import paired, report


def rows(model, seed, accuracies, tested, last):
    base = {
        "model": model,
        "seed": seed,
        "max_epochs": 40,
        "image_size": 64,
        "batch_size": 64,
        "status": "ok",
        "n_train": 198,
        "n_val": 76,
        "n_test": 115,
        "wall_seconds": 1.0,
    }
    return [
        {**base, "variant": v, "test_accuracy": a, "tested_epoch": t, "epochs": e, "stopped_early": e < 40}
        for v, a, t, e in zip(VARIANTS, accuracies, tested, last, strict=False)
    ]


def test_report_counts_the_pairs_whose_tested_epoch_last_epoch_and_accuracy_change():
    trials = pd.DataFrame(
        rows("lenet5", 0, [0.2, 0.2, 0.3], [11, 11, 15], [31, 31, 35])
        + rows("lenet5", 1, [46 / 115, 58 / 115, 46 / 115], [20, 12, 20], [40, 32, 40])
        + rows("resnet_18", 0, [0.6, 0.6, 0.6], [11, 11, 11], [31, 31, 31])
        + rows("resnet_18", 1, [0.6], [11], [31])  # one variant only: not a pair
    )
    wide = paired(trials)
    assert list(zip(wide.model, wide.seed, strict=True)) == [("lenet5", 0), ("lenet5", 1), ("resnet_18", 0)]
    text = report(trials, pd.DataFrame())
    assert "| lenet5 | shuffled - class | 2 | 1/2 | 1/2 | 1/2 |" in text
    assert "| lenet5 | images - class | 2 | 1/2 | 1/2 | 1/2 |" in text
    assert "| all | shuffled - class | 3 | 1/3 | 1/3 | 1/3 | +0.035 [" in text
    assert "shuffled against class: the tested epoch changed in 1 of 3 (model, seed) pairs" in text
    assert "at most 0.104 (12 of 115 test images)" in text
    assert "| lenet5 | 1 | 0.400 | 0.504 | 0.400 | 20/40 | 12/32 | 20/40 |" in text
    assert "No variant could change resnet_18: in every seed and variant its tested epoch is 11" in text


def test_committed_report_is_what_the_code_writes_from_the_committed_csvs():
    trials = pd.read_csv(TRIALS_CSV)
    assert REPORT.read_text() == report(trials, pd.read_csv(EPOCHS_CSV))
    pairs = paired(trials).groupby("model").size()
    assert len(pairs) >= 3 and (pairs >= 5).all()  # at least 3 models x 5 seeds, every variant of each


def test_bad_data_folder_is_one_line_and_rc_2(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "v.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0] and "pbc_sample" in err[0]
    assert main(["--report", "--out", str(tmp_path / "v.csv")]) == 2


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("RAYBENCH_SHARED_DATA"), reason="set RAYBENCH_SHARED_DATA to the real pbc_sample folder"
)
def test_quick_run_writes_a_row_per_variant_and_resumes(tmp_path):
    out = tmp_path / "v.csv"
    argv = ["--quick", "--out", str(out)]
    assert main(argv) == 0
    trials = pd.read_csv(out)
    assert sorted(trials.variant) == sorted(VARIANTS)
    assert set(trials.n_val) == {76} and set(trials.n_test) == {115}
    assert len(pd.read_csv(tmp_path / "v_epochs.csv")) == 3 * 2
    assert main(argv) == 0  # every row is there: nothing runs again
    assert len(pd.read_csv(out)) == 3
    assert "## Headline" in (tmp_path / "v.md").read_text()
