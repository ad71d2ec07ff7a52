"""The Ray Tune function trainable: a trial spec -> the shared loop -> `ray.tune.report` every epoch.

The plateau schedule and the early stopping live inside the trial (the Trainer), and their state is in
every checkpoint, so a restored trial continues exactly. The last checkpoint also carries the trial's
result rows, which the driver copies into the results folder when the trial completes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch
from ray import tune

from raybench import data as pbc
from raybench import grid, results
from raybench.loop import Trainer
from raybench.spec import Trial
from raybench.trial import Placement, TrialData, build_trainer, default_cache_dir, fit_halving_on_oom, test_trial

STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"  # the epoch rows so far, small enough for the driver to read after a failure
RESULT_DIR = "result"  # the finished trial's part files


class InjectedFailure(RuntimeError):
    """Raised on purpose by a FaultDrill."""


def trial_spec(config: dict, specs: dict[str, Trial]) -> Trial:
    """The trial a Ray config names (the config holds only its trial_id; the specs travel by object store)."""
    try:
        return specs[config["trial_id"]]
    except KeyError:
        raise ValueError(
            f"trial {config['trial_id']!r} is not in the grid any more: resume with the grid (and --only/--set) "
            "the run was started with"
        ) from None


def _report(row: dict, trainer: Trainer | None, *, result: results.TrialResult | None = None) -> None:
    """One `tune.report` of the epoch's metrics, with a checkpoint of the whole training state if `trainer` is given."""
    metrics = {k: v for k, v in row.items() if isinstance(v, (int, float, bool, str))}
    if trainer is None and result is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="raybench-ckpt-") as directory:
        write_checkpoint(Path(directory), trainer, result)
        # report() has persisted the checkpoint to the run's storage when it returns
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def write_checkpoint(directory: Path, trainer: Trainer | None, result: results.TrialResult | None) -> None:
    """A checkpoint's files: the training state and its epochs, or a finished trial's result rows and epochs."""
    if trainer is not None:
        trainer.save(directory / STATE_FILE)
        (directory / HISTORY_FILE).write_text(json.dumps(trainer.history))
    if result is not None:  # the result rows as Parquet, in the results' own schema (no pickle)
        results.write_trial(directory / RESULT_DIR, result)
        # the epochs too, so that a trial failing after this (a lost node, the driver) keeps its history
        history = [{k: v for k, v in row.items() if k != "trial_id"} for row in result.epochs]
        (directory / HISTORY_FILE).write_text(json.dumps(history))


