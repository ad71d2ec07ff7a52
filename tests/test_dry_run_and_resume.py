"""A dry run never rewrites a run's plan, and --resume checks the options the finished trials were trained with
(their rows), not only the plan."""

import pandas as pd
from conftest import ROOT, refused

from raybench import grid as grids
from raybench import results, run

QUICKSTART = str(ROOT / "grids" / "quickstart.py")


def planned(argv, out):
    """The plan a run of `argv` writes before it trains (here through a dry run, moved into place)."""
    run.main([*argv, "--dry-run"])
    (out / results.DRY_RUN_PLAN_FILE).rename(out / results.PLAN_FILE)


def test_a_dry_run_with_other_options_leaves_the_runs_plan_as_it_was(tmp_path, capsys):
    argv, out = [QUICKSTART, "--results", str(tmp_path)], tmp_path / "quickstart"
    planned(argv, out)
    before = (out / results.PLAN_FILE).read_bytes()
    assert run.main([*argv, "--dry-run", "--set", "max_epochs=3"]) == 0
    assert f"-> {out / results.DRY_RUN_PLAN_FILE}" in capsys.readouterr().out  # says where its plan went
    assert (out / results.PLAN_FILE).read_bytes() == before
    dry = pd.read_parquet(out / results.DRY_RUN_PLAN_FILE)
    assert dry.options.str.contains('"max_epochs": 3').all()
    assert "differ from those of the run" in refused([*argv, "--resume", "--set", "max_epochs=3"], capsys)


def test_resume_compares_with_the_options_the_finished_trials_were_trained_with(tmp_path, capsys):
    argv, out = [QUICKSTART, "--results", str(tmp_path)], tmp_path / "quickstart"
    trained = next(
        t for t in grids.load_grid(QUICKSTART).trials if t.model == "lenet5"
    ).columns()  # trained with the grid's own options ...
    results.write_trial(out, results.TrialResult({**trained, "status": "ok"}, [], []))
    planned([*argv, "--set", "max_epochs=3"], out)  # ... while the plan says max_epochs=3 (an old dry run wrote it)
    line = refused([*argv, "--resume", "--set", "max_epochs=3"], capsys)
    assert f"trial {trained['trial_id']} in {out} was trained with other options" in line
    (out / results.PLAN_FILE).unlink()  # without a plan (a folder restored from --storage), the rows still decide
    line = refused([*argv, "--resume", "--set", "max_epochs=3", "--only", "resnet"], capsys)
    assert f"holds trial {trained['trial_id']}, which this grid (with its --only) does not plan" in line
