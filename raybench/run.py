"""Run a grid of trials with Ray Tune: `python -m raybench.run grids/thesis.py`.

Results land in RESULTS/NAME/: trials, epochs, predictions, manifest and plan as Parquet, each trial's
rows written as soon as it ends. Ray's own experiment folder (checkpoints, logs) is RESULTS/NAME/ray/
unless --storage points elsewhere (NFS, s3://bucket/prefix on a cluster).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import time
from pathlib import Path

import pandas as pd
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from raybench import callbacks, console, models, mps, resources, results, spec, trainable
from raybench import data as pbc
from raybench import grid as grids


def plan_rows(
    grid: grids.Grid, *, gpu_memory_gb: float | None, cpus_per_trial: float = 1.0, share_gpu: bool = False
) -> list[dict]:
    """One row per trial: what it trains and what it will ask the scheduler for."""
    rows = []
    for trial in grid.trials:
        total, trainable_count = models.parameter_counts(
            trial.model, pretrained=trial.pretrained, image_size=trial.config.image_size
        )
        need = resources.trial_resources(trial, gpu_memory_gb=gpu_memory_gb, cpus=cpus_per_trial, share_gpu=share_gpu)
        rows.append(
            {
                **trial.columns(),
                "parameters": total,
                "trainable_parameters": trainable_count,
                "cpu": need["cpu"],
                "gpu": need["gpu"],
                "gpu_memory_gb": round(resources.estimate_gpu_memory_gb(trial), 2),
            }
        )
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
            raise ValueError(
                f"trial {row.trial_id} needs {row.cpu:g} CPU and {row.gpu:g} GPU on one node, but the "
                f"cluster's nodes have {have}; lower --cpus-per-trial, run on a GPU cluster, or --set device=cpu"
            )


def mirror_uri(storage: str | None, name: str) -> str | None:
    """Where the consolidated results are copied with --storage: STORAGE/NAME/results."""
    return f"{storage.rstrip('/')}/{name}/results" if storage else None


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How the trials are run (not what they train): storage, resources, checkpoints, retries, output."""

    storage: str | None = None
    cpus_per_trial: float = 1.0
    cache: str | None = None
    checkpoint_every: float = 60.0
    max_failures: int = 2
    max_concurrent: int = 0
    resume: bool = False
    verbose: bool = False
    mlflow: str | None = None
    gpu_sharing: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def param_space(trials: list[spec.Trial]) -> dict:
    """One grid axis over the trial ids; model, tier, pretrained, seed and every option as config keys beside it,
    so that Tune's dataframes, the dashboard, TensorBoard's HParams and MLflow show and filter them."""
    values = {t.trial_id: {**parameters(t)} for t in trials}
    keys = list(next(iter(values.values()))) if values else []
    space = {"trial_id": tune.grid_search(list(values))}
    for key in keys:
        space[key] = tune.sample_from(lambda config, key=key: values[config["trial_id"]][key])
    return space


def parameters(trial: spec.Trial) -> dict:
    """A trial's identity and options as flat config values."""
    return {
        "model": trial.model,
        "tier": trial.tier,
        "pretrained": trial.pretrained,
        "seed": trial.seed,
        **dataclasses.asdict(trial.config),
        "batch_size": trial.batch_size,
    }