@dataclasses.dataclass(frozen=True)
class FaultDrill:
    """A failure raised on purpose after an epoch, to exercise the fault tolerance (`run --inject-failure`).

    "once:N" fails after epoch N unless the trial was resumed at or past it; "always:N" fails after every
    epoch from N on, so every retry fails too; "kill:N" kills the process training it (SIGKILL; a data-parallel
    trial's last worker) after epoch N of its first attempt, as a lost node would (a killed process may not have
    had its last checkpoint registered, so "resumed at or past N" could never come); "oom:N" runs out of CUDA
    memory after epoch N at the trial's own batch size (a real allocation larger than the GPU; on the CPU, the error
    CUDA raises), so the batch halves.
    """

    kind: str
    epoch: int

    @classmethod
    def parse(cls, text: str) -> FaultDrill:
        kind, _, at = text.partition(":")
        if kind not in ("once", "always", "oom", "kill") or not at.isdigit():
            raise ValueError(f"a fault drill is 'once:N', 'always:N', 'oom:N' or 'kill:N' (N an epoch), got {text!r}")
        return cls(kind, int(at))

    def check(self, epoch: int, start_epoch: int, *, halved: bool = False) -> None:
        if self.kind == "oom":
            if epoch == self.epoch and not halved:
                out_of_memory(f"injected out of memory after epoch {epoch} (oom:{self.epoch})")
            return
        if self.kind == "kill" and epoch == self.epoch and start_epoch == 0:
            print(f"raybench: killed after epoch {epoch} (kill:{self.epoch})", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if (self.kind == "always" and epoch >= self.epoch) or (
            self.kind == "once" and epoch == self.epoch and start_epoch < self.epoch
        ):
            raise InjectedFailure(f"injected failure after epoch {epoch} ({self.kind}:{self.epoch})")


def out_of_memory(reason: str) -> None:
    """Raise CUDA's out-of-memory error: from the allocator itself on a GPU (twice its memory), else as CUDA would."""
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.empty(2 * total, dtype=torch.uint8, device="cuda")
    raise torch.cuda.OutOfMemoryError(f"CUDA out of memory ({reason})")


def tune_trial(
    config: dict,
    *,
    models: tuple = (),
    prepared: pbc.Prepared,
    specs: dict[str, Trial],
    drills: dict[str, FaultDrill] | None = None,
    cache_dir: str | None = None,
    checkpoint_every: float = 0.0,
    sharing: str = "",
    workers_on_gpus: bool = False,
    cpus_per_worker: float = 1.0,
    max_failures: int = 0,
) -> None:
    """The function Tune calls for each trial (wrapped by `tune.with_parameters` and `tune.with_resources` in
    service.driver).

    `config` is the trial's parameters (trial_id, model, tier, pretrained, seed and every option); the spec
    itself comes from `specs`. `models` are the grid's own model declarations: a fresh trial process's catalog
    holds raybench's only, so they are registered here first. The cache folder is resolved on the node that
    trains ("~" is its user's home). `sharing` says how a trial given part of a GPU shares it ("mps" or
    "time-sliced"), for its row's `gpu_sharing`. A data-parallel trial (`workers` > 1) runs its workers through Ray
    Train (service.data_parallel): on a GPU each (`workers_on_gpus`) or on `cpus_per_worker` CPUs each, its group
    restarted up to `max_failures` times.
    """
    grid.use_models(models)
    trial = trial_spec(config, specs)
    drill = (drills or {}).get(trial.trial_id)
    data = TrialData(prepared, Path(cache_dir or default_cache_dir()))
    checkpoint = tune.get_checkpoint()
    finished = result_from_checkpoint(checkpoint)
    if finished is not None:  # it had finished before the driver noticed: report it again
        report_finished(finished)
        return
    if trial.config.workers > 1:
        from raybench.service import data_parallel  # Ray Train: imported only by the trials that use it

        data_parallel.drive(
            trial,
            models=models,
            prepared=prepared,
            cache_dir=cache_dir,
            checkpoint_every=checkpoint_every,
            drill=drill,
            cpus=cpus_per_worker,
            gpu=workers_on_gpus and trial.config.device != "cpu",
            max_failures=max_failures,
        )
        return
    state, damage = restore_state(checkpoint)
    notice = f"its checkpoint is damaged ({damage}): training it again from epoch 1" if damage else ""
    if notice:
        print(f"raybench: {trial.trial_id}: {notice}", file=sys.stderr, flush=True)  # the trial's own log

    node = ray.get_runtime_context().get_node_id()
    if ray.get_gpu_ids() and not torch.cuda.is_available():
        raise RuntimeError(
            f"{trial.trial_id}: Ray gave this trial a GPU on node {node}, but torch sees no CUDA device "
            f"(torch {torch.__version__}); fix the node's driver or CUDA build rather than train on its CPU"
        )

    def build(batch_size: int, step: str | None = None) -> Trainer:
        return build_trainer(trial, data, batch_size=batch_size, step=step)

    gpu_fraction = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    if 0 < gpu_fraction < 1 and torch.cuda.is_available():
        # a packed trial that outgrows its share fails itself (and halves its batch), not its neighbours
        torch.cuda.set_per_process_memory_fraction(gpu_fraction)

    # Checkpointing the whole state every epoch would write 4.7 TB over the thesis grid (benchmarks/ray_overhead.py):
    # save at most every `checkpoint_every` seconds; a resumed trial repeats the epochs since (same seeds, same
    # numbers).
    every, last_saved = checkpoint_every, time.monotonic()

    def on_epoch_end(row: dict, trainer: Trainer, start_epoch: int) -> None:
        nonlocal last_saved
        nonlocal notice
        row["node"] = node  # the Ray node that trained this epoch (it is kept in the history)
        due = time.monotonic() - last_saved >= every or drill is not None
        said = {"notice": notice} if notice else {}  # once, to the driver's console (callbacks.ConsoleCallback)
        _report({**row, "batch_size": trainer.batch_size, "done": False, **said}, trainer if due else None)
        notice = ""
        if due:
            last_saved = time.monotonic()
        if drill is not None:
            drill.check(row["epoch"], start_epoch, halved=trainer.batch_size < trial.batch_size)

    trainer = fit_halving_on_oom(
        build,
        batch_size=state["batch_size"] if state else trial.batch_size,
        state=state,
        on_epoch_end=on_epoch_end,
        label=trial.trial_id,
    )
    placement = Placement(node, gpu_fraction, sharing if gpu_fraction < 1 else "")
    result = test_trial(trainer, trial, data, placement=placement)
    report_finished(result)


def report_finished(result: results.TrialResult) -> None:
    """The trial's last report: its summary, and its result rows in its checkpoint (the driver saves them)."""
    _report({"done": True, **_summary(result)}, None, result=result)


def _summary(result: results.TrialResult) -> dict:
    return {k: result.trial[k] for k in results.SUMMARY_COLUMNS}


def restore_state(checkpoint: tune.Checkpoint | None) -> tuple[dict | None, str]:
    """The training state in a checkpoint, and "" or why it could not be read (a truncated or damaged state.pt:
    the trial then trains again from epoch 1, with the same seeds and so the same numbers)."""
    if checkpoint is None:
        return None, ""
    with checkpoint.as_directory() as directory:
        path = Path(directory) / STATE_FILE
        try:
            return torch.load(path, map_location="cpu", weights_only=True), ""
        except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for a damaged file
            return (
                None,
                f"{path.name}: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}",
            )


def history_from_checkpoint(checkpoint: tune.Checkpoint | None) -> list[dict]:
    """The epoch rows a trial had trained by its last checkpoint ([] without one, or when it is damaged)."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as directory:
        path = Path(directory) / HISTORY_FILE
        try:
            return json.loads(path.read_text()) if path.exists() else []
        except (OSError, ValueError):
            return []


def result_from_checkpoint(checkpoint: tune.Checkpoint | None) -> results.TrialResult | None:
    """The result rows a finished trial left in its last checkpoint (None when it has none, or they are damaged:
    the trial then trains again)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        try:
            return results.read_trial(Path(directory) / RESULT_DIR)
        except (OSError, ValueError, KeyError) as error:  # pyarrow's ArrowInvalid is a ValueError
            print(f"raybench: the result rows in {directory} are damaged ({error}); ignored", file=sys.stderr)
            return None
