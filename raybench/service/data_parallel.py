"""A data-parallel trial (`workers` > 1, §7.2): its Tune trial drives a Ray Train `TorchTrainer` whose workers run
the shared loop together (raybench.distributed), as Ray's guide to Train inside Tune does it.

The Tune trial holds almost nothing itself (DRIVER: a megabyte of memory, no CPU, so that it never keeps its own
workers from being placed); Ray Train asks Ray for the whole group at once, one placement group of a bundle per
worker (a CPU each, or a whole GPU each: NCCL cannot put two workers on one GPU). Every epoch's row reaches Tune,
and so raybench's console, results and curves, through Ray's `TuneReportCallback`; the workers' checkpoints are
Ray Train's (rank 0's training state, in the trial's own folder), so a killed worker's group restarts from the
last one (`--max-failures` times, and the console says so), and `--resume` continues a data-parallel trial as it
does any other. When the trial ends, its result rows go into a Tune checkpoint exactly as a one-process trial's do.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import ray
import ray.train
import ray.train.torch
import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from raybench import data as pbc
from raybench import distributed, grid
from raybench.loop import fit
from raybench.service import trainable
from raybench.spec import Trial
from raybench.trial import Placement, TrialData, build_trainer, default_cache_dir, test_trial

DRIVER = {"cpu": 0, "memory": 1 << 20}  # the Tune trial's own bundle: it only waits on its workers
RUN_NAME = "data_parallel"  # Ray Train's run folder inside the Tune trial's, with the Tune trial's id


def worker_resources(*, cpus: float, gpu: bool) -> dict[str, float]:
    """One worker's bundle: `cpus` CPUs, and a whole GPU on GPUs."""
    return {"CPU": cpus, **({"GPU": 1.0} if gpu else {})}


def drive(
    trial: Trial,
    *,
    models: tuple,
    prepared: pbc.Prepared,
    cache_dir: str | None,
    checkpoint_every: float,
    drill: trainable.FaultDrill | None,
    cpus: float,
    gpu: bool,
    max_failures: int,
) -> None:
    """Run the trial on `trial.config.workers` Ray Train workers from inside its Tune trial, then report its result
    rows to Tune (the one checkpoint Tune keeps for it)."""
    context = tune.get_context()
    storage = str(Path(context.get_trial_dir()))
    run_config = ray.train.RunConfig(
        name=f"{RUN_NAME}-{context.get_trial_id()}",  # the same across --resume, new for a new run
        storage_path=storage,
        callbacks=[TuneReportCallback()],
        failure_config=ray.train.FailureConfig(max_failures=max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
    )
    trainer = ray.train.torch.TorchTrainer(
        work,
        train_loop_config={
            "trial": trial,
            "models": models,
            "prepared": prepared,
            "cache_dir": cache_dir,
            "checkpoint_every": checkpoint_every,
            "drill": drill,
            "gpu": gpu,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=trial.config.workers, use_gpu=gpu, resources_per_worker=worker_resources(cpus=cpus, gpu=gpu)
        ),
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if gpu else "gloo"),
        run_config=run_config,
    )
    try:
        outcome = trainer.fit()
    except Exception:
        keep_history(Path(storage) / run_config.name)
        raise
    finished = trainable.result_from_checkpoint(outcome.checkpoint)
    if finished is None:
        raise RuntimeError(f"{trial.trial_id}: its workers ended without the result rows in their last checkpoint")
    trainable.report_finished(finished)


def keep_history(run_folder: Path) -> None:
    """Before a failed trial ends: the epochs of its workers' last checkpoint, in a Tune checkpoint, for its failed
    row (callbacks.ResultsCallback.save_failure reads them there)."""
    newest = max(run_folder.glob("checkpoint_*/" + trainable.HISTORY_FILE), key=lambda p: p.parent.name, default=None)
    if newest is None:
        return
    with tempfile.TemporaryDirectory(prefix="raybench-ckpt-") as directory:
        shutil.copy(newest, Path(directory) / trainable.HISTORY_FILE)
        tune.report({"done": False}, checkpoint=tune.Checkpoint.from_directory(directory))


def work(config: dict) -> None:
    """One worker of a data-parallel trial: the shared loop on its part of every batch, rank 0 checkpointing."""
    grid.use_models(config["models"])
    trial, drill = config["trial"], config["drill"]
    group = distributed.Group.current()
    data = TrialData(config["prepared"], Path(config["cache_dir"] or default_cache_dir()))
    device = ray.train.torch.get_device() if config["gpu"] else torch.device("cpu")  # the GPU Ray Train gave it
    if device.type == "cuda":
        torch.cuda.set_device(device)
    state, damage = trainable.restore_state(ray.train.get_checkpoint())
    trainer = build_trainer(trial, data, group=group, device=device)
    if state is not None:
        trainer.load_state_dict(state)
    start, node = trainer.epoch, ray.get_runtime_context().get_node_id()
    every, last_saved = config["checkpoint_every"], time.monotonic()
    # said once, to the driver's console (callbacks.ConsoleCallback): a restarted group, a damaged checkpoint
    notice = f"its {group.world} workers go on from the checkpoint of epoch {start}" if start else ""
    notice = f"its checkpoint is damaged ({damage}): training it again from epoch 1" if damage else notice

    def on_epoch_end(row: dict, trainer) -> None:
        nonlocal last_saved, notice
        row["node"] = node
        due = time.monotonic() - last_saved >= every or drill is not None
        metrics = {**row, "batch_size": trainer.batch_size, "done": False, **({"notice": notice} if notice else {})}
        _report(metrics, trainer if due and group.rank == 0 else None)
        notice = ""
        if due:
            last_saved = time.monotonic()
        if drill is not None and (drill.kind != "kill" or group.rank == group.world - 1):  # kill: the last worker
            drill.check(row["epoch"], start)

    fit(trainer, on_epoch_end=on_epoch_end)
    placement = Placement(node, float(device.type == "cuda"), "")
    result = test_trial(trainer, trial, data, placement=placement)
    # the rows travel to the Tune trial in rank 0's last checkpoint; this report is no epoch of the trial's
    _report({"testing": True, "done": False}, None, result=result if group.rank == 0 else None)


def _report(metrics: dict, trainer, *, result=None) -> None:
    """Every worker reports (Ray Train waits for all of them); rank 0 with the checkpoint, if one is due."""
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool, str))}
    if trainer is None and result is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="raybench-ckpt-") as directory:
        trainable.write_checkpoint(Path(directory), trainer, result)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
