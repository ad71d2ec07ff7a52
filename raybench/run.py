"""Run a grid of trials with Ray Tune: `python -m raybench.run grids/thesis.py`.

Results land in RESULTS/NAME/: trials, epochs, predictions, manifest and plan as Parquet, each trial's
rows written as soon as it ends. Ray's own experiment folder (checkpoints, logs) is RESULTS/NAME/ray/
unless --storage points elsewhere (NFS, s3://bucket/prefix on a cluster).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import ray
from ray import tune

from raybench import data as pbc
from raybench import grid as grids
from raybench import models, resources, results, train, trainable


def plan_rows(grid: grids.Grid, *, gpu_memory_gb: float | None, cpus_per_trial: float = 1.0) -> list[dict]:
    """One row per trial: what it trains and what it will ask the scheduler for."""
    rows = []
    for trial in grid.trials:
        total, trainable_count = models.parameter_counts(trial.model, pretrained=trial.pretrained, image_size=trial.config.image_size)
        need = resources.trial_resources(trial, gpu_memory_gb=gpu_memory_gb, cpus=cpus_per_trial)
        rows.append({**trial.columns(), "parameters": total, "trainable_parameters": trainable_count,
                     "cpu": need["cpu"], "gpu": need["gpu"], "gpu_memory_gb": round(resources.estimate_gpu_memory_gb(trial), 2)})
    return rows


def print_table(frame: pd.DataFrame) -> None:
    with pd.option_context("display.max_rows", None, "display.width", 250, "display.max_columns", None):
        print(frame.to_string(index=False), flush=True)


def check_placeable(plan: pd.DataFrame) -> None:
    """Refuse at once a trial no node can ever hold (Ray would leave it PENDING forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for row in plan.itertuples():
        if not any(n.get("CPU", 0) >= row.cpu and n.get("GPU", 0) >= row.gpu for n in nodes):
            have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes)
            raise ValueError(f"trial {row.trial_id} needs {row.cpu:g} CPU and {row.gpu:g} GPU on one node, but the "
                             f"cluster's nodes have {have}; lower --cpus-per-trial, run on a GPU cluster, or --set device=cpu")


