"""How close `--dry-run`'s projected time comes to a real run: `python -m benchmarks.projection_check GRID...`.

For each grid: the dry run (its projection, measuring what the cost table lacks), then the real run as a user
starts it (`python -m raybench.run GRID --results TMP`), timed from start to exit; per trial, the projected epochs and
seconds against the epochs trained and the seconds they took (`train_seconds` in trials.parquet). Writes
benchmarks/results/projection.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import machine
from raybench.service import cli, dry_run

ROOT = Path(__file__).resolve().parents[1]


def check(grid: str, *, work: Path, cache: str | None) -> dict:
    """One grid: dry run, real run, and the comparison."""
    results = work / "results"
    common = ["--results", str(results), *(["--cache", cache] if cache else [])]
    command = [sys.executable, "-m", "raybench.run", grid, *common]
    _, args = cli.parse_args([grid, *common, "--dry-run"])
    setup = cli.set_up(args)
    plan = cli.dry_run_plan(setup, args)
    prepared = cli.prepare_data(setup.grid, args.data, omit_too_big=True)
    projected = dry_run.project(setup.grid.trials, plan, prepared, tiers=setup.grid.tiers, args=args)
    plan = dry_run.with_projection(plan, projected)
    name = setup.name
    load = os.getloadavg()[0]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - started
    trials = pd.read_parquet(results / name / "trials.parquet")
    both = plan.merge(trials[["trial_id", "epochs", "train_seconds"]], on="trial_id")
    return {
        "grid": grid,
        "trials": len(plan),
        "wall_s": wall,
        "load_average_at_start": load,
        "per_trial": [
            {
                "trial_id": r.trial_id,
                "projected_epochs": int(r.projected_epochs),
                "epochs": int(r.epochs),
                "projected_train_s": float(r.projected_seconds),
                "train_s": float(r.train_seconds),
            }
            for r in both.itertuples()
        ],
        "projected_wall_s": projected.total[0],
        "projected_range_s": projected.total[1:],
        "device": projected.device,
    }


def markdown(rows: list[dict], host: dict) -> str:
    lines = [
        "# --dry-run's projected time against real runs",
        "",
        f"Machine: {host}. `python -m benchmarks.projection_check`; each grid's dry run, then its real run.",
        "",
        "| grid | trials | projected wall | measured wall | measured / projected | load at start |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p, m = r["projected_wall_s"], r["wall_s"]
        lines.append(
            f"| {r['grid']} | {r['trials']} | {p:.0f} s | {m:.0f} s | {m / p:.2f} | {r['load_average_at_start']:.1f} |"
        )
    lines += ["", "| trial | projected epochs | epochs | projected s | train s (incl. build and test: projected) |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for r in rows:
        for t in r["per_trial"]:
            lines.append(
                f"| {t['trial_id']} | {t['projected_epochs']} | {t['epochs']} | {t['projected_train_s']:.0f} | "
                f"{t['train_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grids", nargs="+")
    parser.add_argument("--cache", help="image and cost cache (default: raybench's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "projection"))
    args = parser.parse_args(argv)
    rows = []
    for grid in args.grids:
        with tempfile.TemporaryDirectory() as work:
            rows.append(check(grid, work=Path(work), cache=args.cache))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_trial"}), flush=True)
    host = machine()
    Path(args.out).with_suffix(".json").write_text(json.dumps({"machine": host, "grids": rows}, indent=1))
    Path(args.out).with_suffix(".md").write_text(markdown(rows, host))


if __name__ == "__main__":
    main()
