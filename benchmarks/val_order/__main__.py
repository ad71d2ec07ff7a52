"""The study's command line (see the package's docstring): one in-process trial per CSV row."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from benchmarks.val_order import EPOCHS_CSV, MODELS, REPORT, SAMPLE_VARIABLE, TRIALS_CSV, VARIANTS, sample_folder
from benchmarks.val_order.study import report

KEY = ["model", "seed", "variant", "max_epochs", "image_size"]


def done_keys(path: Path) -> set:
    if not path.exists():
        return set()
    return set(map(tuple, pd.read_csv(path)[KEY].itertuples(index=False)))


def append(path: Path, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_csv(path, mode="a", header=not path.exists(), index=False)


def run_one(model: str, seed: int, variant: str, *, args: argparse.Namespace, prepared, cache_dir: Path):
    from raybench import spec
    from raybench import trial as lifecycle

    config = spec.TrainConfig(
        device="cpu", max_epochs=args.max_epochs, image_size=args.image_size, split_seed=seed, **VARIANTS[variant]
    )
    trial = spec.Trial(model, "tiny", seed=seed, config=config)
    epochs: list[dict] = []

    def on_epoch_end(row: dict, trainer) -> None:
        epochs.append({k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_accuracy", "lr", "improved")})

    started = time.perf_counter()
    result = lifecycle.train_trial(trial, lifecycle.TrialData(prepared, cache_dir), on_epoch_end=on_epoch_end)
    t = result.trial
    row = {
        "model": model,
        "seed": seed,
        "variant": variant,
        "max_epochs": args.max_epochs,
        "image_size": args.image_size,
        "batch_size": t["batch_size"],
        "epochs": t["epochs"],
        "tested_epoch": t["tested_epoch"],
        "stopped_early": bool(t["stopped_early"]),
        "status": t["status"],
        "test_accuracy": t["test_accuracy"],
        "n_train": t["n_train"],
        "n_val": t["n_val"],
        "n_test": t["n_test"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    return row, [{**{k: row[k] for k in KEY}, **e} for e in epochs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.val_order", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=sample_folder(), help=f"the real images (default: ${SAMPLE_VARIABLE})")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 (each also the split seed)")
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="", help=f"the trials CSV (default {TRIALS_CSV}; epochs beside it)")
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--quick", action="store_true", help="lenet5, 1 seed, 2 epochs, into a temp folder")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the CSV")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.seeds, args.max_epochs = "lenet5", 1, 2
        args.out = args.out or str(Path(tempfile.mkdtemp(prefix="val_order-")) / "val_order.csv")
    out = Path(args.out) if args.out else TRIALS_CSV
    epochs_out = out.with_name(out.stem + "_epochs.csv") if args.out else EPOCHS_CSV
    report_path = out.with_suffix(".md") if args.out else REPORT
    if args.report:
        if not out.exists():
            print(f"{out}: no results yet; run `python -m benchmarks.val_order --data FOLDER` first", file=sys.stderr)
            return 2
        report_path.write_text(report(pd.read_csv(out), pd.read_csv(epochs_out)))
        print(report_path)
        return 0
    models = [m for m in args.models.split(",") if m]
    if not args.data or not Path(args.data).is_dir():
        print(
            f"--data {args.data!r}: name the real images' folder (pbc_sample), or set {SAMPLE_VARIABLE}",
            file=sys.stderr,
        )
        return 2
    from raybench import catalog

    unknown = [m for m in models if m not in catalog.MODEL_NAMES]
    if unknown:
        print(f"--models: unknown {', '.join(unknown)}; one of: {', '.join(catalog.MODEL_NAMES)}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*not an image.*")
    from raybench import data
    from raybench import trial as lifecycle

    cache_dir = Path(args.cache_dir) if args.cache_dir else lifecycle.default_cache_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_keys(out)
    prepared: dict[int, data.Prepared] = {}
    for model in models:  # cheapest first: a stopped run has every seed of the models it reached
        for seed in range(args.seeds):
            for variant in VARIANTS:
                if (model, seed, variant, args.max_epochs, args.image_size) in done:
                    continue
                if seed not in prepared:
                    prepared[seed] = data.prepare(args.data, seed=seed, tiers=data.tiers_for("tiny"))
                row, epochs = run_one(model, seed, variant, args=args, prepared=prepared[seed], cache_dir=cache_dir)
                append(epochs_out, epochs)
                append(out, [row])
                print(
                    f"{model} seed {seed} {variant}: {row['epochs']} epochs, tested {row['tested_epoch']}, "
                    f"test {row['test_accuracy']:.3f} ({row['status']}), {row['wall_seconds']:.0f} s",
                    flush=True,
                )
    report_path.write_text(report(pd.read_csv(out), pd.read_csv(epochs_out)))
    print(report_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
