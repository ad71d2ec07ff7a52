"""`python -m raybench.train --model NAME --tier TIER --out DIR`: one trial in this process, no Ray."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from raybench import catalog, results, spec
from raybench import data as pbc
from raybench.loop import Trainer
from raybench.trial import TrialData, default_cache_dir, train_trial


def check_out(out: Path, trial: spec.Trial) -> None:
    """Refuse, before training, an --out that cannot take the trial or would lose results already there."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable; choose another folder")
    if (out / "plan.parquet").is_file():  # a grid run's folder: its manifest and rows are the run's own
        raise ValueError(f"--out {out} is the results folder of a grid run (python -m raybench.run); choose another")
    if results.finished_trials(out).get(trial.trial_id):
        trials, _ = results.read_table(out, "trials")
        before = trials[trials.trial_id == trial.trial_id]
        if "options" in before and (before.options != trial.columns()["options"]).any():
            raise ValueError(
                f"--out {out} already holds trial {trial.trial_id} trained with other options; "
                "choose another --out, or train it with the same --set"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raybench.train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(catalog.MODEL_NAMES)}")
    parser.add_argument("--tier", required=True, help="tiny, small, medium or large (thesis table 4.1)")
    parser.add_argument(
        "--data", help="PBC_dataset_normal_DIB folder, its parent or the .zip (default: the embedded 400-image sample)"
    )
    parser.add_argument(
        "--pretrained", action="store_true", help="ImageNet weights, frozen backbone, new head (table 5.15)"
    )
    parser.add_argument(
        "--weights", help="explicit ImageNet weights file for --pretrained (default: torchvision's cache)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"training option (repeat for several); the options with their defaults: {spec.describe_options()}",
    )
    parser.add_argument(
        "--cache", default=str(default_cache_dir()), help="decode-once image cache folder (default: %(default)s)"
    )
    parser.add_argument("--out", required=True, help="folder for trials/epochs/predictions/manifest.parquet")
    args = parser.parse_args(argv)
    try:
        config = spec.make_config(spec.parse_overrides(args.set))
        trial = spec.Trial(args.model, args.tier, pretrained=args.pretrained, seed=args.seed, config=config)
        check_out(Path(args.out), trial)
        prepared = pbc.prepare(
            args.data,
            seed=config.split_seed,
            split_rule=config.split_rule,
            dedupe=config.dedupe,
            tiers=pbc.tiers_for(args.tier),
        )
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)  # one line, without the usage before it
        raise SystemExit(2) from None
    print(prepared.report, flush=True)

    def show(row: dict, trainer: Trainer) -> None:
        mark = " *" if row["improved"] else ""
        print(
            f"epoch {row['epoch']:3d}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
            f"val_acc {row['val_accuracy']:.3f}  lr {row['lr']:.0e}  {row['epoch_seconds']:.1f}s{mark}",
            flush=True,
        )

    result = train_trial(trial, TrialData(prepared, args.cache), weights_file=args.weights, on_epoch_end=show)
    out = Path(args.out)
    results.write_results(out, [result], manifest=prepared.manifest[prepared.manifest.tier == trial.tier])
    t = result.trial
    print(
        f"{trial.trial_id}: {t['epochs']} epochs (tested epoch {t['tested_epoch']}), test accuracy "
        f"{t['test_accuracy']:.3f}, mAP@5 {t['map_at_5']:.3f}, {t['train_seconds']:.1f}s -> {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
