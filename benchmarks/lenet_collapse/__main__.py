"""The study's command line (see the package's docstring): both loops in two processes, one seed per JSONL row."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.lenet_collapse import JSONL, SAMPLE_VARIABLE, sample_folder
from benchmarks.lenet_collapse.bare_loop import run_bare
from benchmarks.lenet_collapse.raybench_loop import run_raybench
from benchmarks.lenet_collapse.study import load_rows, report


def variant_name(impl: str, pixels: str, order: str) -> str:
    if impl == "raybench":
        return "raybench"
    return "bare" if (pixels, order) == ("pil", "dataloader") else f"bare+{pixels}-pixels+{order}-order"


def done_keys(path: Path) -> set:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            keys.add(
                (row["variant"], row["seed"], row["max_epochs"], row["image_size"], row.get("channels_last", False))
            )
    return keys


def worker(args: argparse.Namespace) -> None:
    """Run one implementation over the seeds, one JSONL row per seed as soon as it ends."""
    os.nice(19)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*not an image.*")
    from raybench import data
    from raybench import trial as lifecycle

    cache_dir = Path(args.cache_dir) if args.cache_dir else lifecycle.default_cache_dir()
    prepared = data.prepare(str(args.data), tiers={"tiny": 400})
    out = Path(args.out)
    variant = variant_name(args.impl, args.pixels, args.order)
    done = done_keys(out)
    for seed in parse_seeds(args.seeds):
        if (variant, seed, args.max_epochs, args.image_size, args.channels_last) in done:
            continue
        started = time.perf_counter()
        if args.impl == "raybench":
            row = run_raybench(
                seed,
                prepared,
                max_epochs=args.max_epochs,
                image_size=args.image_size,
                channels_last=args.channels_last,
                cache_dir=cache_dir,
            )
        else:
            row = run_bare(
                seed,
                prepared,
                max_epochs=args.max_epochs,
                image_size=args.image_size,
                pixels=args.pixels,
                order=args.order,
                channels_last=args.channels_last,
                cache_dir=cache_dir,
            )
        row = {
            "impl": args.impl,
            "variant": variant,
            "seed": seed,
            "max_epochs": args.max_epochs,
            "image_size": args.image_size,
            "channels_last": args.channels_last,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "wall_seconds": time.perf_counter() - started,
            **row,
        }
        with out.open("a") as f:  # one line per write: the two processes never interleave within a row
            f.write(json.dumps(row) + "\n")
        first = row["epochs"][0]["train_loss"] if row["epochs"] else float("nan")
        diverged = " non-finite" if row["nonfinite"] else ""
        print(
            f"{variant} seed {seed}: epoch-1 loss {first:.4g}, {row['n_epochs']} epochs, "
            f"test {row['test_accuracy']:.3f} ({row['test_classes']} classes){diverged}, {row['wall_seconds']:.0f} s",
            flush=True,
        )


def parse_seeds(text: str) -> list[int]:
    """ "20" is seeds 0-19; "0,3,5" and "4-7" name them."""
    if text.isdigit():
        return list(range(int(text)))
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("both", "raybench", "bare"), default="both")
    parser.add_argument("--seeds", default="20", help='"20": seeds 0-19; or "0,3" or "4-7"')
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=352)
    parser.add_argument("--pixels", choices=("pil", "raybench"), default="pil", help="bare loop only")
    parser.add_argument("--order", choices=("dataloader", "raybench"), default="dataloader", help="bare loop only")
    parser.add_argument(
        "--channels-last", action="store_true", help="both loops in channels_last (about 2x faster on the CPU)"
    )
    parser.add_argument(
        "--data", default=sample_folder(), help=f"the real images (default: ${SAMPLE_VARIABLE}, as for the tests)"
    )
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--out", default="", help=f"the JSONL (default {JSONL}; --quick: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs, 64 px, into a temp folder")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the JSONL")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.max_epochs, args.image_size = "2", 2, 64
        if not args.out:
            args.out = str(Path(tempfile.mkdtemp(prefix="lenet_collapse-")) / "lenet_collapse.jsonl")
    out = Path(args.out or JSONL)
    args.out = str(out)
    report_path = out.with_suffix(".md")
    if not args.report and not args.data:
        parser.error(f"--data: name the real images' folder (pbc_sample), or set {SAMPLE_VARIABLE}")
    if args.report:
        report_path.write_text(report(load_rows(out)))
        print(report_path)
        return 0
    if args.impl != "both":
        worker(args)
        return 0
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    common = [
        *("--seeds", args.seeds, "--max-epochs", str(args.max_epochs), "--image-size", str(args.image_size)),
        *("--data", args.data, "--out", str(out)),
        *(["--channels-last"] if args.channels_last else []),
        *(["--cache-dir", args.cache_dir] if args.cache_dir else []),
    ]
    procs = [
        subprocess.Popen([sys.executable, "-m", "benchmarks.lenet_collapse", "--impl", impl, *common])
        for impl in ("raybench", "bare")
    ]
    codes = [p.wait() for p in procs]
    minutes = (time.perf_counter() - started) / 60
    report_path.write_text(report(load_rows(out), wall=f"Wall time of this invocation: {minutes:.1f} min."))
    print(f"{out}\n{report_path}\n{minutes:.1f} min")
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