def build_tuner(
    setup: Setup, prepared: pbc.Prepared, options: RunOptions, *, gpu_gb: float | None, sharing: str = ""
) -> tune.Tuner:
    """The Tuner over the grid's unfinished trials, or the restored one of an interrupted run (`options.resume`)."""
    out, name = setup.out, setup.name
    ray_storage = options.storage or str(out / "ray")
    specs = {t.trial_id: t for t in setup.grid.trials}

    def trial_resources(config: dict) -> dict:
        trial = trainable.trial_spec(config, specs)
        return resources.trial_resources(
            trial, gpu_memory_gb=gpu_gb, cpus=options.cpus_per_trial, share_gpu=sharing != ""
        )

    fn = tune.with_parameters(
        trainable.run_trial,
        prepared=prepared,
        specs=specs,
        drills=setup.drills,
        cache_dir=options.cache,
        checkpoint_every=options.checkpoint_every,
        gpu_sharing=sharing,
    )
    fn = tune.with_resources(fn, trial_resources)
    done = {tid for tid, status in results.finished_trials(out).items() if status == "ok"}
    train_images = prepared.manifest.query("split == 'train'").groupby("tier").size().to_dict()
    progress = console.GridProgress(setup.plan, train_images=train_images)
    for trial_id in done:
        progress.trial_ended(trial_id, "ok")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # Ray's TensorBoard logger: ours replaces it
    if not options.verbose:  # Tune's newer console output prints its boxes whatever the verbosity; the older is quiet
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    run_callbacks = [
        callbacks.ResultsCallback(out, specs, mirror=mirror_uri(options.storage, name)),
        callbacks.ConsoleCallback(progress),
        callbacks.CurvesCallback(out, specs),
        CSVLoggerCallback(),
        JsonLoggerCallback(),
    ]
    if options.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        run_callbacks.append(MLflowLoggerCallback(tracking_uri=options.mlflow, experiment_name=name))
    run_config = tune.RunConfig(
        name=name,
        storage_path=ray_storage,
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=run_callbacks,
        verbose=None if options.verbose else 0,
        log_to_file=True,  # each trial's stdout and stderr, in its folder under the storage
    )
    experiment = f"{ray_storage.rstrip('/')}/{name}"
    if options.resume and tune.Tuner.can_restore(experiment):
        print(f"resuming {experiment}", flush=True)
        return tune.Tuner.restore(experiment, trainable=fn, resume_unfinished=True, resume_errored=True)
    todo = [t for t in setup.grid.trials if t.trial_id not in done]
    tune_config = tune.TuneConfig(
        max_concurrent_trials=options.max_concurrent or None,
        reuse_actors=True,
        trial_name_creator=lambda t: t.config["trial_id"],
        trial_dirname_creator=lambda t: t.config["trial_id"],
    )
    return tune.Tuner(fn, param_space=param_space(todo), tune_config=tune_config, run_config=run_config)


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m raybench.run", description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="grid file, e.g. grids/thesis.py or grids/quickstart.py")
    parser.add_argument(
        "--data",
        help="PBC_dataset_normal_DIB folder, its parent or the .zip (default: the grid's, else the embedded sample)",
    )
    parser.add_argument("--name", help="results subfolder (default: the grid's name)")
    parser.add_argument("--results", default="results", help="results folder (default: %(default)s)")
    parser.add_argument(
        "--storage",
        help="Ray storage for checkpoints and logs: a local/NFS path or s3://bucket/prefix "
        "(default: RESULTS/NAME/ray); a multi-node cluster needs shared storage",
    )
    parser.add_argument("--only", metavar="REGEX", help="run only the trials whose name matches, e.g. 'resnet_.*-tiny'")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"training option for every trial; keys: {', '.join(spec.config_keys())}",
    )
    parser.add_argument(
        "--inject-failure",
        action="append",
        default=[],
        metavar="REGEX=once:N|always:N",
        help="fault drill: the trials whose name matches fail after epoch N, once (then resume) or on every retry",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and each tier's splits per class (preparing the data), write plan.parquet, train nothing",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run of the same grid and name")
    parser.add_argument(
        "--max-concurrent", type=int, default=0, help="at most N trials at once (default: as resources allow)"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="checkpoint a trial's whole state at most this often (0: every epoch); a resumed trial "
        "repeats the epochs since its last checkpoint, with the same numbers (default: %(default)s)",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="retries of a failing trial from its last checkpoint (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="show Ray's and Tune's own output as well")
    parser.add_argument(
        "--gpu-sharing",
        choices=("auto", "mps", "always", "off"),
        default="auto",
        help="pack several trials on one GPU: under NVIDIA MPS (auto: when MPS can run, started or joined here; "
        "mps: required), always (without MPS: measured not to pay), or off (a whole GPU each) (default: auto)",
    )
    parser.add_argument(
        "--mlflow",
        metavar="TRACKING_URI",
        help="also log every trial's parameters and curves to this MLflow tracking server (pip install mlflow)",
    )
    parser.add_argument(
        "--address", help="join a running Ray cluster ('auto' on a cluster's head node); default: start Ray here"
    )
    parser.add_argument("--num-cpus", type=int, help="CPUs of a Ray started here (default: all)")
    parser.add_argument(
        "--cpus-per-trial", type=float, default=1.0, help="CPUs each trial asks for (default: %(default)s)"
    )
    parser.add_argument(
        "--gpu-memory-gb", type=float, help="memory of one GPU, for fractional allocation (default: detected)"
    )
    parser.add_argument(
        "--cache", help="decode-once image cache on each node (default: ~/.cache/raybench of the node's user)"
    )
    return parser, parser.parse_args(argv)


def fault_drills(grid: grids.Grid, items: list[str]) -> dict[str, trainable.FaultDrill]:
    """--inject-failure REGEX=once:N|always:N -> {trial_id: drill} for the trials whose name matches."""
    drills = {}
    for item in items:
        pattern, sep, text = item.rpartition("=")
        if not sep:
            raise ValueError(f"--inject-failure expects REGEX=once:N or REGEX=always:N, got {item!r}")
        drill = trainable.FaultDrill.parse(text)
        drills.update({t.trial_id: drill for t in grid.select(pattern).trials})
    return drills


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run needs before Ray starts: the grid, where results go, the plan and the drills."""

    grid: grids.Grid
    name: str
    out: Path
    gpu_gb: float | None
    plan: pd.DataFrame
    drills: dict[str, trainable.FaultDrill]


def check_arguments(args: argparse.Namespace) -> None:
    """The run's own numbers: counts at least 0 (or 1), times finite."""
    checks = (
        ("--max-concurrent", args.max_concurrent, 0),
        ("--max-failures", args.max_failures, -1),
        ("--cpus-per-trial", args.cpus_per_trial, 0.01),
        ("--num-cpus", args.num_cpus, 1),
        ("--checkpoint-every", args.checkpoint_every, 0),
        ("--gpu-memory-gb", args.gpu_memory_gb, 0.01),
    )
    for flag, value, least in checks:
        if value is not None and not (math.isfinite(value) and value >= least):
            raise ValueError(f"{flag} must be a finite number of at least {least:g}, got {value:g}")


DATA_OPTIONS = ("split_seed", "split_rule", "dedupe")  # the data is prepared once per run: every trial shares these


def prepare_data(grid: grids.Grid, data: str | None, *, omit_too_big: bool = False) -> pbc.Prepared:
    """The grid's data (`data`, else the grid's, else the embedded sample) with the tiers its trials use, drawn with
    their data options (the same for every trial: set_up checks it)."""
    config = grid.trials[0].config
    return pbc.prepare(
        data or grid.data,
        tiers={t: grid.tiers[t] for t in sorted({t.tier for t in grid.trials})},
        seed=config.split_seed,
        split_rule=config.split_rule,
        dedupe=config.dedupe,
        omit_too_big=omit_too_big,
    )


def set_up(args: argparse.Namespace) -> Setup:
    """Load and check everything that can be wrong before anything starts; a ValueError names the problem."""
    check_arguments(args)
    grid = grids.load_grid(args.grid)
    if args.only:
        grid = grid.select(args.only)
    if args.set:
        grid = grid.with_options(spec.parse_overrides(args.set))
    for option in DATA_OPTIONS:
        values = {getattr(t.config, option) for t in grid.trials}
        if len(values) > 1:
            raise ValueError(
                f"one run draws one set of tiers and splits, but the grid asks for {option} "
                f"{sorted(values, key=str)}: run them separately"
            )
    name = args.name or grid.name
    gpu_gb = args.gpu_memory_gb or resources.local_gpu_memory_gb()
    # a dry run starts nothing: it plans with the MPS daemon only if one already runs here
    share = args.gpu_sharing == "always" or (args.gpu_sharing in ("auto", "mps") and mps.running())
    plan = pd.DataFrame(plan_rows(grid, gpu_memory_gb=gpu_gb, cpus_per_trial=args.cpus_per_trial, share_gpu=share))
    out = Path(args.results).expanduser().resolve() / name  # "~/results" on a cluster is the head node's home
    return Setup(grid, name, out, gpu_gb, plan, fault_drills(grid, args.inject_failure))


def check_resume(setup: Setup, *, resume: bool) -> None:
    """A new run must not land on an old one's results; a resumed one must be the same trials with the same options."""
    out, plan = setup.out, setup.plan
    if not resume and results.finished_trials(out):
        raise ValueError(f"{out} already holds results of a run: add --resume to continue it, or choose another --name")
    if resume and (out / "plan.parquet").exists():
        before = pd.read_parquet(out / "plan.parquet")
        if "options" not in before or sorted(zip(before.trial_id, before.options, strict=True)) != sorted(
            zip(plan.trial_id, plan.options, strict=True)
        ):
            raise ValueError(
                f"--resume: the trials or their options differ from those of the run in {out}; resume "
                "with the same grid, --only and --set, or start a new run with another --name"
            )


def check_same_data(out: Path, prepared: pbc.Prepared, *, resume: bool) -> None:
    """A resumed run must train on the data its finished trials used (the same images, tiers and splits)."""
    if not resume or not (out / "manifest.parquet").is_file():
        return
    before = pd.read_parquet(out / "manifest.parquet")
    if results.data_fingerprint(before) != results.data_fingerprint(prepared.manifest):
        raise ValueError(
            f"--resume: the data at {prepared.root} is not the data of the run in {out} (other images, "
            "tiers or splits); resume with the run's --data, or start a new run with another --name"
        )


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    try:
        setup = set_up(args)
        if args.dry_run:
            print_table(setup.plan)
            results.write_plan(setup.out, setup.plan)
            prepared = prepare_data(setup.grid, args.data, omit_too_big=True)  # the splits, before any training
            print(prepared.report)
            if prepared.report.omitted_tiers:
                print(
                    f"a run would stop here: tier(s) {', '.join(prepared.report.omitted_tiers)} need more images than "
                    f"the {prepared.report.usable} of {prepared.root}; pass --data (the full dataset: "
                    "python -m raybench.data download DEST)"
                )
            print(f"{len(setup.plan)} trials planned -> {setup.out / 'plan.parquet'}")
            return 0
        check_resume(setup, resume=args.resume)
        for model in sorted({t.model for t in setup.grid.trials if t.pretrained}):
            models.imagenet_weights(model)  # fetched once here, into torchvision's cache, or a clear error now
        prepared = prepare_data(setup.grid, args.data)
        check_same_data(setup.out, prepared, resume=args.resume)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    print(prepared.report, flush=True)
    return train_grid(setup, prepared, args)


def train_grid(setup: Setup, prepared: pbc.Prepared, args: argparse.Namespace) -> int:
    """Start (or join) Ray, run the trials through Tune, consolidate the results and print their summary."""
    out, plan, gpu_gb, name = setup.out, setup.plan, setup.gpu_gb, setup.name
    options = RunOptions.from_args(args)
    results.write_plan(out, plan)
    results.write_manifest(out, prepared.manifest)
    # each epoch checkpoints, so Ray snapshots often; that is intended here, not a warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray's own output (the workers' logs, its banner) stays in its log files unless --verbose
    ray.init(
        address=args.address,
        num_cpus=None if args.address else args.num_cpus,
        log_to_driver=options.verbose,
        logging_level=logging.INFO if options.verbose else logging.WARNING,
    )
    if gpu_gb is None and ray.cluster_resources().get("GPU", 0) > 0:  # a cluster whose GPUs are on other nodes
        gpu_gb = ray.get(ray.remote(num_gpus=1)(resources.local_gpu_memory_gb).remote())
    local_gpu = resources.local_gpu_memory_gb() is not None
    sharing = gpu_sharing(options.gpu_sharing, local_gpu=local_gpu, cluster_gpu=gpu_gb is not None)
    if gpu_gb is not None:
        print(f"GPU sharing: {sharing.reason}", flush=True)
        if options.gpu_sharing == "mps" and sharing.label != "mps":
            ray.shutdown()
            print(f"python -m raybench.run: error: --gpu-sharing mps, but {sharing.reason}", file=sys.stderr)
            return 2
    share = sharing.label != ""
    plan = pd.DataFrame(
        plan_rows(setup.grid, gpu_memory_gb=gpu_gb, cpus_per_trial=args.cpus_per_trial, share_gpu=share)
    )
    setup = dataclasses.replace(setup, plan=plan)
    results.write_plan(out, plan)
    try:
        check_placeable(plan)
    except ValueError as error:
        ray.shutdown()
        print(f"python -m raybench.run: error: {error}", file=sys.stderr)
        return 2
    started = time.time()
    print(
        f"{len(plan)} trials; results -> {out}\ncurves: tensorboard --logdir {out / callbacks.TENSORBOARD_DIR}",
        flush=True,
    )
    try:
        build_tuner(setup, prepared, options, gpu_gb=gpu_gb, sharing=sharing.label).fit()
    finally:
        ray.shutdown()
        if sharing.mps is not None:
            mps.stop(sharing.mps)
    results.consolidate(out, manifest=prepared.manifest)
    copied = copy_results(out, mirror_uri(options.storage, name))
    trials = pd.read_parquet(out / "trials.parquet")
    print(f"\n{len(trials)} trials in {time.time() - started:.0f}s -> {out}")
    columns = [
        "model",
        "tier",
        "pretrained",
        "seed",
        "status",
        "epochs",
        "best_epoch",
        "test_accuracy",
        "map_at_5",
        "train_seconds",
        "batch_size",
    ]
    print_table(trials[columns])
    return 0 if (trials.status == "ok").all() and copied else 1


@dataclasses.dataclass(frozen=True)
class Sharing:
    """How trials share a GPU: label "mps", "time-sliced" or "" (each takes a whole GPU), and why."""

    label: str
    reason: str
    mps: mps.Mps | None = None  # the daemon state when this run joined or started one here


def gpu_sharing(mode: str, *, local_gpu: bool, cluster_gpu: bool) -> Sharing:
    """Decide --gpu-sharing: pack trials on a GPU only under MPS (or always, if asked); never without a GPU."""
    if not cluster_gpu or mode == "off":
        return Sharing("", "off: every GPU trial takes a whole GPU")
    if mode == "always":
        return Sharing("time-sliced", "always: trials packed by memory, without MPS (they take turns on the GPU)")
    if local_gpu:
        state = mps.ensure()
        if state.active:
            return Sharing("mps", f"trials packed by memory under MPS ({state.reason})", state)
        return Sharing("", f"no MPS here ({state.reason}): every GPU trial takes a whole GPU")
    if ray.get(ray.remote(num_gpus=1)(mps.running).remote()):  # the cluster files start MPS on every GPU node
        return Sharing("mps", "trials packed by memory under the GPU nodes' MPS daemons")
    return Sharing("", "the GPU nodes run no MPS daemon: every GPU trial takes a whole GPU")


def copy_results(out: Path, uri: str | None) -> bool:
    """The last try at mirroring the results (--storage); False, with one line saying so, when it fails."""
    if uri is None:
        return True
    try:
        results.mirror(out, uri)
        return True
    except Exception as error:
        print(
            f"raybench: the results were NOT copied to {uri} ({type(error).__name__}: {error}); they are all in "
            f"{out}: copy that folder by hand",
            file=sys.stderr,
            flush=True,
        )
        return False


if __name__ == "__main__":
    sys.exit(main())
