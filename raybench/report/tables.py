"""The report's numbered tables (thesis tables 5.1-5.17 and A.1): the numbers, and the same numbers as text."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raybench import catalog
from raybench.report.comparison import groups, map_comparison
from raybench.report.formatting import config_label, fmt, fmt_interval, is_missing
from raybench.report.inputs import Thesis, model_rank, tier_rank

# Table numbers of the thesis: per tier (results, mAP); per architecture; pretrained (results, ratios, mAP).
TIER_TABLES = {"large": ("5.1", "5.2"), "medium": ("5.3", "5.4"), "small": ("5.5", "5.6"), "tiny": ("5.7", "5.8")}
# The thesis's order, which is not the catalog's: ViT and MLP-Mixer come before ConvNeXt.
ARCHITECTURE_TABLES = {
    "LeNet-5": "5.9",
    "ResNet": "5.10",
    "MobileNetV3": "5.11",
    "ViT": "5.12",
    "MLP-Mixer": "5.13",
    "ConvNeXt": "5.14",
}
PRETRAINED_TABLES = ("5.15", "5.16", "5.17")


@dataclasses.dataclass(frozen=True)
class Table:
    """A numbered table: `data` (numbers, written as CSV) and `headers`/`rows` (formatted, for reading)."""

    key: str
    title: str
    data: pd.DataFrame
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def _status_cell(r) -> str:
    if r.status == "ok":
        return "ok" if r.seeds_ok == 1 else f"ok ({r.seeds_ok} seeds)"
    others = [f"{getattr(r, 'seeds_' + s)} {s}" for s in ("failed", "diverged", "missing") if getattr(r, "seeds_" + s)]
    if r.status == "partial":
        return "partial: " + ", ".join([f"{r.seeds_ok} ok", *others])
    if len(others) > 1:
        return f"**{r.status.upper()}** ({', '.join(others)})"
    return f"**{r.status.upper()}**"


def _classes_cell(predicted, collapsed_seeds=0, seeds=1) -> str:
    """Classes the tested model predicts on the test set (the worst seed's); bold when it collapsed to <= 2."""
    if is_missing(predicted):
        return "–"
    if not collapsed_seeds:
        return str(int(predicted))
    of = f", {int(collapsed_seeds)} of {int(seeds)} seeds" if seeds > 1 else ""
    return f"**{int(predicted)}: collapsed{of}**"


def _epochs_cell(epochs, hit=False, *, signed: bool = False) -> str:
    """Epochs (a mean over seeds may be fractional), '*' when the epoch limit was hit."""
    if is_missing(epochs):
        return "–"
    digits = 0 if float(epochs).is_integer() else 1
    text = "0" if signed and epochs == 0 else f"{epochs:{'+' if signed else ''}.{digits}f}"
    return text + ("*" if not is_missing(hit) and bool(hit) else "")


def _inside_cell(r) -> str:
    if is_missing(r.thesis_interval_low):
        return "–"
    mark = "–" if is_missing(r.inside_thesis_interval) else ("yes" if r.inside_thesis_interval else "**no**")
    return f"{r.thesis_interval_low:.3f}–{r.thesis_interval_high:.3f} (n={int(r.interval_n)}): {mark}"


def _number(kind: str, tier: str, pretrained: bool) -> str:
    """Thesis table number of a per-tier table ('results', 'map', 'change'); tiers the thesis lacks get none."""
    if pretrained:
        number = dict(zip(("results", "change", "map"), PRETRAINED_TABLES, strict=True))[kind]
        return number if tier == "tiny" else f"{number} ({tier})"
    if tier in TIER_TABLES:
        return TIER_TABLES[tier][0 if kind == "results" else 1]
    return f"{'results' if kind == 'results' else 'mAP'} ({tier})"


def _key(number: str, *parts: str) -> str:
    return "table_" + "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", p).strip("-").lower() for p in (number, *parts) if p)


LEADERS = 3  # configurations per tier on the leaderboard
LEADERBOARD_COLUMNS = [
    "tier", "pretrained", "rank", "model", "architecture", "seeds_ok", "accuracy", "accuracy_low", "accuracy_high",
    "thesis_accuracy", "accuracy_diff", "thesis_rank", "thesis_configurations",
]  # fmt: skip


