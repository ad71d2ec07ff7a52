"""Benchmark 3: what the Ray Tune service costs on top of the trials' own training time. Goal: under 1 s per
trial once workers are warm.

Grids of N and 2N short lenet5 trials (tiny tier, 32x32, a few epochs, one seed each) run through
`python -m raybench.run` in a fresh results folder, with the decode-once cache already warm. The ideal wall
time is the trials' own `train_seconds` summed and divided by the concurrency (2 CPUs, 1 CPU per trial).
Overhead per trial = (wall - ideal) / N; the step from N to 2N trials (of the Tune phase: from tune.fit's start
to its last results) gives the per-trial part with the fixed costs (imports, data preparation, ray.init, actor
start, shutdown) taken out, and the completion times give it again (each slot's trials after its first).
Ray's own per-trial records (result.json) show what happens inside the trial's actor; the rest is the driver's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import Row, median, seconds
from raybench import batches, catalog, loop, models, results, spec
from raybench import data as pbc

GOAL = 1.0
IMAGE_SIZE = 32
CONCURRENCY = 2  # --num-cpus 2, 1 CPU per trial
# lines of `python -m raybench.run`'s output (its own and Ray's) that mark the phases of a run
MARKS = {
    "prepared": "PBC data at",
    "ray_up": "Started a local Ray instance",
    "tune_start": "View detailed results here",
    "tune_end": "Wrote the latest version of all result files",
    "summary": " trials in ",
}


def write_grid(path: Path, *, trials: int, epochs: int) -> Path:
    options = {"image_size": IMAGE_SIZE, "max_epochs": epochs}  # early stopping starts at epoch 10: never here
    grid = {
        "name": path.stem,
        "seeds": list(range(trials)),
        "options": options,
        "sweeps": [{"models": ["lenet5"], "tiers": ["tiny"]}],
    }
    path.write_text(f"GRID = {grid!r}\n")
    return path


def run_grid(grid: Path, *, workdir: Path, cache_dir: Path) -> dict:
    """Run one grid through the service; the seconds since start at which each marked line appeared."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    cmd = [
        sys.executable,
        "-m",
        "raybench.run",
        str(grid),
        "--results",
        str(workdir / "results"),
        "--cache",
        str(cache_dir),
        "--num-cpus",
        str(CONCURRENCY),
    ]
    start = time.perf_counter()
    marks: dict[str, float] = {}
    finished: list[float] = []
    lines: list[str] = []
    with subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout:
            now = time.perf_counter() - start
            lines.append(line)
            if line.startswith("finished "):
                finished.append(now)
            for mark, text in MARKS.items():
                if text in line and mark not in marks:
                    marks[mark] = now
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{''.join(lines[-40:])}")
    out = workdir / "results" / grid.stem
    trials = pd.read_parquet(out / "trials.parquet")
    return {
        "trials": len(trials),
        "wall_s": wall,
        "marks": marks,
        "finished_s": finished,
        "train_seconds": trials.train_seconds.tolist(),
        "ray_trials": ray_records(out / "ray" / grid.stem, trials),
        "results_dir": out,
    }


def ray_records(experiment: Path, trials: pd.DataFrame) -> dict:
    """From Ray's result.json of each trial: seconds inside the trial's actor, split into its first report
    (build the model, open the cache, first epoch), later epochs' reports, and the final report (test, result rows)."""
    first, later, last, total = [], [], [], []
    for trial_id in trials.trial_id:
        records = [json.loads(line) for line in (experiment / trial_id / "result.json").read_text().splitlines()]
        extra = [r["time_this_iter_s"] - (r.get("epoch_seconds") or 0.0) for r in records]
        first.append(extra[0])
        later.extend(extra[1:-1])
        last.append(extra[-1])
        total.append(records[-1]["time_total_s"])
    return {
        "actor_seconds": total,
        "first_report_extra_s": first,
        "epoch_report_extra_s": later,
        "final_report_s": last,
    }


def checkpoint_volume_gb(thesis: pd.DataFrame) -> float:
    """GB that the thesis grid's per-epoch checkpoints write at the thesis's epoch counts: every epoch the trainable
    saves the model (fp32, frozen weights included) and, once early stopping has seen an improvement (from epoch
    11 on, §4.4), the best model too; Ray then copies the folder into its storage, so all of it is written twice."""
    total = 0.0
    for row in thesis.itertuples():
        params, _ = models.parameter_counts(row.model, pretrained=row.pretrained)
        copies = row.epochs + max(row.epochs - 10, 0)
        total += copies * params * 4 / 1e9
    return 2 * total


