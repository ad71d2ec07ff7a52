"""The Ray side of a run: what each trial asks the scheduler for, the Tuner over the grid, and the run itself.

`service.cli` loads and checks everything first; `run_grid` then starts (or joins) Ray, plans the trials for
the cluster it finds, trains them through Tune with the callbacks that save, show and draw them, consolidates
the results and copies them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from raybench import console, models, mps, provenance, resources, results, spec
from raybench import data as pbc
from raybench import grid as grids
from raybench.service import callbacks, interrupt, local_ray, trainable


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything a run needs before Ray starts: the grid, where results go, the GPU memory and the drills."""

    grid: grids.Grid
    name: str
    out: Path
    gpu_gb: float | None
    drills: dict[str, trainable.FaultDrill]
    grid_file: str | None = None  # for the run's provenance (run.json): its path and sha256
    resume_command: str = ""  # the command line that continues this run (printed when trials are left unfinished)


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
    address: str | None = None  # a running Ray cluster to join; None: start Ray here
    num_cpus: int | None = None  # CPUs of a Ray started here (None: all)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def plan_rows(
    grid: grids.Grid, *, gpu_memory_gb: float | None, cpus_per_trial: float = 1.0, share_gpu: bool = False
) -> list[dict]:
    """One row per trial: what it trains and what it will ask the scheduler for."""
    rows = []
    for trial in grid.trials:
        total, trainable_count = models.parameter_counts(
            trial.model, pretrained=trial.pretrained, image_size=trial.config.image_size, channels=trial.channels
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


def check_placeable(plan: pd.DataFrame) -> None:
    """Refuse at once a trial no node can ever hold (Ray would leave it PENDING forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for row in plan.itertuples():
        workers = int(getattr(row, "workers", 1) or 1)
        if workers > 1:  # a bundle a worker, anywhere (Ray Train's group)
            cpu, gpu = row.cpu / workers, row.gpu / workers
            fits = sum(int(min(n.get("CPU", 0) / cpu if cpu else workers, n.get("GPU", 0) / gpu if gpu else workers))
                       for n in nodes)  # fmt: skip
            if fits < workers:
                have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes)
                raise ValueError(
                    f"trial {row.trial_id} needs {workers} workers of {cpu:g} CPU and {gpu:g} GPU each, but the "
                    f"cluster's nodes ({have}) hold {fits}; lower workers or --cpus-per-trial, or add nodes"
                )
            continue
        if not any(n.get("CPU", 0) >= row.cpu and n.get("GPU", 0) >= row.gpu for n in nodes):
            have = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in nodes)
            raise ValueError(
                f"trial {row.trial_id} needs {row.cpu:g} CPU and {row.gpu:g} GPU on one node, but the "
                f"cluster's nodes have {have}; lower --cpus-per-trial, run on a GPU cluster, or --set device=cpu"
            )


def storage_path(storage: str, *parts: str) -> str:
    """STORAGE/PART/...: the parts joined to the path, before a URI's ?query (s3://b/x?endpoint_override=...)."""
    base, mark, query = storage.partition("?") if "://" in storage else (storage, "", "")
    return "/".join([base.rstrip("/"), *parts]) + mark + query


def mirror_uri(storage: str | None, name: str) -> str | None:
    """Where the consolidated results are copied with --storage: STORAGE/NAME/results."""
    return storage_path(storage, name, "results") if storage else None


def param_space(trials: list[spec.Trial]) -> dict:
    """One grid axis over the trial ids; model, tier, pretrained, seed and every option as config keys beside it,
    so that Tune's dataframes, the dashboard, TensorBoard's HParams and MLflow show and filter them."""
    values = {t.trial_id: t.parameters() for t in trials}
    keys = list(next(iter(values.values()))) if values else []
    space = {"trial_id": tune.grid_search(list(values))}
    for key in keys:
        space[key] = tune.sample_from(lambda config, key=key: values[config["trial_id"]][key])
    return space


@dataclasses.dataclass(frozen=True)
class Sharing:
    """How trials share a GPU: label "mps", "time-sliced" or "" (each takes a whole GPU), and why."""

    label: str
    reason: str
    mps: mps.Mps | None = None  # the daemon state when this run joined or started one here


def choose_sharing(mode: str, *, local_gpu: bool, cluster_gpu: bool) -> Sharing:
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


def build_tuner(
    setup: Setup,
    prepared: pbc.Prepared,
    options: RunOptions,
    *,
    plan: pd.DataFrame,
    gpu_gb: float | None,
    sharing: str = "",
) -> tune.Tuner:
    """The Tuner over the grid's unfinished trials, or the restored one of an interrupted run (`options.resume`)."""
    out, name = setup.out, setup.name
    ray_storage = options.storage or str(out / "ray")
    specs = {t.trial_id: t for t in setup.grid.trials}

    def trial_resources(config: dict) -> dict:
        trial = trainable.trial_spec(config, specs)
        if trial.config.workers > 1:  # Ray Train asks for its workers' group itself
            return resources.DRIVER
        return resources.trial_resources(
            trial, gpu_memory_gb=gpu_gb, cpus=options.cpus_per_trial, share_gpu=sharing != ""
        )

    fn = tune.with_parameters(
        trainable.tune_trial,
        models=setup.grid.models,
        prepared=prepared,
        specs=specs,
        drills=setup.drills,
        cache_dir=options.cache,
        checkpoint_every=options.checkpoint_every,
        sharing=sharing,
        workers_on_gpus=gpu_gb is not None,
        cpus_per_worker=options.cpus_per_trial,
        max_failures=options.max_failures,
    )
    fn = tune.with_resources(fn, trial_resources)
    done = {tid for tid, status in results.finished_trials(out).items() if status == "ok"}
    train_images = prepared.manifest.query("split == 'train'").groupby("tier").size().to_dict()
    progress = console.GridProgress(plan, train_images=train_images)
    for trial_id in done:
        progress.trial_ended(trial_id, "ok")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # Ray's TensorBoard logger: ours replaces it
    if not options.verbose:  # Tune's newer console output prints its boxes whatever the verbosity; the older is quiet
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    run_callbacks = [
        callbacks.ResultsCallback(out, specs, mirror=mirror_uri(options.storage, name)),
        callbacks.ConsoleCallback(progress, out=out),
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
    experiment = storage_path(ray_storage, name)
    if options.resume and tune.Tuner.can_restore(experiment):
        print(f"resuming {experiment}", flush=True)
        return tune.Tuner.restore(experiment, trainable=fn, resume_unfinished=True, resume_errored=True)
    todo = [t for t in setup.grid.trials if t.trial_id not in done]
    tune_config = tune.TuneConfig(
        max_concurrent_trials=options.max_concurrent or None,
        # on a GPU every trial gets a fresh process: a reused one keeps the last trial's CUDA context, allocator
        # cache and compiled graphs; on the CPU reusing saves each trial's start (imports, Ray's actor)
        reuse_actors=gpu_gb is None,
        trial_name_creator=lambda t: t.config["trial_id"],
        trial_dirname_creator=lambda t: t.config["trial_id"],
    )
    return tune.Tuner(fn, param_space=param_space(todo), tune_config=tune_config, run_config=run_config)


def run_grid(setup: Setup, prepared: pbc.Prepared, options: RunOptions) -> int:
    """Start (or join) Ray, plan the trials for its cluster, run them through Tune, consolidate the results and
    print their summary."""
    out, gpu_gb, name = setup.out, setup.gpu_gb, setup.name
    missing = sorted({t.init_from for t in setup.grid.trials if t.init_from and not Path(t.init_from).is_file()})
    if missing:  # before anything starts: the run that saves them (save_weights) comes first
        print(
            f"python -m raybench.run: error: init_from weights missing: {', '.join(missing)}; "
            "run the grid whose sweep has save_weights: True first (it writes RESULTS/NAME/weights/TRIAL_ID.npz)",
            file=sys.stderr,
        )
        return 2
    try:
        results.write_manifest(out, prepared.manifest)
    except OSError as error:
        if not results.is_disk_full(error):
            raise
        print(
            f"python -m raybench.run: error: no space left in {out}: free space and --resume{resume_hint(setup)}",
            file=sys.stderr,
        )
        return 2
    uri = mirror_uri(options.storage, name)
    if options.resume and uri is not None:  # the local folder may be gone: the copy in storage holds its trials
        try:
            restored = results.restore_from_mirror(out, uri)
        except Exception as error:
            print(f"python -m raybench.run: error: cannot read the results in {uri}: {error}", file=sys.stderr)
            return 2
        if restored:
            print(f"restored {len(restored)} finished trial(s) from {uri}: {', '.join(restored)}", flush=True)
    if options.resume:
        experiment = Path(options.storage or out / "ray") / name
        recovered = recover_from_checkpoints(experiment, out, [t.trial_id for t in setup.grid.trials])
        repaired = repair_checkpoint_references(experiment)
        if repaired:
            newer = ", ".join(repaired)
            print(f"{len(repaired)} trial(s) go on from their newest checkpoint, newer than Ray's record: {newer}")
        if recovered:
            print(f"recovered {len(recovered)} finished trial(s) from their final checkpoints: {', '.join(recovered)}")
    run_info = provenance.describe(argv=sys.argv, grid_file=setup.grid_file)
    provenance.record(out, run_info)
    # trials checkpoint often (--checkpoint-every), so Ray snapshots often; that is intended here, not a warning
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    init_ray(options)
    if gpu_gb is None and ray.cluster_resources().get("GPU", 0) > 0:  # a cluster whose GPUs are on other nodes
        gpu_gb = ray.get(ray.remote(num_gpus=1)(resources.local_gpu_memory_gb).remote())
    local_gpu = resources.local_gpu_memory_gb() is not None
    sharing = choose_sharing(options.gpu_sharing, local_gpu=local_gpu, cluster_gpu=gpu_gb is not None)
    if gpu_gb is not None:
        print(f"GPU sharing: {sharing.reason}", flush=True)
        if options.gpu_sharing == "mps" and sharing.label != "mps":
            ray.shutdown()
            print(f"python -m raybench.run: error: --gpu-sharing mps, but {sharing.reason}", file=sys.stderr)
            return 2
    share = sharing.label != ""
    plan = pd.DataFrame(
        plan_rows(setup.grid, gpu_memory_gb=gpu_gb, cpus_per_trial=options.cpus_per_trial, share_gpu=share)
    )
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
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the run as Ctrl-C does
    try:
        build_tuner(setup, prepared, options, plan=plan, gpu_gb=gpu_gb, sharing=sharing.label).fit()
    except KeyboardInterrupt:  # a second Ctrl-C cut Tune's own stop short: what ended is saved, the rest resumes
        print("interrupted", file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        ray.shutdown()
        if sharing.mps is not None:
            mps.stop(sharing.mps)
    provenance.finish(out, run_info)
    try:
        results.consolidate(out, manifest=prepared.manifest)
    except OSError as error:
        if not results.is_disk_full(error):
            raise
        print(
            f"python -m raybench.run: error: no space left in {out}: free space and --resume{resume_hint(setup)}",
            file=sys.stderr,
        )
        return 1
    copied = copy_results(out, mirror_uri(options.storage, name))
    missing = unfinished_trials(out, list(plan.trial_id))
    if missing:  # Tune stopped before every trial ended (Ctrl-C, SIGTERM): one line, then the exit code that says so
        say_unfinished(missing, len(plan), setup.resume_command or interrupt.resume_command())
        return UNFINISHED
    trials = pd.read_parquet(out / "trials.parquet")
    trials = trials[trials.trial_id.isin(plan.trial_id)]  # this run's trials (a folder may hold others, --only)
    print(f"\n{len(trials)} trials in {console.duration(time.time() - started)} -> {out}")
    print("\n".join(console.final_table(trials, tier_order=list(setup.grid.tiers))))
    print("\nnext:\n" + "\n".join(f"  {line}" for line in console.next_commands(out, logs=callbacks.LOGS_DIR)))
    return 0 if (trials.status == "ok").all() and copied else 1


UNFINISHED = interrupt.UNFINISHED


def _interrupt(signum, frame) -> None:
    os.kill(os.getpid(), signal.SIGINT)  # Tune's handler: stop, save the experiment's state, return from fit()


def unfinished_trials(out: Path, planned: list[str]) -> list[str]:
    """The planned trials without rows (ok or failed) in the results folder, in plan order."""
    done = results.finished_trials(out)
    return [trial_id for trial_id in planned if trial_id not in done]


def resume_hint(setup: Setup) -> str:
    return f" ({setup.resume_command})" if setup.resume_command else ""


def say_unfinished(missing: list[str], planned: int, resume_command: str) -> None:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    print(
        f"\nthe run is not finished: {planned - len(missing)} of {planned} trials ended, none yet for {shown}; "
        f"resume with: {resume_command}",
        file=sys.stderr,
        flush=True,
    )


def init_ray(options: RunOptions) -> None:
    """Join the cluster at --address (or RAY_ADDRESS), or start Ray here: on 127.0.0.1 only, its token private."""
    local = options.address is None and not os.environ.get("RAY_ADDRESS")
    if local:
        local_ray.bind_to_loopback()
        local_ray.keep_token_private()
    # Ray's own output (the workers' logs, its banner) stays in its log files unless --verbose
    ray.init(
        address=options.address,
        num_cpus=None if options.address else options.num_cpus,
        log_to_driver=options.verbose,
        logging_level=logging.INFO if options.verbose else logging.WARNING,
    )
    if local:
        local_ray.keep_token_private()  # had Ray written one after all


def recover_from_checkpoints(experiment: Path, out: Path, trial_ids: list[str]) -> list[str]:
    """Write the rows of every trial that finished (its final checkpoint holds them) but has no ok rows in `out`
    (a full disk or a lost folder when it ended); their ids. Only a local or mounted --storage is read."""
    if "://" in str(experiment) or not experiment.is_dir():
        return []
    done, recovered = results.finished_trials(out), []
    for trial_id in trial_ids:
        if done.get(trial_id) == "ok":
            continue
        for checkpoint in sorted((experiment / trial_id).glob("checkpoint_*"), reverse=True):
            result = results.read_trial(checkpoint / trainable.RESULT_DIR)
            if result is not None and result.trial["trial_id"] == trial_id:
                results.write_trial(out, result)
                recovered.append(trial_id)
                break
    return recovered


def repair_checkpoint_references(experiment: Path) -> list[str]:
    """Point every trial of an interrupted run back at a checkpoint that exists; the ids of those repaired.

    Ray keeps one checkpoint per trial (num_to_keep=1): it deletes the previous one as soon as it registers a
    new one, and snapshots the experiment a step later. A driver killed in between leaves a snapshot naming the
    deleted checkpoint, and Ray refuses to restore that trial. Its newest checkpoint (a later epoch) is moved
    under the name the snapshot holds, so the trial goes on from there; any between them (never registered) go.
    Only a local or mounted --storage."""
    if "://" in str(experiment) or not tune.Tuner.can_restore(str(experiment)):
        return []
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level, quiet.level = quiet.level, logging.ERROR  # its warnings for trials that never reported
    try:
        trials = tune.ExperimentAnalysis(str(experiment)).trials
    except Exception:  # a snapshot Ray cannot read: Ray's restore says so itself
        return []
    finally:
        quiet.setLevel(level)
    repaired = []
    for trial in trials:
        named = Path(trial.checkpoint.path) if trial.checkpoint is not None else None
        if named is None or named.exists():
            continue
        newer = sorted(p for p in named.parent.glob("checkpoint_*") if p.name > named.name)
        if newer:
            newer[-1].rename(named)
            for unregistered in newer[:-1]:
                shutil.rmtree(unregistered, ignore_errors=True)
            repaired.append(trial.config.get("trial_id", trial.trial_id))
    return repaired


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
