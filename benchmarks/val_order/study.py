"""The study's report: each (model, seed) under the three variants side by side, and how often they disagree."""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.val_order import VARIANTS
from raybench import catalog

REFERENCE = next(iter(VARIANTS))  # "class": the order the earlier default used
# t quantiles (two-sided 95 %) for the mean of n paired differences, n - 1 degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, seed) that every variant finished: test accuracy, tested and last epoch per variant."""
    wide = trials.pivot_table(
        index=["model", "seed"], columns="variant", values=["test_accuracy", "tested_epoch", "epochs"], aggfunc="first"
    )
    wide = wide.dropna()
    order = {m: i for i, m in enumerate(dict.fromkeys(trials.model))}
    wide = wide.sort_index(key=lambda level: level.map(order) if level.name == "model" else level)
    wide.columns = [f"{value}_{variant}" for value, variant in wide.columns]
    return wide.reset_index()


def mean_interval(values: pd.Series) -> str:
    """The mean and its 95 % t interval ("-" for none, the value alone for one)."""
    n = len(values)
    if n == 0:
        return "-"
    mean = values.mean()
    if n == 1:
        return f"{mean:+.3f}"
    half = T95.get(n - 1, 1.96) * values.std(ddof=1) / math.sqrt(n)
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"


def changes(wide: pd.DataFrame, other: str, key: str) -> int:
    return int((wide[f"{key}_{REFERENCE}"] != wide[f"{key}_{other}"]).sum())


def summary_rows(wide: pd.DataFrame) -> list[list[str]]:
    rows = []
    for model, group in [*wide.groupby("model", sort=False), ("all", wide)]:
        for other in list(VARIANTS)[1:]:
            diff = group[f"test_accuracy_{other}"] - group[f"test_accuracy_{REFERENCE}"]
            rows.append(
                [
                    str(model),
                    f"{other} - {REFERENCE}",
                    str(len(group)),
                    f"{changes(group, other, 'tested_epoch')}/{len(group)}",
                    f"{changes(group, other, 'epochs')}/{len(group)}",
                    f"{int((diff != 0).sum())}/{len(group)}",
                    mean_interval(diff),
                    f"{diff.abs().max():.3f}" if len(diff) else "-",
                ]
            )
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def headline(wide: pd.DataFrame) -> str:
    """The one paragraph the README quotes."""
    n = len(wide)
    if n == 0:
        return "No (model, seed) has finished all three variants yet."
    parts = []
    for other in list(VARIANTS)[1:]:
        diff = wide[f"test_accuracy_{other}"] - wide[f"test_accuracy_{REFERENCE}"]
        parts.append(
            f"{other} against {REFERENCE}: the tested epoch changed in {changes(wide, other, 'tested_epoch')} of {n} "
            f"(model, seed) pairs, the last epoch in {changes(wide, other, 'epochs')}, the test accuracy in "
            f"{int((diff != 0).sum())}, by {mean_interval(diff)} on average (95 % t interval), at most "
            f"{diff.abs().max():.3f} ({diff.abs().max() * 115:.0f} of 115 test images)"
        )
    first = catalog.LOOP_DEFAULTS["es_start"] + 1  # the first epoch early stopping considers (1-based)
    tested = [c for c in wide.columns if c.startswith("tested_epoch_")]
    stuck = [m for m, g in wide.groupby("model", sort=False) if (g[tested] == first).all().all()]
    note = (
        f" No variant could change {', '.join(stuck)}: in every seed and variant its tested epoch is {first}, the "
        f"first early stopping considers, so nothing after it improved the validation loss by "
        f"{catalog.LOOP_DEFAULTS['es_min_delta']}."
        if stuck
        else ""
    )
    return "; ".join(parts) + "." + note


