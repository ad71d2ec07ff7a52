"""A results disk that fills: one line saying what to do, and the trial's rows recovered by --resume from its
final checkpoint (the fault is injected at the write: no small real filesystem can be made here)."""

import errno

from conftest import ROOT
from conftest import finished_result as finished

from raybench import results
from raybench.service import callbacks, driver, trainable


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_when_a_trial_ends_is_one_line_and_resume_recovers_the_trial(tmp_path, monkeypatch, capsys):
    out, experiment = tmp_path / "RESULTS" / "grid", tmp_path / "ray" / "grid"
    result = finished()
    trainable.write_checkpoint(experiment / result.trial["trial_id"] / "checkpoint_000003", None, result)
    (experiment / result.trial["trial_id"] / "checkpoint_000001").mkdir()  # an epoch's, without result rows

    with monkeypatch.context() as patch:
        patch.setattr(results, "write_table", disk_full)
        callbacks.ResultsCallback(out, {}).save(result)
    err = capsys.readouterr().err
    assert "no space left in" in err and "free space and --resume" in err and "Traceback" not in err
    assert results.finished_trials(out) == {}

    assert driver.recover_from_checkpoints(experiment, out, [result.trial["trial_id"], "other"]) == [
        result.trial["trial_id"]
    ]
    assert results.finished_trials(out) == {result.trial["trial_id"]: "ok"}
    assert [e["epoch"] for e in results.read_table(out, "epochs")[0].to_dict("records")] == [1, 2, 3]
    assert driver.recover_from_checkpoints(experiment, out, [result.trial["trial_id"]]) == []  # already there


def test_a_full_disk_is_recognised_from_pyarrows_message_too():
    assert results.is_disk_full(OSError(errno.ENOSPC, "x"))
    assert results.is_disk_full(OSError("IOError: No space left on device. Detail: [errno 28]"))
    assert not results.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_a_full_disk_before_the_run_starts_names_the_command_that_resumes_it(tmp_path, monkeypatch, capsys, embedded):
    from raybench import grid as grids

    grid = grids.load_grid(str(ROOT / "grids" / "quickstart.py"))
    setup = driver.Setup(grid, "q", tmp_path / "q", None, {}, resume_command="python -m raybench.run g.py --resume")
    monkeypatch.setattr(results, "write_table", disk_full)
    assert driver.run_grid(setup, embedded, driver.RunOptions()) == 2
    err = capsys.readouterr().err
    assert "no space left in" in err and "free space and --resume (python -m raybench.run g.py --resume)" in err