def checkpoint_seconds_per_gb(workdir: Path) -> float:
    """Seconds per GB of one epoch's checkpoint as the trainable makes it: Trainer.save into a temporary folder,
    Ray's copy of that folder into the storage (a local path here), the temporary folder removed."""
    empty = batches.DeviceSplit(
        np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64), channels=3, device=torch.device("cpu")
    )
    model = models.build_model("resnet_50", image_size=64)
    trainer = loop.Trainer(model, empty, empty, spec.make_config(), seed=0, batch_size=32)
    trainer.tested_model = {k: v.clone() for k, v in model.state_dict().items()}
    gb = 2 * sum(v.numel() * v.element_size() for v in model.state_dict().values()) / 1e9

    def once() -> None:
        tmp, storage = workdir / "ckpt-tmp", workdir / "ckpt-storage"
        tmp.mkdir()
        trainer.save(tmp / "state.pt")
        shutil.copytree(tmp, storage)
        shutil.rmtree(tmp)
        shutil.rmtree(storage)  # num_to_keep=1: the previous epoch's checkpoint goes

    return min(seconds(once) for _ in range(3)) / gb


def consolidate_seconds(out: Path, manifest: pd.DataFrame) -> float:
    """What the driver's ResultsCallback spends per finished trial: rebuild the consolidated Parquet files."""
    return min(seconds(lambda: results.consolidate(out, manifest=manifest)) for _ in range(3))


def below(value: float | None, goal: float) -> bool | None:
    return None if value is None else value < goal


def summarise(run: dict) -> dict:
    n, marks = run["trials"], run["marks"]
    ideal = sum(run["train_seconds"]) / CONCURRENCY
    tune = marks.get("tune_end", run["wall_s"]) - marks.get("tune_start", 0.0)
    ray = run["ray_trials"]
    done = sorted(run["finished_s"])
    # warm workers: after the first CONCURRENCY trials (which also start the actors), each slot finishes a trial
    # every `cycle` seconds; what a cycle holds beyond the trial's own training is Ray's per-trial cost
    later = n - CONCURRENCY
    cycle = (done[-1] - done[CONCURRENCY - 1]) * CONCURRENCY / later if later > 0 and len(done) == n else None
    return {
        "warm_cycle_s": cycle,
        "warm_overhead_per_trial_s": None if cycle is None else cycle - sum(run["train_seconds"]) / n,
        "trials": n,
        "wall_s": run["wall_s"],
        "ideal_s": ideal,
        "overhead_per_trial_s": (run["wall_s"] - ideal) / n,
        "startup_s": marks.get("tune_start"),
        "shutdown_s": run["wall_s"] - marks.get("tune_end", run["wall_s"]),
        "tune_phase_s": tune,
        "tune_overhead_per_trial_s": (tune - ideal) / n,
        "mean_train_s": sum(run["train_seconds"]) / n,
        "mean_actor_s": sum(ray["actor_seconds"]) / n,
        "first_report_extra_s": median(ray["first_report_extra_s"]),
        "epoch_report_extra_s": median(ray["epoch_report_extra_s"]) if ray["epoch_report_extra_s"] else None,
        "final_report_s": median(ray["final_report_s"]),
        "marks": marks,
        "finished_s": run["finished_s"],
    }