def leaderboard(comparison: pd.DataFrame, thesis: Thesis, *, top: int = LEADERS) -> pd.DataFrame:
    """The `top` configurations of each tier (from scratch, then pretrained) by mean test accuracy over finished
    seeds, with the thesis's accuracy for the same configuration and its rank among the thesis's of that tier."""
    frames = []
    for (tier, pretrained), group in groups(comparison[comparison.seeds_ok > 0]):
        best = group.sort_values("accuracy", ascending=False, kind="stable").head(top)
        published = thesis.results[(thesis.results.tier == tier) & (thesis.results.pretrained == pretrained)]
        ranks = published.set_index("model").test_accuracy.rank(ascending=False, method="min")
        frames.append(
            best.assign(
                rank=range(1, len(best) + 1),
                thesis_rank=best.model.map(ranks).astype("Int64"),
                thesis_configurations=len(published),
            )
        )
    if not frames:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    return pd.concat(frames, ignore_index=True)[LEADERBOARD_COLUMNS]


def leaderboard_table(comparison: pd.DataFrame, thesis: Thesis, *, top: int = LEADERS) -> Table:
    """The best configurations of each tier at a glance, each beside the thesis's number for it."""
    data = leaderboard(comparison, thesis, top=top)
    headers = ["Tier", "#", "Configuration", "Seeds", "Test accuracy", "thesis", "Δ", "Thesis's rank"]
    shown, previous = [], None
    for r in data.itertuples():
        group = f"{r.tier}{' (pretrained)' if r.pretrained else ''}"
        thesis_rank = "–" if is_missing(r.thesis_rank) else f"{int(r.thesis_rank)} of {r.thesis_configurations}"
        shown.append(
            [
                group if group != previous else "",
                str(r.rank),
                f"{r.architecture}: {r.model}",
                str(int(r.seeds_ok)),
                fmt_interval(r.accuracy, r.accuracy_low, r.accuracy_high),
                fmt(r.thesis_accuracy, "acc"),
                fmt(r.accuracy_diff, "sacc"),
                thesis_rank,
            ]
        )
        previous = group
    note = (
        f"The {top} configurations of each tier with the highest mean test accuracy over their finished seeds; "
        "with several seeds: mean [95% t-interval]. thesis: its accuracy for the same configuration; Thesis's rank: "
        "where that configuration stands among the thesis's of the tier (1 = its best)."
    )
    return Table("table_leaderboard", "Leaderboard: the best configurations of each tier", data, headers, shown, note)


TIER_COLUMNS = [
    "model", "architecture", "status", "seeds_ok", "seeds_failed", "seeds_missing", "seeds",
    "parameters", "thesis_parameters", "parameters_diff", "batch_size", "thesis_batch_size", "batch_size_diff",
    "epochs", "hit_epoch_limit", "thesis_epochs", "thesis_hit_epoch_limit", "epochs_diff", "tested_epoch",
    "train_seconds", "thesis_train_seconds", "train_seconds_ratio",
    "seconds_per_epoch", "thesis_seconds_per_epoch", "seconds_per_epoch_ratio",
    "accuracy", "accuracy_low", "accuracy_high", "accuracy_sd", "thesis_accuracy", "accuracy_diff",
    "thesis_interval_low", "thesis_interval_high", "interval_n", "inside_thesis_interval",
    "map_at_5", "map_at_5_low", "map_at_5_high", "map_at_100", "map_at_100_low", "map_at_100_high",
    "classes_predicted", "seeds_collapsed", "seeds_diverged",
    "device", "image_size", "precision", "max_epochs", "n_train", "n_val", "n_test",
]  # fmt: skip


