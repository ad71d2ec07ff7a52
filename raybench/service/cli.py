"""Run a grid of trials with Ray Tune: `python -m raybench.run grids/thesis.py`.

Results land in RESULTS/NAME/: trials, epochs, predictions, manifest and plan as Parquet, each trial's
rows written as soon as it ends. Ray's own experiment folder (checkpoints, logs) is RESULTS/NAME/ray/
unless --storage points elsewhere (NFS, s3://bucket/prefix on a cluster). Everything that can be wrong
is checked here, before Ray starts; service.driver is the run itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from pathlib import Path

import pandas as pd

from raybench import data as pbc
from raybench import grid as grids
from raybench import models, mps, provenance, resources, results, spec
from raybench.service import driver, dry_run, interrupt, lock, preflight, trainable
from raybench.service.driver import Setup, plan_rows


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
        help=f"training option for every trial (repeat for several); the options with their defaults: "
        f"{spec.describe_options()}",
    )
    parser.add_argument(
        "--inject-failure",
        action="append",
        default=[],
        metavar="REGEX=once:N|always:N|oom:N|kill:N",
        help="fault drill: the trials whose name matches fail after epoch N, once (then resume) or on every retry, "
        "run out of CUDA memory (then halve the batch), or have their process killed once (a data-parallel "
        "trial's last worker)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan and each tier's splits per class (preparing the data), write it to "
        "RESULTS/NAME/plan.dry-run.parquet (never the run's own plan.parquet), train nothing",
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
        help="also log every trial's parameters and curves to this MLflow tracking server (needs the mlflow extra: "
        "pip install -e '.[mlflow]')",
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
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"--inject-failure {pattern!r} is not a valid regular expression ({error})") from None
        chosen = [t.trial_id for t in grid.trials if regex.search(t.trial_id)]
        if not chosen:
            raise ValueError(
                f"--inject-failure {pattern!r} matches no trial of this run; "
                f"trial names look like {grid.trials[0].trial_id!r}"
            )
        drills.update(dict.fromkeys(chosen, drill))
    return drills


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
        if value is not None and not (math.isfinite(value) and least <= value <= spec.INT_MAX):
            raise ValueError(
                f"{flag} must be a finite number of at least {least:g} and at most {spec.INT_MAX} (2**63-1), "
                f"got {value:g}"
            )


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
    name = spec.check_name("--name", args.name, pattern=spec.RUN_NAME) if args.name is not None else grid.name
    gpu_gb = args.gpu_memory_gb or resources.local_gpu_memory_gb()
    out = Path(args.results).expanduser().resolve() / name  # "~/results" on a cluster is the head node's home
    return Setup(grid, name, out, gpu_gb, fault_drills(grid, args.inject_failure), grid_file=args.grid)


def dry_run_plan(setup: Setup, args: argparse.Namespace) -> pd.DataFrame:
    """The plan as a run here would make it; a dry run starts nothing, so it packs GPU trials only if an MPS
    daemon already runs here (or --gpu-sharing always)."""
    share = args.gpu_sharing == "always" or (args.gpu_sharing in ("auto", "mps") and mps.running())
    return pd.DataFrame(
        plan_rows(setup.grid, gpu_memory_gb=setup.gpu_gb, cpus_per_trial=args.cpus_per_trial, share_gpu=share)
    )


def check_resume(setup: Setup, *, resume: bool) -> None:
    """A new run must not land on an old one's results; a resumed one must be the same trials with the same options."""
    out = setup.out
    if not resume and results.finished_trials(out):
        raise ValueError(f"{out} already holds results of a run: add --resume to continue it, or choose another --name")
    before = results.read_plan(out) if resume else None
    if before is not None:
        check_plan_format(out, before)
        now = [(c["trial_id"], c["options"]) for c in (t.columns() for t in setup.grid.trials)]
        if sorted(zip(before.trial_id, before.options, strict=True)) != sorted(now):
            raise ValueError(
                f"--resume: the trials or their options differ from those of the run in {out}; resume "
                "with the same grid, --only and --set, or start a new run with another --name"
            )
    if resume:
        check_trained_options(setup)


PLAN_IDENTITY = ("trial_id", "options")  # what --resume compares a plan by


