"""Run raybench's benchmarks and write benchmarks/results/<date>-<host>.json and .md.

    python benchmarks/run_all.py [--quick] [--gpu | --gpu-dry-run] [--only loop,feeding,ray,gpu]
    python -m benchmarks ...                                  # the same

1 loop overhead, 2 data feeding, 3 Ray overhead run on the CPU (about 5 minutes on 2 cores; --quick: about one);
4 (GPU) runs with --gpu where CUDA is present (under 10 minutes on one H100), or with --gpu-dry-run on the CPU
at a tiny size to exercise its code. Every figure is a ratio of things measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `raybench` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common
from raybench import catalog
from raybench import data as pbc

BENCHMARKS = ("loop", "feeding", "ray", "gpu")
RESULTS = Path(__file__).resolve().parent / "results"


def markdown(rows: list[common.Row], info: dict, *, loads: dict, extra: list[str]) -> str:
    lines = [
        f"Machine: {common.describe(info)}. 1-minute load average during the run: {loads['before']:.2f} at the start, "
        f"mean {loads['mean']:.2f}, max {loads['max']:.2f}, {loads['after']:.2f} at the end.",
        "",
        "| benchmark | figure | value | goal | met | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row.cells()) + " |" for row in rows]
    return "\n".join(lines + [""] + [block + "\n" for block in extra])


def run_one(name: str, args: argparse.Namespace, *, prepared: pbc.Prepared, cache_dir: Path, workdir: Path):
    """One benchmark's (details for the JSON, rows for the table)."""
    if name == "loop":
        from benchmarks import loop_overhead

        return loop_overhead.run(prepared=prepared, cache_dir=cache_dir, quick=args.quick)
    if name == "feeding":
        from benchmarks import data_feeding

        return data_feeding.run(prepared=prepared, cache_dir=cache_dir, quick=args.quick)
    if name == "ray":
        from benchmarks import ray_overhead

        return ray_overhead.run(prepared=prepared, cache_dir=cache_dir, workdir=workdir, quick=args.quick)
    from benchmarks import gpu

    return gpu.run(workdir=workdir, quick=args.quick, dry_run=args.gpu_dry_run, step=args.gpu_step)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run_all.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions and images: a smoke run of about a minute"
    )
    parser.add_argument("--gpu", action="store_true", help="also run the GPU benchmark (needs CUDA)")
    parser.add_argument(
        "--gpu-step",
        choices=("eager", "compiled"),
        default="eager",
        help="raybench's step in the GPU benchmark: eager, or compiled (torch.compile with CUDA graphs)",
    )
    parser.add_argument(
        "--gpu-dry-run", action="store_true", help="run the GPU benchmark's code on the CPU at a tiny size"
    )
    parser.add_argument(
        "--only", help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: the CPU ones, plus gpu if asked)"
    )
    parser.add_argument(
        "--wait-for-load",
        type=float,
        metavar="LOAD",
        help="first wait (up to 10 minutes) until the 1-minute load average is below LOAD",
    )
    parser.add_argument(
        "--out", default=str(RESULTS), help="folder for the JSON and Markdown results (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    chosen = (
        args.only.split(",")
        if args.only
        else ["loop", "feeding", "ray"] + (["gpu"] if args.gpu or args.gpu_dry_run else [])
    )
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    if "gpu" in chosen and not args.gpu_dry_run and not torch.cuda.is_available():
        parser.error(
            "the GPU benchmark needs CUDA, and there is none here: add --gpu-dry-run to exercise it on the CPU"
        )

    if args.wait_for_load:
        common.wait_for_load(args.wait_for_load)
    info = common.machine()
    print(f"{common.describe(info)}; load average {common.load_average():.2f}", flush=True)
    started = time.perf_counter()
    details, rows, extra, failed = {}, [], [], []
    with (
        tempfile.TemporaryDirectory(prefix="raybench-bench-") as tmp,
        warnings.catch_warnings(),
        common.LoadSampler() as sampler,
    ):
        warnings.simplefilter("ignore", pbc.DataWarning)
        workdir = Path(tmp)
        cache_dir = workdir / "cache"
        prepared = pbc.prepare(None, tiers={"tiny": catalog.TIERS["tiny"]})  # the embedded 400 real images
        for name in chosen:
            print(f"[{name}]", flush=True)
            t0 = time.perf_counter()
            try:
                detail, new = run_one(name, args, prepared=prepared, cache_dir=cache_dir, workdir=workdir)
            except Exception as error:  # keep the other benchmarks' figures; say what broke
                traceback.print_exc()
                detail = {"error": f"{type(error).__name__}: {error}"}
                new = [
                    common.Row(
                        name, "FAILED", None, "", note=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    )
                ]
                failed.append(name)
            if "markdown" in detail:
                extra.append(detail.pop("markdown"))
            detail["seconds"] = time.perf_counter() - t0
            details[name], rows = detail, rows + new
    loads = sampler.summary()
    table = markdown(rows, info, loads=loads, extra=extra)
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    stem = f"{stamp}-{info['host']}" + ("-quick" if args.quick else "") + ("-gpu-dry-run" if args.gpu_dry_run else "")
    record = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "machine": info,
        "load_average": loads,
        "seconds": time.perf_counter() - started,
        "rows": [r.__dict__ for r in rows],
        "benchmarks": details,
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1, default=str))
    (out / f"{stem}.md").write_text(table)
    print(f"-> {out / stem}.json, .md ({time.perf_counter() - started:.0f}s)")
    if failed:
        print(f"FAILED: {', '.join(failed)} (see above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