def tier_table(comparison: pd.DataFrame, *, tier: str, pretrained: bool = False) -> Table:
    """Tables 5.1/5.3/5.5/5.7 (and 5.15 for pretrained): every configuration of one tier against the thesis."""
    rows = comparison[(comparison.tier == tier) & (comparison.pretrained == pretrained)]
    headers = [
        "Model", "Status", "Trainable params" if pretrained else "Params", "thesis", "Δ",
        "Batch", "thesis", "Δ", "Epochs", "thesis", "Δ", "Train time (s)", "thesis", "×",
        "s/epoch", "thesis", "×", "Accuracy", "thesis", "Δ", "thesis 95% interval: inside?", "Classes predicted",
    ]  # fmt: skip
    shown = [
        [
            r.model,
            _status_cell(r),
            fmt(r.parameters, "int"),
            fmt(r.thesis_parameters, "int"),
            fmt(r.parameters_diff, "sint"),
            fmt(r.batch_size, "int"),
            fmt(r.thesis_batch_size, "int"),
            fmt(r.batch_size_diff, "sint"),
            _epochs_cell(r.epochs, r.hit_epoch_limit),
            _epochs_cell(r.thesis_epochs, r.thesis_hit_epoch_limit),
            _epochs_cell(r.epochs_diff, signed=True),
            fmt(r.train_seconds, "sec"),
            fmt(r.thesis_train_seconds, "sec"),
            fmt(r.train_seconds_ratio, "ratio"),
            fmt(r.seconds_per_epoch, "sec"),
            fmt(r.thesis_seconds_per_epoch, "sec"),
            fmt(r.seconds_per_epoch_ratio, "ratio"),
            fmt_interval(r.accuracy, r.accuracy_low, r.accuracy_high),
            fmt(r.thesis_accuracy, "acc"),
            fmt(r.accuracy_diff, "sacc"),
            _inside_cell(r),
            _classes_cell(r.classes_predicted, r.seeds_collapsed, r.seeds_ok),
        ]
        for r in rows.itertuples()
    ]
    devices = sorted({d for ds in rows.device for d in str(ds).split(", ") if d})
    which = "ImageNet-pretrained, frozen backbone" if pretrained else "trained from scratch"
    number = _number("results", tier, pretrained)
    note = (
        f"Epochs marked * hit the epoch limit. × is our time divided by the thesis's: ours on "
        f"{', '.join(devices) or 'no device (nothing finished)'}, the thesis's on one {catalog.THESIS_DEVICE} (fp32). "
        "Accuracy with several seeds: mean [95% t-interval]. Classes predicted: how many of the 8 classes the tested "
        "model predicts on the test set (the worst seed's); 2 or fewer is a collapse."
    )
    title = f"Table {number}: tier {tier}, {which}"
    return Table(_key(number, tier), title, rows[TIER_COLUMNS].reset_index(drop=True), headers, shown, note)


def map_table(comparison: pd.DataFrame, thesis: Thesis, *, tier: str, pretrained: bool = False) -> Table:
    """Tables 5.2/5.4/5.6/5.8 (5.17 pretrained): mAP of each architecture's best configurations, ties each shown."""
    data = map_comparison(comparison, thesis, tier=tier, pretrained=pretrained)
    headers = [
        "Architecture", "Model", "Best", "Accuracy", "thesis", "mAP@5", "thesis", "Δ", "mAP@100", "thesis", "Δ",
    ]  # fmt: skip
    shown = []
    for _, r in data.iterrows():
        best = " and ".join(who for who, flag in (("ours", r["our_best"]), ("thesis's", r["thesis_best"])) if flag)
        accuracy = fmt(r["accuracy"], "acc") if r["seeds_ok"] else f"**{str(r['status']).upper()}**"
        shown.append(
            [
                r["architecture"],
                r["model"],
                best,
                accuracy,
                fmt(r["thesis_accuracy"], "acc"),
                fmt_interval(r["map_at_5"], r.get("map_at_5_low"), r.get("map_at_5_high")),
                fmt(r["thesis_map_at_5"], "acc"),
                fmt(r["map_at_5_diff"], "sacc"),
                fmt_interval(r["map_at_100"], r.get("map_at_100_low"), r.get("map_at_100_high")),
                fmt(r["thesis_map_at_100"], "acc"),
                fmt(r["map_at_100_diff"], "sacc"),
            ]
        )
    number = _number("map", tier, pretrained)
    which = ", ImageNet-pretrained" if pretrained else ""
    title = f"Table {number}: mAP@5 and mAP@100 of the best configurations of each architecture, tier {tier}{which}"
    note = (
        "Best = highest mean test accuracy of the architecture: ours, and the thesis's (it lists tied and further "
        "configurations for some architectures: each is a row). The thesis publishes mAP only for its best ones. "
        "mAP@N as §5.1.1: per class, the images predicted as it ranked by the raw output, true positives among the "
        "first N divided by N."
    )
    return Table(_key(number, tier), title, data, headers, shown, note)


ARCHITECTURE_COLUMNS = [
    "model", "tier", "n_train", "status", "seeds_ok", "parameters", "thesis_parameters", "batch_size",
    "thesis_batch_size", "epochs", "hit_epoch_limit", "thesis_epochs", "thesis_hit_epoch_limit",
    "train_seconds", "thesis_train_seconds", "train_seconds_ratio",
    "seconds_per_epoch", "thesis_seconds_per_epoch", "seconds_per_epoch_ratio",
    "accuracy", "accuracy_low", "accuracy_high", "thesis_accuracy", "accuracy_diff", "inside_thesis_interval",
    "classes_predicted", "seeds_collapsed",
]  # fmt: skip