def check_plan_format(out: Path, plan: pd.DataFrame) -> None:
    """A plan without the columns --resume compares was written by an older raybench: its trials and options cannot
    be compared, so say that, not that they differ."""
    missing = [column for column in PLAN_IDENTITY if column not in plan]
    if missing:
        runs = provenance.read_runs(out)
        version = (runs[0].get("versions") or {}).get("raybench") if runs else None
        raise ValueError(
            f"--resume: this run was planned by an older raybench{f' ({version})' if version else ''}: its "
            f"plan.parquet lacks {', '.join(missing)}, so this raybench cannot check that it is the same trials and "
            "options; finish it with the raybench that started it, or start a new run with another --name"
        )


def check_trained_options(setup: Setup) -> None:
    """Every trial with rows was trained with the options it has now: a resumed run never mixes rows trained
    with other options, whatever its plan.parquet says."""
    trials, _ = results.read_table(setup.out, "trials")
    planned = {t.trial_id: t.columns()["options"] for t in setup.grid.trials}
    for row in trials.dropna(subset=["options"]).itertuples():
        if row.trial_id not in planned:
            raise ValueError(
                f"--resume: {setup.out} holds trial {row.trial_id}, which this grid (with its --only) does not "
                "plan; resume with the run's grid and --only, or start a new run with another --name"
            )
        if planned[row.trial_id] != row.options:
            raise ValueError(
                f"--resume: trial {row.trial_id} in {setup.out} was trained with other options ({row.options}); "
                "resume with the run's --set, or start a new run with another --name"
            )


def check_same_data(out: Path, prepared: pbc.Prepared, *, resume: bool) -> None:
    """A resumed run must train on the data its finished trials used (the same images, tiers and splits)."""
    before = results.read_manifest(out) if resume else None
    if before is None:  # none yet, or damaged (zero bytes): the run writes it again from the data
        return
    if results.data_fingerprint(before) != results.data_fingerprint(prepared.manifest):
        raise ValueError(
            f"--resume: the data at {prepared.root} is not the data of the run in {out} (other images, "
            "tiers or splits); resume with the run's --data, or start a new run with another --name"
        )


def resume_command(argv: list[str]) -> str:
    """The command line that continues the run `argv` started: as it was started (`raybench run ...` or `python -m
    raybench.run ...`, from this process's command line when `argv` is its tail), with --resume."""
    started = sys.argv if argv and sys.argv[-len(argv) :] == argv else ["raybench.run", *argv]
    return interrupt.resume_command(started)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, args = parse_args(argv)
    run_lock = None
    try:
        setup = dataclasses.replace(set_up(args), resume_command=resume_command(argv))
        preflight.check_environment(args, devices={t.config.device for t in setup.grid.trials})
        if args.dry_run:
            plan = dry_run_plan(setup, args)
            prepared = prepare_data(setup.grid, args.data, omit_too_big=True)  # the splits, before any training
            projected = dry_run.project(setup.grid.trials, plan, prepared, tiers=setup.grid.tiers, args=args)
            plan = dry_run.with_projection(plan, projected)
            plan_path = results.write_plan(setup.out, plan, name=results.DRY_RUN_PLAN_FILE)  # the run's own stays
            print("\n".join(dry_run.show(setup.grid, plan, prepared, projected=projected, plan_path=plan_path)))
            return 0
        run_lock = lock.acquire(setup.out)  # before anything is written there; held until the run returns
        check_resume(setup, resume=args.resume)
        for model in sorted({t.model for t in setup.grid.trials if t.pretrained}):
            models.imagenet_weights(model)  # fetched once here, into torchvision's cache, or a clear error now
        prepared = prepare_data(setup.grid, args.data)
        check_same_data(setup.out, prepared, resume=args.resume)
    except (ValueError, FileNotFoundError) as error:  # one line: the usage would push it out of sight
        if run_lock is not None:
            run_lock.release()
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(prepared.report, flush=True)
    same = dry_run.same_tiers_warning(prepared, setup.grid.tiers)
    if same:
        print(f"warning: {same}", flush=True)
    try:
        with interrupt.quiet_tune():
            return driver.run_grid(setup, prepared, driver.RunOptions.from_args(args))
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Tune started: what finished is saved
        print(f"\nthe run is not finished; resume with: {setup.resume_command}", file=sys.stderr, flush=True)
        return interrupt.UNFINISHED
    finally:
        run_lock.release()


if __name__ == "__main__":
    sys.exit(main())
