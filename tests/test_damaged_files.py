"""Files damaged by a crash: a truncated checkpoint state restarts its trial (saying so), zero-byte derived files
are rebuilt from parts/ instead of blocking, and every renamed write is synced to the disk first."""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import make_trainer, trial_result, write_grid
from ray import tune

from raybench import files, results
from raybench.service import cli, trainable


def test_a_truncated_state_is_refused_with_its_reason_and_an_intact_one_loads(tmp_path):
    trainer = make_trainer()
    trainer.run_epoch()
    trainable.write_checkpoint(tmp_path, trainer, None)
    state, damage = trainable.restore_state(tune.Checkpoint.from_directory(str(tmp_path)))
    assert damage == "" and state["batch_size"] == trainer.batch_size
    data = (tmp_path / trainable.STATE_FILE).read_bytes()
    (tmp_path / trainable.STATE_FILE).write_bytes(data[: len(data) // 2])  # cut short by a crash
    (tmp_path / trainable.HISTORY_FILE).write_text('[{"epoch": 1, "val_lo')
    checkpoint = tune.Checkpoint.from_directory(str(tmp_path))
    state, damage = trainable.restore_state(checkpoint)
    assert state is None and damage.startswith("state.pt: ")
    assert trainable.history_from_checkpoint(checkpoint) == []  # a failed row can still be written


def test_zero_byte_derived_files_are_rebuilt_from_the_parts(tmp_path, embedded):
    out = tmp_path / "run"
    results.write_results(out, [trial_result("a"), trial_result("b", epochs=3)], manifest=embedded.manifest)
    results.write_plan(out, pq.read_table(out / "trials.parquet").to_pandas()[["trial_id"]])
    for name in ("trials", "epochs", "manifest", results.PLAN_FILE.removesuffix(".parquet")):
        (out / f"{name}.parquet").write_bytes(b"")  # what a crash after an unsynced rename leaves
    trials, _ = results.read_table(out, "trials")
    assert sorted(trials.trial_id) == ["a", "b"] and len(results.read_table(out, "epochs")[0]) == 5
    assert results.read_plan(out) is None and results.read_manifest(out) is None
    cli.check_same_data(out, embedded, resume=True)  # a damaged manifest does not block the resume
    (out / "parts" / "b.trials.parquet").write_bytes(b"")  # a damaged part: that trial reads as not saved
    assert results.finished_trials(out) == {"a": "ok"}
    results.consolidate(out, manifest=embedded.manifest)
    assert pq.read_table(out / "trials.parquet")["trial_id"].to_pylist() == ["a"]
    assert len(results.read_manifest(out)) == len(embedded.manifest)


def test_a_renamed_write_is_synced_before_the_rename_and_its_folder_after(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def synced(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def renamed(src, dst):
        events.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", synced)
    monkeypatch.setattr(files.os, "replace", renamed)
    results.write_trial(tmp_path, trial_result("a"))
    target = str(tmp_path / "parts" / "a.trials.parquet")
    at = events.index(("replace", target))
    assert events[at - 1][0] == "fsync" and events[at - 1][1].endswith(".tmp")  # the new content first
    assert events[at + 1] == ("fsync", str(tmp_path / "parts"))  # then the name


@pytest.mark.slow
def test_a_trial_whose_checkpoint_is_truncated_trains_again_from_epoch_1_and_says_so(tmp_path):
    grid = write_grid(tmp_path / "g.py", ["lenet5"], options={"max_epochs": 3, "es_patience": 3})
    base = [sys.executable, "-m", "raybench.run", str(grid), "--results", str(tmp_path / "results")]
    base += ["--cache", str(tmp_path / "cache"), "--num-cpus", "2", "--checkpoint-every", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    drill = ["--inject-failure", "lenet5=always:2", "--max-failures", "0"]
    first = subprocess.run([*base, *drill], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-3000:]  # failed after epoch 2's checkpoint
    (state,) = (tmp_path / "results" / "small" / "ray" / "small").glob("*/checkpoint_*/state.pt")
    state.write_bytes(state.read_bytes()[:1000])

    resumed = subprocess.run([*base, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "lenet5-tiny-seed0: its checkpoint is damaged (state.pt: " in resumed.stdout
    assert "training it again from epoch 1" in resumed.stdout
    trials, _ = results.read_table(tmp_path / "results" / "small", "trials")
    epochs, _ = results.read_table(tmp_path / "results" / "small", "epochs")
    assert list(trials.status) == ["ok"] and list(epochs.epoch) == list(range(1, int(trials.epochs.iloc[0]) + 1))