def report(trials: pd.DataFrame, epochs: pd.DataFrame) -> str:
    wide = paired(trials)
    models = list(dict.fromkeys(trials.model))
    sizes = trials.drop_duplicates(["n_train", "n_val", "n_test"])[["n_train", "n_val", "n_test"]]
    batches = trials.drop_duplicates("model").set_index("model").batch_size
    seeds = ", ".join(str(s) for s in sorted(trials.seed.unique()))
    per_model = trials.drop_duplicates(["model", "image_size", "max_epochs"])
    setting = ", ".join(f"{r.model} {r.image_size} px" for r in per_model.itertuples())
    caps = ", ".join(str(c) for c in sorted(per_model.max_epochs.unique()))
    split = ", ".join(f"{r.n_train}/{r.n_val}/{r.n_test}" for r in sizes.itertuples())
    out = [
        "# The tiny tier's validation loss: class order, shuffled order, per-image mean",
        "",
        "Written by `python -m benchmarks.val_order --report` from `val_order.csv` (one row per trial) and "
        "`val_order_epochs.csv` (one row per epoch) beside it.",
        "",
        "## What was run",
        "",
        f"- Models {', '.join(models)} (batch sizes {', '.join(f'{m} {batches[m]}' for m in models)}, the thesis's), "
        f"seeds {seeds}; seed s trains with seed s on split seed s, so each seed is "
        f"its own tier draw, validation order and initialisation, and the variants of a seed differ only in the "
        "validation loss.",
        f"- The tiny tier of the shared real sample (train/val/test {split}); {setting}; at most {caps} epochs; "
        "otherwise the thesis's loop "
        "(SGD 0.1, plateau schedule, early stopping from epoch 11 after 20 epochs without a 0.1 drop, the last "
        "improvement tested), on the CPU, one thread, in-process (`trial.train_trial`, no Ray).",
        f"- Variants: `{REFERENCE}` = val_order=class, val_loss=batches (the mean of per-batch means with the split in "
        "class order: on tiny the short last batch is 1 neutrophil and 11 platelets); `shuffled` = val_order=shuffled "
        "(the default: the split in a seeded random order), val_loss=batches; `images` = val_loss=images (the mean "
        "over images, which no order changes).",
        f"- {len(trials)} trials finished, {len(wide)} (model, seed) pairs with all three variants; "
        f"{int((trials.status != 'ok').sum())} not ok; {trials.wall_seconds.sum() / 3600:.1f} h of trial time on the "
        "2-core CPU machine shared with other work. "
        f"{int((~trials.stopped_early.astype(bool)).sum())} of {len(trials)} trials trained to the epoch cap without "
        "early stopping ending them: their last epoch is the cap, and a full-length run could still have moved their "
        "tested epoch.",
        "",
        "Epochs are 1-based; tested = the epoch whose weights were tested, last = the last epoch trained. With the "
        "epoch cap a trial that would have trained on stops at the cap, so the last epoch can only differ between "
        "variants when at least one of them stopped early.",
        "",
        "## Headline",
        "",
        headline(wide),
        "",
        "## How often the variants disagree",
        "",
        table(
            [
                "model",
                "difference",
                "pairs",
                "tested epoch changed",
                "last epoch changed",
                "accuracy changed",
                "mean accuracy difference [95 % t]",
                "largest |difference|",
            ],
            summary_rows(wide),
        ),
        "",
        "## Per seed",
        "",
    ]
    rows = []
    for r in wide.itertuples(index=False):
        d = r._asdict()
        rows.append(
            [r.model, str(r.seed)]
            + [f"{d[f'test_accuracy_{v}']:.3f}" for v in VARIANTS]
            + [f"{int(d[f'tested_epoch_{v}'])}/{int(d[f'epochs_{v}'])}" for v in VARIANTS]
        )
    out.append(
        table(["model", "seed", *(f"test {v}" for v in VARIANTS), *(f"tested/last {v}" for v in VARIANTS)], rows)
    )
    means = trials.groupby(["model", "variant"], sort=False).agg(
        trials=("seed", "size"),
        test_accuracy=("test_accuracy", "mean"),
        tested_epoch=("tested_epoch", "mean"),
        epochs=("epochs", "mean"),
        stopped_early=("stopped_early", "sum"),
    )
    out += [
        "",
        "## Means per model and variant (all finished trials)",
        "",
        table(
            [
                "model",
                "variant",
                "trials",
                "mean test accuracy",
                "mean tested epoch",
                "mean last epoch",
                "stopped early",
            ],
            [
                [
                    m,
                    v,
                    str(int(r.trials)),
                    f"{r.test_accuracy:.3f}",
                    f"{r.tested_epoch:.1f}",
                    f"{r.epochs:.1f}",
                    str(int(r.stopped_early)),
                ]
                for (m, v), r in means.iterrows()
            ],
        ),
        "",
    ]
    return "\n".join(out)
