"""One run per results folder: a second run with the same name is refused while the first lives; a holder that
died (kill -9) leaves nothing that blocks the next run."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, write_grid

from raybench import run
from raybench.service import lock

HOLD = "import sys, time; from pathlib import Path; from raybench.service import lock; "
HOLD += "lock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)"


def hold(out):
    """Another process holding the lock of `out` (as a running `raybench run` does)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_with_the_same_name_is_refused_naming_the_folder_and_the_holders_pid(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.py", ["lenet5"])
    out = tmp_path / "results" / "small"
    holder = hold(out)
    try:
        with pytest.raises(SystemExit) as exit_:
            run.main([str(grid), "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")])
        assert exit_.value.code == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"{out} is in use by another run (pid {holder.pid} on " in line
        assert not (out / "manifest.parquet").exists() and not (out / "parts").exists()  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_killed_with_sigkill_does_not_block_the_next_run(tmp_path):
    out = tmp_path / "results" / "small"
    holder = hold(out)
    with pytest.raises(ValueError, match="in use by another run"):
        lock.acquire(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (out / lock.LOCK_FILE).read_text().startswith(f"pid {holder.pid} ")  # the dead holder's file stays ...
    held = lock.acquire(out)  # ... and blocks nothing
    assert (out / lock.LOCK_FILE).read_text().startswith(f"pid {os.getpid()} ")
    held.release()
    lock.acquire(out).release()  # released: free again