def architecture_table(comparison: pd.DataFrame, architecture: str) -> Table:
    """Tables 5.9-5.14: one architecture's configurations in every tier (from scratch): parameters, batch size,
    epochs, times and accuracy, each beside the thesis's."""
    rows = comparison[(comparison.architecture == architecture) & ~comparison.pretrained]
    order = rows.apply(lambda r: (model_rank(r.model), r.model, tier_rank(r.tier)), axis=1)
    rows = rows.iloc[sorted(range(len(rows)), key=lambda i: order.iloc[i])] if len(rows) else rows
    shown = []
    for r in rows.itertuples():
        if r.status in ("ok", "partial"):
            accuracy = fmt_interval(r.accuracy, r.accuracy_low, r.accuracy_high)
        else:
            accuracy = f"**{str(r.status).upper()}**"
        shown.append(
            [
                r.model,
                r.tier,
                fmt(pd.to_numeric(r.n_train, errors="coerce"), "int"),
                fmt(r.parameters, "int"),
                fmt(r.thesis_parameters, "int"),
                fmt(r.batch_size, "int"),
                fmt(r.thesis_batch_size, "int"),
                _epochs_cell(r.epochs, r.hit_epoch_limit),
                _epochs_cell(r.thesis_epochs, r.thesis_hit_epoch_limit),
                fmt(r.train_seconds, "sec"),
                fmt(r.thesis_train_seconds, "sec"),
                fmt(r.train_seconds_ratio, "ratio"),
                fmt(r.seconds_per_epoch, "sec"),
                fmt(r.thesis_seconds_per_epoch, "sec"),
                fmt(r.seconds_per_epoch_ratio, "ratio"),
                accuracy,
                fmt(r.thesis_accuracy, "acc"),
                fmt(r.accuracy_diff, "sacc"),
                _classes_cell(r.classes_predicted, r.seeds_collapsed, r.seeds_ok),
            ]
        )
    headers = [
        "Model", "Tier", "Train images", "Params", "thesis", "Batch", "thesis", "Epochs", "thesis",
        "Train time (s)", "thesis", "×", "s/epoch", "thesis", "×", "Accuracy", "thesis", "Δ", "Classes predicted",
    ]  # fmt: skip
    number = ARCHITECTURE_TABLES.get(architecture, architecture)
    return Table(
        _key(number, architecture),
        f"Table {number}: {architecture} in every tier (from scratch)",
        rows.reindex(columns=ARCHITECTURE_COLUMNS).reset_index(drop=True),
        headers,
        shown,
        "Epochs marked * hit the epoch limit; × is our time divided by the thesis's (other hardware, see the tier "
        "tables). Train images: ours (table 4.1 in Method: as printed and as used).",
    )


def change_table(ratios: pd.DataFrame, *, tier: str) -> Table:
    """Table 5.16: pretrained / from scratch of parameters, accuracy, epochs and times, ours beside the thesis's."""
    data = ratios[ratios.tier == tier].reset_index(drop=True)
    headers = [
        "Model", "Parameters", "thesis", "Accuracy", "thesis", "Δ", "Epochs", "thesis", "Δ",
        "s/epoch", "thesis", "Δ", "Train time", "thesis", "Δ",
    ]  # fmt: skip
    shown = []
    for _, r in data.iterrows():
        cells = [r["model"], fmt(r["parameters_ratio"], "ratio"), fmt(r["thesis_parameters_ratio"], "ratio")]
        for measure in ("accuracy", "epochs", "seconds_per_epoch", "train_seconds"):
            cells += [
                fmt(r[f"{measure}_ratio"], "ratio"),
                fmt(r[f"thesis_{measure}_ratio"], "ratio"),
                fmt(r[f"{measure}_ratio_diff"], "sfloat"),
            ]
        shown.append(cells)
    number = _number("change", tier, True)
    title = f"Table {number}: pretrained / from scratch, tier {tier}"
    note = (
        "Each measure of the pretrained configuration divided by the same model's trained from scratch (×1: the same; "
        "Parameters: the pretrained model's trainable ones, its new head); Δ = ours − thesis's."
    )
    return Table(_key(number, tier), title, data, headers, shown, note)