class ResultsCallback(tune.Callback):
    """Copies each finished trial's rows into the results folder at once, and records failures."""

    def __init__(self, out: Path, manifest: pd.DataFrame, specs: dict[str, train.Trial], *, mirror: str | None = None) -> None:
        self.out, self.manifest, self.specs, self.mirror = out, manifest, specs, mirror

    def save(self, result: results.TrialResult) -> None:
        results.write_results(self.out, [result])
        if self.mirror:
            results.mirror(self.out, self.mirror)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trainable.result_from_checkpoint(trial.checkpoint)
        if result is None:
            self.save_failure(trial, "the trial ended without results in its last checkpoint")
            return
        self.save(result)
        row = result.trial
        print(f"finished {row['model']} {row['tier']}{' pretrained' if row['pretrained'] else ''} seed {row['seed']}: "
              f"{row['epochs']} epochs, test accuracy {row['test_accuracy']:.3f}, {row['train_seconds']:.1f}s", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_error()
        self.save_failure(trial, str(error) if error is not None else "unknown error (see the trial's error.txt)")

    def save_failure(self, trial, message: str) -> None:
        """A failed row, with the epochs the trial had trained by its last checkpoint."""
        spec = trainable.trial_spec(trial.config, self.specs)
        history = trainable.history_from_checkpoint(trial.checkpoint)
        row = {**spec.columns(), "epochs": len(history)}
        self.save(results.failed_result(row, message[-4000:], [{"trial_id": spec.trial_id, **h} for h in history]))
        print(f"FAILED {spec.trial_id}: {message.strip().splitlines()[-1] if message.strip() else message}", flush=True)


def mirror_uri(storage: str | None, name: str) -> str | None:
    """Where the consolidated results are copied with --storage: STORAGE/NAME/results."""
    return f"{storage.rstrip('/')}/{name}/results" if storage else None


def build_tuner(grid: grids.Grid, prepared: pbc.Prepared, *, out: Path, args: argparse.Namespace, gpu_gb: float | None,
                name: str) -> tune.Tuner:
    storage = args.storage or str(out / "ray")

    specs = {t.trial_id: t for t in grid.trials}

    def trial_resources(config: dict) -> dict:
        return resources.trial_resources(trainable.trial_spec(config, specs), gpu_memory_gb=gpu_gb, cpus=args.cpus_per_trial)

    fn = tune.with_resources(tune.with_parameters(trainable.run_trial, prepared=prepared, specs=specs), trial_resources)
    run_config = tune.RunConfig(
        name=name, storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[ResultsCallback(out, prepared.manifest, specs, mirror=mirror_uri(args.storage, name))],
    )
    experiment = f"{storage.rstrip('/')}/{name}"
    if args.resume and tune.Tuner.can_restore(experiment):
        print(f"resuming {experiment}", flush=True)
        return tune.Tuner.restore(experiment, trainable=fn, resume_unfinished=True, resume_errored=True)
    done = {tid for tid, status in results.finished_trials(out).items() if status == "ok"}
    todo = [t for t in grid.trials if t.trial_id not in done]
    space = {
        "trial_id": tune.grid_search([t.trial_id for t in todo]),
        "cache_dir": args.cache, "checkpoint_every": args.checkpoint_every,
    }
    tune_config = tune.TuneConfig(
        max_concurrent_trials=args.max_concurrent or None, reuse_actors=True,
        trial_name_creator=lambda t: t.config["trial_id"], trial_dirname_creator=lambda t: t.config["trial_id"],
    )
    return tune.Tuner(fn, param_space=space, tune_config=tune_config, run_config=run_config)


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m raybench.run", description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="grid file, e.g. grids/thesis.py or grids/quickstart.py")
    parser.add_argument("--data", help="PBC_dataset_normal_DIB folder, its parent or the .zip (default: the grid's, else the embedded sample)")
    parser.add_argument("--name", help="results subfolder (default: the grid's name)")
    parser.add_argument("--results", default="results", help="results folder (default: %(default)s)")
    parser.add_argument("--storage", help="Ray storage for checkpoints and logs: a local/NFS path or s3://bucket/prefix "
                                          "(default: RESULTS/NAME/ray); a multi-node cluster needs shared storage")
    parser.add_argument("--only", metavar="REGEX", help="run only the trials whose name matches, e.g. 'resnet_.*-tiny'")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"training option for every trial; keys: {', '.join(train.config_keys())}")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and write plan.parquet, train nothing")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run of the same grid and name")
    parser.add_argument("--max-concurrent", type=int, default=0, help="at most N trials at once (default: as resources allow)")
    parser.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                        help="checkpoint a trial's whole state at most this often (0: every epoch); a resumed trial "
                             "repeats the epochs since its last checkpoint, with the same numbers (default: %(default)s)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a failing trial from its last checkpoint (default: %(default)s)")
    parser.add_argument("--address", help="join a running Ray cluster ('auto' on a cluster's head node); default: start Ray here")
    parser.add_argument("--num-cpus", type=int, help="CPUs of a Ray started here (default: all)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs each trial asks for (default: %(default)s)")
    parser.add_argument("--gpu-memory-gb", type=float, help="memory of one GPU, for fractional allocation (default: detected)")
    parser.add_argument("--cache", help="decode-once image cache on each node (default: ~/.cache/raybench of the node's user)")
    return parser, parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    try:
        grid = grids.load_grid(args.grid)
        if args.only:
            grid = grid.select(args.only)
        if args.set:
            grid = grid.with_options(train.parse_overrides(args.set))
            for trial in grid.trials:
                models.check_image_size(trial.model, trial.config.image_size)
        split_seeds = {t.config.split_seed for t in grid.trials}
        if len(split_seeds) > 1:
            raise ValueError(f"one run draws one set of tiers and splits, but the grid asks for split_seed {sorted(split_seeds)}: run them separately")
    except ValueError as error:
        parser.error(str(error))
    name = args.name or grid.name
    out = Path(args.results).resolve() / name
    gpu_gb = args.gpu_memory_gb or resources.local_gpu_memory_gb()

    plan = pd.DataFrame(plan_rows(grid, gpu_memory_gb=gpu_gb, cpus_per_trial=args.cpus_per_trial))
    if args.dry_run:
        print_table(plan)
        results.write_plan(out, plan)
        print(f"{len(plan)} trials planned -> {out / 'plan.parquet'}")
        return 0
    if not args.resume and results.finished_trials(out):
        parser.error(f"{out} already holds results of a run: add --resume to continue it, or choose another --name")
    if args.resume and (out / "plan.parquet").exists():
        before = pd.read_parquet(out / "plan.parquet")
        if "options" not in before or sorted(zip(before.trial_id, before.options)) != sorted(zip(plan.trial_id, plan.options)):
            parser.error(f"--resume: the trials or their options differ from those of the run in {out}; resume with the "
                         "same grid, --only and --set, or start a new run with another --name")
    try:
        for model in sorted({t.model for t in grid.trials if t.pretrained}):
            models.imagenet_weights(model)  # fetched once here, into torchvision's cache, or a clear error now
    except FileNotFoundError as error:
        parser.error(str(error))
    try:
        used = sorted({t.tier for t in grid.trials})
        prepared = pbc.prepare(args.data or grid.data, tiers={t: grid.tiers[t] for t in used}, seed=split_seeds.pop())
    except ValueError as error:
        parser.error(str(error))
    print(prepared.report, flush=True)
    results.write_plan(out, plan)
    results.write_manifest(out, prepared.manifest)

    # each epoch checkpoints, so Ray snapshots often; that is intended here, not a warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray.init(address=args.address, num_cpus=None if args.address else args.num_cpus)
    if gpu_gb is None and ray.cluster_resources().get("GPU", 0) > 0:  # a cluster whose GPUs are on other nodes
        gpu_gb = ray.get(ray.remote(num_gpus=1)(resources.local_gpu_memory_gb).remote())
        plan = pd.DataFrame(plan_rows(grid, gpu_memory_gb=gpu_gb, cpus_per_trial=args.cpus_per_trial))
        results.write_plan(out, plan)
    try:
        check_placeable(plan)
    except ValueError as error:
        ray.shutdown()
        parser.error(str(error))
    started = time.time()
    tuner = build_tuner(grid, prepared, out=out, args=args, gpu_gb=gpu_gb, name=name)
    tuner.fit()
    results.consolidate(out, manifest=prepared.manifest)
    if args.storage:
        results.mirror(out, mirror_uri(args.storage, name))
    trials = pd.read_parquet(out / "trials.parquet")
    print(f"\n{len(trials)} trials in {time.time() - started:.0f}s -> {out}")
    print_table(trials[["model", "tier", "pretrained", "seed", "status", "epochs", "best_epoch", "test_accuracy",
                        "map_at_5", "train_seconds", "batch_size"]])
    return 0 if (trials.status == "ok").all() else 1


if __name__ == "__main__":
    sys.exit(main())
