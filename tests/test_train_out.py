"""`python -m raybench.train --out`: every output location is checked before training, and nothing already
there is replaced by a trial trained with other options."""

import os

import pytest

from raybench import results, spec, train


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        train.main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_row_trained_with_other_options_is_never_replaced(tmp_path, capsys):
    out = tmp_path / "run"
    old = spec.Trial("lenet5", "tiny", seed=0, config=spec.make_config({"image_size": 64}))
    results.write_trial(out, results.TrialResult({**old.columns(), "status": "ok"}, [], []))
    line = refused(["--model", "lenet5", "--tier", "tiny", "--set", "image_size=32", "--out", str(out)], capsys)
    assert "already holds trial" in line and old.trial_id in line
    assert results.read_table(out, "trials")[0].options.tolist() == [old.columns()["options"]]


def test_a_grid_runs_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "plan.parquet").write_bytes(b"")
    line = refused(["--model", "lenet5", "--tier", "tiny", "--out", str(out)], capsys)
    assert "results folder of a grid run" in line


def test_an_out_that_is_a_file_or_unwritable_is_refused_before_training(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert "is a file" in refused(["--model", "lenet5", "--tier", "tiny", "--out", str(target)], capsys)
    if os.geteuid() == 0:
        pytest.skip("root writes into any folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = refused(["--model", "lenet5", "--tier", "tiny", "--out", str(locked / "out")], capsys)
        assert "not writable" in line
    finally:
        locked.chmod(0o700)