def trials_table(trials: pd.DataFrame) -> Table:
    """Every trial, finished, failed, diverged or missing, with its error's last line."""
    columns = [
        "trial_id", "model", "tier", "pretrained", "seed", "status", "epochs", "tested_epoch", "stopped_early",
        "test_accuracy", "map_at_5", "map_at_100", "classes_predicted", "collapsed", "train_seconds",
        "seconds_per_epoch", "device", "error",
    ]  # fmt: skip
    data = trials.reindex(columns=columns)
    headers = [
        "Trial", "Status", "Epochs", "Tested epoch", "Accuracy", "Classes predicted", "mAP@5", "mAP@100",
        "Train time (s)", "s/epoch", "Error",
    ]  # fmt: skip
    shown = []
    for r in data.itertuples():
        collapsed = 1 if not is_missing(r.collapsed) and bool(r.collapsed) else 0
        shown.append(
            [
                _trial_name(r),
                _trial_status(r.status),
                fmt(r.epochs, "int"),
                fmt(r.tested_epoch, "int"),
                fmt(r.test_accuracy, "acc"),
                _classes_cell(r.classes_predicted, collapsed),
                fmt(r.map_at_5, "acc"),
                fmt(r.map_at_100, "acc"),
                fmt(r.train_seconds, "sec"),
                fmt(r.seconds_per_epoch, "sec"),
                _last_line(r.error),
            ]
        )
    note = (
        "Missing: planned (or, without plan.parquet, in the thesis's grid for a tier that ran) "
        "but without a result yet. Diverged: the loss stopped being finite; the last improvement before it "
        "(if any) was tested, and its numbers do not enter the configuration's mean."
    )
    return Table("table_a.1_trials", "Table A.1: every trial", data, headers, shown, note)


def instability_table(trials: pd.DataFrame, classes: Sequence[str]) -> Table:
    """The trials that collapsed (predict <= 2 classes on the test set) or diverged, with what they predict."""
    unstable = trials[(trials.status == "diverged") | trials.collapsed.fillna(False).astype(bool)]
    columns = [
        "trial_id", "model", "tier", "pretrained", "seed", "status", "classes_predicted", "collapsed", "epochs",
        "tested_epoch", "test_accuracy", "error",
    ]  # fmt: skip
    data = unstable.reindex(columns=columns).reset_index(drop=True)
    data["predicted_counts"] = [_predicted_counts(m, classes) for m in unstable.get("confusion_matrix", [])]
    headers = [
        "Trial", "Status", "Classes predicted", "Test images predicted as", "Epochs", "Tested epoch", "Accuracy",
        "Error",
    ]  # fmt: skip
    shown = [
        [
            _trial_name(r),
            _trial_status(r.status),
            _classes_cell(r.classes_predicted, 1 if not is_missing(r.collapsed) and bool(r.collapsed) else 0),
            r.predicted_counts or "–",
            fmt(r.epochs, "int"),
            fmt(r.tested_epoch, "int"),
            fmt(r.test_accuracy, "acc"),
            _last_line(r.error),
        ]
        for r in data.itertuples()
    ]
    note = (
        "Collapsed: the tested model predicts at most 2 of the 8 classes on the test set (as the thesis's MobileNets "
        "on the tiny tier, which predict one class only: AP@N of every other class is 0). Diverged: the training or "
        "validation loss stopped being finite, which ended the trial."
    )
    title = "Unstable trials: collapsed to at most 2 predicted classes, or diverged"
    return Table("table_unstable_trials", title, data, headers, shown, note)


def _trial_name(r) -> str:
    if isinstance(r.trial_id, str):
        return r.trial_id
    return f"{config_label(r.model, r.pretrained)} on {r.tier} (no plan: seed unknown)"


def _trial_status(status) -> str:
    return status if status == "ok" else f"**{str(status).upper()}**"


def _last_line(error) -> str:
    return str(error).strip().splitlines()[-1][:160] if isinstance(error, str) and error.strip() else ""


def _predicted_counts(matrix, classes: Sequence[str]) -> str:
    """'neutrophil 100, ig 15': the test images predicted as each class, most first (from the confusion matrix)."""
    if matrix is None or isinstance(matrix, float) or len(matrix) == 0:
        return ""
    counts = np.asarray([list(row) for row in matrix]).sum(0)
    names = list(classes) + [f"class {i}" for i in range(len(classes), len(counts))]
    return ", ".join(f"{names[i]} {int(counts[i])}" for i in np.argsort(-counts, kind="stable") if counts[i])
