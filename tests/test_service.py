"""The Ray Tune service end to end: real Ray on 2 CPUs, real Parquet, the embedded real images."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import read_results as read
from conftest import run_cli as run
from conftest import write_grid
from ray import tune

ROOT = Path(__file__).resolve().parents[1]
THESIS = pd.read_csv(ROOT / "raybench" / "thesis" / "results.csv")


@pytest.mark.slow  # the dry run times the configurations it projects (at most 60 s) and counts the rest's FLOPs
def test_thesis_grid_dry_run_plans_99_trials_with_the_thesis_counts(tmp_path):
    proc = run(ROOT / "grids" / "thesis.py", "--dry-run", cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    plan = pd.read_parquet(tmp_path / "results" / "thesis" / "plan.dry-run.parquet")
    assert len(plan) == 99 and "99 trials planned" in proc.stdout
    merged = plan.merge(
        THESIS.rename(columns={"dataset": "tier"}), on=["model", "tier", "pretrained"], suffixes=("", "_thesis")
    )
    assert len(merged) == 99
    counted = merged.trainable_parameters.where(merged.pretrained, merged.parameters)
    assert (counted == merged.parameters_thesis).all()
    assert (merged.batch_size == merged.batch_size_thesis).all()
    assert (plan.gpu == 0).all() and (plan.cpu == 1).all()  # no GPU here: trials ask for none
    # how long: every trial projected, the thesis's epoch counts as they are (its stopping window and cap)
    assert (plan.projected_seconds > 0).all() and (merged.projected_epochs == merged.epochs).all()
    assert "projected time on cpu" in proc.stdout and "per tier, each alone: large" in proc.stdout


def test_bad_grid_and_options_are_refused_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("GRID = {'sweeps': [{'models': ['resnet_19'], 'tiers': ['tiny']}]}\n")
    proc = run(bad, "--dry-run", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "resnet_19" in proc.stderr and "resnet_18" in proc.stderr
    proc = run(ROOT / "grids" / "quickstart.py", "--dry-run", "--set", "epochs=3", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "max_epochs" in proc.stderr
    proc = run(ROOT / "grids" / "quickstart.py", "--dry-run", "--only", "vit", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "matches no trial" in proc.stderr


@pytest.mark.slow
def test_small_grid_end_to_end(tmp_path):
    grid = write_grid(tmp_path / "small.py", ["lenet5", "mobilenet_small"])
    mlruns = f"file://{tmp_path / 'mlruns'}"
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}  # MLflow's file store: a lab's server URI works the same way
    proc = run(grid, "--storage", tmp_path / "shared", "--mlflow", mlruns, cwd=tmp_path, env=env)
    out = tmp_path / "results" / "small"
    r = read(out)
    trials, epochs = r["trials"], r["epochs"]
    assert sorted(trials.trial_id) == ["lenet5-tiny-seed0", "mobilenet_small-tiny-seed0"]
    assert (trials.status == "ok").all() and trials.error.isna().all()
    for t in trials.itertuples():
        rows = epochs[epochs.trial_id == t.trial_id]
        assert list(rows.epoch) == list(range(1, t.epochs + 1))
        assert 1 <= t.tested_epoch <= t.epochs
        assert (r["predictions"].trial_id == t.trial_id).sum() == t.n_test
    assert set(r["manifest"].split) == {"train", "val", "test"}
    assert (out / "plan.parquet").exists()
    (invocation,) = json.loads((out / "run.json").read_text())["runs"]  # provenance of this one run
    assert invocation["ended_at"] and invocation["grid_file"].endswith(".py")
    assert invocation["versions"]["ray"].startswith("2.60")
    assert list((tmp_path / "shared" / "small").glob("*/checkpoint_*"))  # Ray's checkpoints went to --storage
    mirrored = pd.read_parquet(tmp_path / "shared" / "small" / "results" / "trials.parquet")
    pd.testing.assert_frame_equal(mirrored, trials)  # and so did the results, through pyarrow's filesystems

    # the console: a compact view, one line per ended trial, nothing of Ray's internals, no traceback
    console = proc.stdout + proc.stderr
    assert "done lenet5-tiny-seed0:" in console and "2/2 done, 0 running, 0 pending, 0 failed" in console
    for noise in ("Traceback", "checkpoint_dir_name", "Checkpoint successfully created", "Configuration for experiment",
                  "time_this_iter_s", "/tmp/ray/session"):  # fmt: skip
        assert noise not in console, noise
    assert len(console.splitlines()) < 40
    assert f"tensorboard --logdir {out / 'tensorboard'}" in console

    # Ray's own tools see the trials' parameters as config keys
    from ray import tune

    frame = tune.ExperimentAnalysis(str(tmp_path / "shared" / "small")).dataframe()
    assert {"config/model", "config/tier", "config/pretrained", "config/seed", "config/lr"} <= set(frame.columns)
    assert sorted(frame["config/model"]) == ["lenet5", "mobilenet_small"]

    # TensorBoard reads the thesis's curves and the HParams of each trial
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(out / "tensorboard" / "lenet5-tiny-seed0"))
    events.Reload()
    assert {"loss/train", "loss/validation", "accuracy/validation", "learning_rate/lr"} <= set(events.Tags()["scalars"])
    lenet = trials.set_index("trial_id").loc["lenet5-tiny-seed0"]
    assert [e.step for e in events.Scalars("loss/validation")] == list(range(1, lenet.epochs + 1))
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info.hparams
    assert start["model"].string_value == "lenet5" and start["tier"].string_value == "tiny"
    assert {"model", "tier", "pretrained", "seed"} <= set(start) and "augment" not in start  # constant: left out
    assert events.Scalars("test/test_accuracy")[0].value == pytest.approx(lenet.test_accuracy)

    # and so does MLflow
    import mlflow

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri(mlruns)
    runs = mlflow.search_runs(experiment_names=["small"])
    assert sorted(runs["params.model"]) == ["lenet5", "mobilenet_small"] and runs["metrics.val_loss"].notna().all()


@pytest.mark.slow
def test_a_failed_copy_to_storage_loses_nothing(tmp_path):
    grid = write_grid(tmp_path / "failed_copy.py", ["lenet5"], name="copy")
    (tmp_path / "shared" / "copy").mkdir(parents=True)
    (tmp_path / "shared" / "copy" / "results").write_text("a file where the results folder should be\n")
    proc = run(grid, "--storage", tmp_path / "shared", cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the run says the copy failed ...
    assert "were NOT copied to" in proc.stderr and "Traceback" not in proc.stdout
    trials = pd.read_parquet(tmp_path / "results" / "copy" / "trials.parquet")  # ... and the trial is intact
    assert list(trials.status) == ["ok"] and trials.epochs.iloc[0] > 0


def trial_numbers(results: Path):
    r = read(results)
    ep = r["epochs"].sort_values(["trial_id", "epoch"])[["trial_id", "epoch", "train_loss", "val_loss", "lr"]]
    tr = r["trials"].sort_values("trial_id")[["trial_id", "epochs", "tested_epoch", "test_accuracy", "map_at_5"]]
    return ep.reset_index(drop=True), tr.reset_index(drop=True)


@pytest.mark.slow
def test_killed_driver_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path):
    options = {"max_epochs": 8, "es_patience": 8}
    grid = write_grid(tmp_path / "resume.py", ["lenet5", "mobilenet_small"], options=options, name="resume")
    run(grid, "--name", "whole", "--checkpoint-every", "0", cwd=tmp_path)
    whole_epochs, whole_trials = trial_numbers(tmp_path / "results" / "whole")

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "raybench.run",
        str(grid),
        "--name",
        "cut",
        "--results",
        str(tmp_path / "results"),
        "--cache",
        str(tmp_path / "cache"),
        "--num-cpus",
        "2",
        "--checkpoint-every",
        "0",
    ]
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    ray_dir = tmp_path / "results" / "cut" / "ray" / "cut"
    deadline = time.time() + 180
    while time.time() < deadline and not list(ray_dir.glob("*/checkpoint_00000[3-9]")):
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-run
    driver.wait()
    assert list(ray_dir.glob("*/checkpoint_*")), "no trial had checkpointed before the kill"
    # Ray deletes a trial's previous checkpoint when it registers a new one and records that a step later: a kill
    # in between leaves its record naming a deleted checkpoint. Made certain here: a trial's newest is renamed past
    # the name Ray recorded
    unfinished = [t for t in tune.ExperimentAnalysis(str(ray_dir)).trials if t.status != "TERMINATED" and t.checkpoint]
    assert unfinished, "every trial had ended before the kill"
    named = Path(unfinished[0].checkpoint.path)
    if any(p.name > named.name for p in named.parent.glob("checkpoint_*")):
        shutil.rmtree(named, ignore_errors=True)  # a newer one is written: Ray would delete the recorded one next
    elif named.exists():  # the recorded one is the newest: it becomes a newer one Ray has not recorded
        named.rename(named.with_name(f"checkpoint_{int(named.name.split('_')[1]) + 1:06d}"))

    resumed = run(grid, "--name", "cut", "--resume", "--checkpoint-every", "0", cwd=tmp_path)
    assert f"newer than Ray's record: {unfinished[0].config['trial_id']}" in resumed.stdout
    for progress in ray_dir.glob("*/result.json"):  # continued from its checkpoint, not trained again from epoch 1
        reported = [json.loads(line).get("epoch") for line in progress.read_text().splitlines() if line.strip()]
        assert reported.count(1) == 1, f"{progress.parent.name} trained epoch 1 again after the resume"
    cut_epochs, cut_trials = trial_numbers(tmp_path / "results" / "cut")
    pd.testing.assert_frame_equal(cut_trials, whole_trials)
    pd.testing.assert_frame_equal(cut_epochs, whole_epochs)  # every epoch exactly once, same numbers


@pytest.mark.slow
def test_failing_trial_gets_a_failed_row_and_a_flaky_one_recovers(tmp_path):
    grid = write_grid(tmp_path / "faults.py", ["lenet5", "mobilenet_small", "mlpmixer_s32"], name="faults")
    drills = ("--inject-failure", "mobilenet_small=always:2", "--inject-failure", "mlpmixer_s32=once:2")
    proc = run(grid, "--max-failures", "1", *drills, cwd=tmp_path, check=False)
    assert proc.returncode == 1  # not every trial succeeded
    trials = pd.read_parquet(tmp_path / "results" / "faults" / "trials.parquet").set_index("model")
    assert trials.loc["lenet5", "status"] == "ok" and trials.loc["mlpmixer_s32", "status"] == "ok"
    assert trials.loc["mobilenet_small", "status"] == "failed"
    assert "injected failure after epoch 2" in trials.loc["mobilenet_small", "error"]
    epochs = pd.read_parquet(tmp_path / "results" / "faults" / "epochs.parquet")
    failed = epochs[epochs.trial_id == "mobilenet_small-tiny-seed0"]  # what it trained before failing is kept
    assert list(failed.epoch) == list(range(1, int(trials.loc["mobilenet_small", "epochs"]) + 1)) and len(failed) >= 2
    mixer = epochs[epochs.trial_id == "mlpmixer_s32-tiny-seed0"]
    assert list(mixer.epoch) == list(range(1, int(trials.loc["mlpmixer_s32", "epochs"]) + 1))
    # the failed trial's line says where its output is, and it is there, in the results folder
    log = tmp_path / "results" / "faults" / "logs" / "mobilenet_small-tiny-seed0"
    failed_line = next(line for line in proc.stdout.splitlines() if line.startswith("FAILED mobilenet_small"))
    assert failed_line.endswith(f"(log: {log}/)") and "injected failure" in (log / "error.txt").read_text()
    assert (log / "stdout").is_file() and (log / "stderr").is_file()
    # the end leads somewhere: a readable table (status shown, as one failed), then the next commands
    out = tmp_path / "results" / "faults"
    table = proc.stdout[proc.stdout.index("3 trials in") :].splitlines()
    assert table[1].split() == ["tier", "model", "status", "epochs", "tested", "epoch", "test", "accuracy", "mAP@5",
                                "mAP@100", "time"]  # fmt: skip
    assert [row.split()[1] for row in table[2:5]][2] == "mobilenet_small"  # by accuracy; the failed one last
    assert f"raybench report {out}   # writes {out / 'report' / 'report.html'}" in proc.stdout
    assert f"tensorboard --logdir {out / 'tensorboard'}" in proc.stdout


def test_a_trial_no_node_can_hold_is_refused_at_once(tmp_path):
    grid = write_grid(tmp_path / "big.py", ["lenet5"], name="big")
    started = time.time()
    proc = run(grid, "--cpus-per-trial", "3", cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "lenet5-tiny-seed0 needs 3 CPU" in proc.stderr
    assert time.time() - started < 60


def warnings_in(text: str) -> set[str]:
    """Ray's and Tune's WARNING lines, without their time stamps."""
    return {line.split(" -- ", 1)[-1] for line in text.splitlines() if "WARNING" in line}


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_in_one_line_and_the_resume_is_as_quiet_as_a_fresh_run(tmp_path):
    options = {"max_epochs": 8, "es_patience": 8}
    write_grid(tmp_path / "cut.py", ["lenet5", "mobilenet_small", "mlpmixer_s32"], options=options, name="cut")
    cmd = [sys.executable, "-m", "raybench.run", "cut.py", "--results", "results", "--cache", "cache"]
    cmd += ["--num-cpus", "2", "--checkpoint-every", "0"]  # two at a time: the third has not started at the Ctrl-C
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.time() + 180
    while time.time() < deadline and not list((tmp_path / "results/cut/ray/cut").glob("*/checkpoint_*")):
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    stopped, _ = driver.communicate(timeout=120)
    assert driver.returncode == 3, stopped[-3000:]  # not finished: --resume goes on
    last = stopped.strip().splitlines()[-1]
    assert "resume with: " in last
    for noise in ("Tuner.restore", "FileNotFoundError", "Failed to fetch metrics", "0 trials", "Empty DataFrame",
                  "Traceback", "Stop signal received"):  # fmt: skip
        assert noise not in stopped, noise
    resume = shlex.split(last.split("resume with: ", 1)[1])
    assert resume[-1] == "--resume" and resume[resume.index("-m") + 1 :][:2] == ["raybench.run", "cut.py"]
    resumed = subprocess.run(resume, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    console = resumed.stdout + resumed.stderr
    for noise in ("Tuner.restore", "FileNotFoundError", "Failed to fetch metrics", "Traceback"):
        assert noise not in console, noise
    assert warnings_in(console) <= warnings_in(stopped)  # nothing a fresh run does not say
    trials = pd.read_parquet(tmp_path / "results" / "cut" / "trials.parquet")
    assert sorted(trials.model) == ["lenet5", "mlpmixer_s32", "mobilenet_small"] and (trials.status == "ok").all()
