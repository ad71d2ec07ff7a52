"""The Ray Tune function trainable: a trial spec -> the shared loop -> `ray.tune.report` every epoch.

The plateau schedule and the early stopping live inside the trial (the Trainer), and their state is in
every checkpoint, so a restored trial continues exactly. The last checkpoint also carries the trial's
result rows, which the driver copies into the results folder when the trial completes.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from raybench import data as pbc
from raybench import results, train

STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"  # the epoch rows so far, small enough for the driver to read after a failure
RESULT_FILE = "result.pt"


class InjectedFailure(RuntimeError):
    """Raised on purpose by `inject_failure` to exercise the fault tolerance."""


def trial_spec(config: dict, specs: dict[str, train.Trial]) -> train.Trial:
    """The trial a Ray config names (the config holds only its trial_id; the specs travel by object store)."""
    try:
        return specs[config["trial_id"]]
    except KeyError:
        raise ValueError(f"trial {config['trial_id']!r} is not in the grid any more: resume with the grid (and --only/--set) "
                         "the run was started with") from None


def _report(row: dict, trainer: train.Trainer | None, *, result: results.TrialResult | None = None) -> None:
    """One `tune.report` with the epoch's metrics, and a checkpoint of the whole training state if `trainer` is given."""
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float, bool, str))}
    if trainer is None and result is None:
        tune.report(metrics)
        return
    directory = Path(tempfile.mkdtemp(prefix="raybench-ckpt-"))
    try:
        if trainer is not None:
            trainer.save(directory / STATE_FILE)
            (directory / HISTORY_FILE).write_text(json.dumps(trainer.history))
        if result is not None:
            torch.save(dataclasses.asdict(result), directory / RESULT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(directory)))
    finally:  # report() has persisted the checkpoint to the run's storage by now
        shutil.rmtree(directory, ignore_errors=True)


def _injected(trial: train.Trial, epoch: int, start_epoch: int) -> None:
    """`inject_failure=once:N` fails after epoch N unless resumed at or past it; `always:N` fails after every
    epoch from N on, so every retry fails too."""
    kind, _, at = trial.config.inject_failure.partition(":")
    if (kind == "always" and epoch >= int(at)) or (kind == "once" and epoch == int(at) and start_epoch < int(at)):
        raise InjectedFailure(f"injected failure after epoch {epoch} ({trial.config.inject_failure})")


def run_trial(config: dict, *, prepared: pbc.Prepared, specs: dict[str, train.Trial]) -> None:
    """The function trainable (wrapped by `tune.with_parameters` and `tune.with_resources` in run.py)."""
    trial = trial_spec(config, specs)
    cache_dir = config["cache_dir"] or train.default_cache_dir()  # resolved on the node that trains
    checkpoint = tune.get_checkpoint()
    finished = result_from_checkpoint(checkpoint)
    if finished is not None:  # it had finished before the driver noticed: report it again
        _report({"done": True, **_summary(finished)}, None, result=finished)
        return
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)

    node = ray.get_runtime_context().get_node_id()
    if ray.get_gpu_ids() and not torch.cuda.is_available():
        raise RuntimeError(f"{trial.trial_id}: Ray gave this trial a GPU on node {node}, but torch sees no CUDA device "
                           f"(torch {torch.__version__}); fix the node's driver or CUDA build rather than train on its CPU")

    def build(batch_size: int) -> train.Trainer:
        return train.build_trainer(trial, prepared, cache_dir=cache_dir, batch_size=batch_size)

    # Checkpointing the whole state every epoch would write 4.7 TB over the thesis grid (benchmarks/ray_overhead.py):
    # save at most every `checkpoint_every` seconds; a resumed trial repeats the epochs since (same seeds, same numbers).
    every, last_saved = config.get("checkpoint_every", 0.0), time.monotonic()

    def on_epoch_end(row: dict, trainer: train.Trainer, start_epoch: int) -> None:
        nonlocal last_saved
        row["node"] = node  # the Ray node that trained this epoch (it is kept in the history)
        due = time.monotonic() - last_saved >= every or bool(trial.config.inject_failure)
        _report({**row, "batch_size": trainer.batch_size, "done": False}, trainer if due else None)
        if due:
            last_saved = time.monotonic()
        _injected(trial, row["epoch"], start_epoch)

    trainer = train.fit_halving_on_oom(build, batch_size=state["batch_size"] if state else trial.batch_size, state=state,
                                       on_epoch_end=on_epoch_end, label=trial.trial_id)
    result = train.finish_trial(trainer, trial, prepared, cache_dir=cache_dir)
    result.trial["node"] = node
    _report({"done": True, **_summary(result)}, None, result=result)


def _summary(result: results.TrialResult) -> dict:
    row = result.trial
    keys = ("epochs", "best_epoch", "test_accuracy", "map_at_5", "map_at_100", "train_seconds", "batch_size")
    return {k: row[k] for k in keys}


def history_from_checkpoint(checkpoint: tune.Checkpoint | None) -> list[dict]:
    """The epoch rows a trial had trained by its last checkpoint ([] without one)."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as directory:
        path = Path(directory) / HISTORY_FILE
        return json.loads(path.read_text()) if path.exists() else []


def result_from_checkpoint(checkpoint: tune.Checkpoint | None) -> results.TrialResult | None:
    """The result rows a finished trial left in its last checkpoint (None when it has none)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        path = Path(directory) / RESULT_FILE
        if not path.exists():
            return None
        return results.TrialResult(**torch.load(path, weights_only=False))
