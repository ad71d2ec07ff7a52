"""A run that ends with planned trials still without results (interrupted, stopped) says so and exits non-zero,
with the command that continues it."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import trial_result, write_grid

from raybench import results
from raybench.service import cli, driver


def test_the_resume_command_repeats_the_users_arguments_with_resume():
    argv = ["grids/q.py", "--name", "my run", "--results", "out", "--storage", "s3://b/p", "--dry-run"]
    command = cli.resume_command(argv)
    assert shlex.split(command)[0] in ("python", sys.executable)
    assert shlex.split(command)[1:] == [
        "-m", "raybench.run", "grids/q.py", "--name", "my run", "--results", "out", "--storage", "s3://b/p",
        "--resume",
    ]  # fmt: skip
    assert cli.resume_command(["g.py", "--resume"]).count("--resume") == 1


def test_unfinished_trials_are_the_planned_ones_without_rows(tmp_path):
    results.write_trial(tmp_path, trial_result("a"))
    results.write_trial(tmp_path, trial_result("c", status="failed"))  # failed has a row: --max-failures decides
    assert driver.unfinished_trials(tmp_path, ["a", "b", "c", "d"]) == ["b", "d"]


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_exits_3_naming_the_missing_trials_and_the_command_resumes_it(tmp_path):
    grid = write_grid(tmp_path / "g.py", ["lenet5", "mobilenet_small"], options={"max_epochs": 8, "es_patience": 8})
    out = tmp_path / "results" / "small"
    argv = [str(grid), "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    cmd = [sys.executable, "-m", "raybench.run", *argv, "--num-cpus", "2", "--checkpoint-every", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not list((out / "ray" / "small").glob("*/checkpoint_000001")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # what `kill PID`, a CI job's timeout or systemd sends
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == driver.UNFINISHED, stdout[-2000:] + stderr[-3000:]
    assert "the run is not finished" in stderr and "Traceback" not in stderr
    line = next(s for s in stderr.splitlines() if "not finished" in s)
    assert "1 of 2 trials ended" in line or "0 of 2 trials ended" in line
    resume = shlex.split(line.split("resume with: ", 1)[1])
    assert resume[0] in ("python", sys.executable) and resume[1:3] == ["-m", "raybench.run"]
    assert resume[-1] == "--resume"
    assert resume[3:-1] == [*argv, "--num-cpus", "2", "--checkpoint-every", "0"]

    subprocess.run([sys.executable, *resume[1:]], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)
    trials = pd.read_parquet(out / "trials.parquet")
    assert sorted(trials.trial_id) == ["lenet5-tiny-seed0", "mobilenet_small-tiny-seed0"]
    assert (trials.status == "ok").all()