def run(*, prepared: pbc.Prepared, cache_dir: Path, workdir: Path, quick: bool) -> tuple[dict, list[Row]]:
    n, epochs = (4, 2) if quick else (6, 3)
    for split in catalog.SPLITS:  # warm the cache the service will read (the same images, so the same files)
        pbc.load_split(prepared, "tiny", split, image_size=IMAGE_SIZE, cache_dir=cache_dir)
    sizes = (n,) if quick else (n, 2 * n)
    runs = {}
    for size in sizes:
        grid = write_grid(workdir / f"ray{size}.py", trials=size, epochs=epochs)
        raw = run_grid(grid, workdir=workdir, cache_dir=cache_dir)
        runs[size] = summarise(raw)
        print(
            f"  ray {size} trials: wall {raw['wall_s']:.1f}s, ideal {runs[size]['ideal_s']:.1f}s, "
            f"{runs[size]['overhead_per_trial_s']:.2f}s/trial all in",
            flush=True,
        )
    small = runs[n]
    if len(sizes) == 2:  # what each added trial costs: the fixed part cancels. The Tune phase (tune.fit up to its
        # last results) rather than the whole wall: Ray's clean-up after it waits for actors for 0-5 s, noise that
        # would swamp a per-trial cost of a tenth of a second
        big = runs[2 * n]
        per_trial = ((big["tune_phase_s"] - big["ideal_s"]) - (small["tune_phase_s"] - small["ideal_s"])) / n
        how = f"Tune phase (wall - ideal) from {n} to {2 * n} trials, over {n}"
    else:  # one run (--quick): the slot-seconds of the trials after each slot's first
        per_trial = small["warm_overhead_per_trial_s"]
        how = f"slot-seconds per trial beyond its training after each slot's first, {n} trials"
    fixed = (small["wall_s"] - small["ideal_s"]) - n * (per_trial or 0.0)
    m = small["marks"]
    phases = {
        "imports + data preparation": m.get("prepared"),
        "ray.init": m.get("ray_up", 0) - m.get("prepared", 0),
        "Tune set-up": m.get("tune_start", 0) - m.get("ray_up", 0),
        "first trials (actor start)": min(small["finished_s"]) - m.get("tune_start", 0) - small["mean_actor_s"],
        "Tune clean-up, summary, ray.shutdown": small["shutdown_s"],
    }
    last = runs[sizes[-1]]
    consolidate = consolidate_seconds(raw["results_dir"], prepared.manifest)
    thesis = pd.read_csv(Path(catalog.__file__).parent / "thesis" / "results.csv")
    volume_gb, per_gb = checkpoint_volume_gb(thesis), checkpoint_seconds_per_gb(workdir)
    result = {
        "epochs": epochs,
        "image_size": IMAGE_SIZE,
        "concurrency": CONCURRENCY,
        "runs": runs,
        "per_trial_s": per_trial,
        "fixed_s": fixed,
        "per_trial_how": how,
        "consolidate_per_finished_trial_s": consolidate,
        "thesis_checkpoint_write_gb": volume_gb,
        "checkpoint_s_per_gb": per_gb,
        "thesis_checkpoint_hours": volume_gb * per_gb / 2 / 3600,
    }
    bench = "3 Ray overhead (CPU)"
    lenet_mb = models.parameter_counts("lenet5", image_size=IMAGE_SIZE)[0] * 4 / 1e6
    rows = [
        Row(
            bench,
            f"per-trial overhead, warm workers: {how}",
            per_trial,
            "s",
            f"< {GOAL:g} s",
            below(per_trial, GOAL),
            f"lenet5 {IMAGE_SIZE}px, {epochs} epochs, {CONCURRENCY} at a time",
        ),
        Row(
            bench,
            f"fixed cost of a run ({n} trials: wall - ideal - {n} x per-trial)",
            fixed,
            "s",
            note=", ".join(f"{k} {v:.1f}s" for k, v in phases.items()),
        ),
        Row(
            bench,
            f"all in: (wall - ideal) / trials, {last['trials']} trials",
            last["overhead_per_trial_s"],
            "s",
            note=f"wall {last['wall_s']:.1f}s vs ideal {last['ideal_s']:.1f}s",
        ),
        Row(
            bench,
            "in the actor: first report beyond its epoch (build model, open cache, copy splits)",
            last["first_report_extra_s"],
            "s",
        ),
        Row(
            bench,
            "in the actor: each later report beyond its epoch (checkpoint: save, Ray's copy)",
            last["epoch_report_extra_s"],
            "s",
            note=f"lenet5 at {IMAGE_SIZE}px: a {lenet_mb:.2f} MB model",
        ),
        Row(
            bench,
            "in the actor: final report (test split, result rows, result checkpoint)",
            last["final_report_s"],
            "s",
        ),
        Row(
            bench,
            "driver: rebuilding the consolidated Parquet files per finished trial (ResultsCallback)",
            consolidate,
            "s",
            note=f"after {last['trials']} trials; grows with the number finished",
        ),
        Row(
            bench,
            "thesis grid: GB written by per-epoch checkpoints (model + best model, fp32; temporary folder, "
            "then Ray's copy)",
            volume_gb,
            "GB",
            note=f"{per_gb:.2f} s/GB here (save + copy + delete): "
            f"{result['thesis_checkpoint_hours']:.1f} h of the grid's wall time with the GPU idle",
        ),
    ]
    if len(sizes) == 2:
        rows.insert(
            1,
            Row(
                bench,
                f"cross-check, warm workers: slot-seconds per trial beyond its training after each "
                f"slot's first, {last['trials']} trials",
                last["warm_overhead_per_trial_s"],
                "s",
                f"< {GOAL:g} s",
                below(last["warm_overhead_per_trial_s"], GOAL),
            ),
        )
    result["fixed_phases_s"] = phases
    return result, rows
