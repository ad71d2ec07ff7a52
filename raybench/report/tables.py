"""The report's numbered tables (thesis tables 5.1-5.17 and A.1): the numbers, and the same numbers as text."""

from __future__ import annotations

import dataclasses
import math
import re

import pandas as pd

from raybench import catalog
from raybench.report.comparison import map_comparison
from raybench.report.formatting import config_label, fmt, fmt_interval, is_missing
from raybench.report.inputs import Thesis, model_rank, tier_rank

# Table numbers of the thesis: per tier (results, mAP); per architecture; pretrained (results, change, mAP).
TIER_TABLES = {"large": ("5.1", "5.2"), "medium": ("5.3", "5.4"), "small": ("5.5", "5.6"), "tiny": ("5.7", "5.8")}
ARCHITECTURE_TABLES = dict(zip(catalog.ARCHITECTURES, ("5.9", "5.10", "5.11", "5.12", "5.13", "5.14"), strict=True))
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
    if r.status == "partial":
        others = [f"{getattr(r, 'seeds_' + s)} {s}" for s in ("failed", "missing") if getattr(r, "seeds_" + s)]
        return "partial: " + ", ".join([f"{r.seeds_ok} ok", *others])
    if r.seeds_failed and r.seeds_missing:
        return f"**{r.status.upper()}** ({r.seeds_failed} failed, {r.seeds_missing} missing)"
    return f"**{r.status.upper()}**"


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


TIER_COLUMNS = [
    "model", "architecture", "status", "seeds_ok", "seeds_failed", "seeds_missing", "seeds",
    "parameters", "thesis_parameters", "parameters_diff", "batch_size", "thesis_batch_size", "batch_size_diff",
    "epochs", "hit_epoch_limit", "thesis_epochs", "thesis_hit_epoch_limit", "epochs_diff", "best_epoch",
    "train_seconds", "thesis_train_seconds", "train_seconds_ratio",
    "seconds_per_epoch", "thesis_seconds_per_epoch", "seconds_per_epoch_ratio",
    "accuracy", "accuracy_low", "accuracy_high", "accuracy_sd", "thesis_accuracy", "accuracy_diff",
    "thesis_interval_low", "thesis_interval_high", "interval_n", "inside_thesis_interval",
    "map_at_5", "map_at_5_low", "map_at_5_high", "map_at_100", "map_at_100_low", "map_at_100_high",
    "device", "image_size", "precision", "max_epochs", "n_train", "n_val", "n_test",
]  # fmt: skip


def tier_table(comparison: pd.DataFrame, *, tier: str, pretrained: bool = False) -> Table:
    """Tables 5.1/5.3/5.5/5.7 (and 5.15 for pretrained): every configuration of one tier against the thesis."""
    rows = comparison[(comparison.tier == tier) & (comparison.pretrained == pretrained)]
    headers = [
        "Model", "Status", "Trainable params" if pretrained else "Params", "thesis", "Δ",
        "Batch", "thesis", "Δ", "Epochs", "thesis", "Δ", "Train time (s)", "thesis", "×",
        "s/epoch", "thesis", "×", "Accuracy", "thesis", "Δ", "thesis 95% interval: inside?",
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
        ]
        for r in rows.itertuples()
    ]
    devices = sorted({d for ds in rows.device for d in str(ds).split(", ") if d})
    which = "ImageNet-pretrained, frozen backbone" if pretrained else "trained from scratch"
    number = _number("results", tier, pretrained)
    note = (
        f"Epochs marked * hit the epoch limit. × is our time divided by the thesis's: ours on "
        f"{', '.join(devices) or 'no device (nothing finished)'}, the thesis's on one {catalog.THESIS_DEVICE} (fp32). "
        "Accuracy with several seeds: mean [95% t-interval]."
    )
    title = f"Table {number}: tier {tier}, {which}"
    return Table(_key(number, tier), title, rows[TIER_COLUMNS].reset_index(drop=True), headers, shown, note)


def map_table(comparison: pd.DataFrame, thesis: Thesis, *, tier: str, pretrained: bool = False) -> Table:
    """Tables 5.2/5.4/5.6/5.8 (5.17 pretrained): mAP of each architecture's best configuration."""
    data = map_comparison(comparison, thesis, tier=tier, pretrained=pretrained)
    headers = [
        "Architecture",
        "Our best",
        "Accuracy",
        "mAP@5",
        "thesis",
        "Δ",
        "mAP@100",
        "thesis",
        "Δ",
        "Thesis's best",
    ]
    shown = [
        [
            r["architecture"],
            r["model"] if isinstance(r["model"], str) else "**none finished**",
            fmt(r["accuracy"], "acc"),
            fmt_interval(r["map_at_5"], r.get("map_at_5_low"), r.get("map_at_5_high")),
            fmt(r["thesis_map_at_5"], "acc"),
            fmt(r["map_at_5_diff"], "sacc"),
            fmt_interval(r["map_at_100"], r.get("map_at_100_low"), r.get("map_at_100_high")),
            fmt(r["thesis_map_at_100"], "acc"),
            fmt(r["map_at_100_diff"], "sacc"),
            r["thesis_model"] if isinstance(r["thesis_model"], str) else "–",
        ]
        for _, r in data.iterrows()
    ]
    number = _number("map", tier, pretrained)
    which = ", ImageNet-pretrained" if pretrained else ""
    title = f"Table {number}: mAP@5 and mAP@100 of the best configuration of each architecture, tier {tier}{which}"
    note = (
        "Best = highest mean test accuracy of the architecture. Where the thesis lists several best models "
        "(ties), the comparison uses ours when it is one of them, else the first."
    )
    return Table(_key(number, tier), title, data, headers, shown, note)


def architecture_table(comparison: pd.DataFrame, architecture: str) -> Table:
    """Tables 5.9-5.14: one architecture's configurations across tiers (from scratch), accuracy against the thesis."""
    rows = comparison[(comparison.architecture == architecture) & ~comparison.pretrained]
    tiers = sorted(set(rows.tier), key=tier_rank)
    models = sorted(set(rows.model), key=model_rank)
    columns = (
        "n_train", "status", "accuracy", "accuracy_low", "accuracy_high", "thesis_accuracy", "accuracy_diff",
        "inside_thesis_interval",
    )  # fmt: skip
    records, shown = [], []
    for model in models:
        record, cells = {"model": model, "architecture": architecture}, [model]
        for tier in tiers:
            match = rows[(rows.model == model) & (rows.tier == tier)]
            r = match.iloc[0] if len(match) else None
            get = (lambda c, r=r: r[c]) if r is not None else (lambda c: math.nan)
            for column in columns:
                record[f"{column}_{tier}"] = get(column)
            status = get("status") if r is not None else "not in this run"
            if status in ("ok", "partial"):
                ours = fmt_interval(get("accuracy"), get("accuracy_low"), get("accuracy_high"))
            else:
                ours = "–" if r is None else f"**{str(status).upper()}**"
            cells += [ours, fmt(get("thesis_accuracy"), "acc"), fmt(get("accuracy_diff"), "sacc")]
        records.append(record)
        shown.append(cells)
    headers = ["Model"] + [h for t in tiers for h in (f"{t}", "thesis", "Δ")]
    number = ARCHITECTURE_TABLES.get(architecture, architecture)
    train_sizes = ", ".join(f"{t} {_train_size(rows, t)}" for t in tiers)
    return Table(
        _key(number, architecture),
        f"Table {number}: {architecture}, test accuracy per tier (from scratch)",
        pd.DataFrame(records),
        headers,
        shown,
        f"Training images per tier here: {train_sizes}.",
    )


def _train_size(rows: pd.DataFrame, tier: str) -> str:
    n = pd.to_numeric(rows[rows.tier == tier].n_train, errors="coerce").dropna()
    return str(int(n.iloc[0])) if len(n) else "?"


def change_table(change: pd.DataFrame, *, tier: str) -> Table:
    """Table 5.16: proportion change from training from scratch to the pretrained model."""
    data = change[change.tier == tier].reset_index(drop=True)
    headers = [
        "Model", "Accuracy scratch → pretrained", "change", "thesis", "Δ",
        "Epochs change", "thesis", "Δ", "s/epoch change", "thesis", "Δ", "Train time change", "thesis", "Δ",
    ]  # fmt: skip
    shown = []
    for _, r in data.iterrows():
        cells = [r["model"], f"{fmt(r['accuracy_scratch'], 'acc')} → {fmt(r['accuracy_pretrained'], 'acc')}"]
        for measure in ("accuracy", "epochs", "seconds_per_epoch", "train_seconds"):
            cells += [
                fmt(r[f"{measure}_change"], "pct"),
                fmt(r[f"thesis_{measure}_change"], "pct"),
                fmt(r[f"{measure}_change_diff"], "spct"),
            ]
        shown.append(cells)
    number = _number("change", tier, True)
    title = f"Table {number}: proportion change from scratch to pretrained, tier {tier}"
    note = "Change = (pretrained − scratch) / scratch; Δ in percentage points (ours − thesis's)."
    return Table(_key(number, tier), title, data, headers, shown, note)


def trials_table(trials: pd.DataFrame) -> Table:
    """Every trial, finished, failed or missing, with its error's last line."""
    columns = [
        "trial_id", "model", "tier", "pretrained", "seed", "status", "epochs", "best_epoch", "stopped_early",
        "test_accuracy", "map_at_5", "map_at_100", "train_seconds", "seconds_per_epoch", "device", "error",
    ]  # fmt: skip
    data = trials.reindex(columns=columns)
    headers = [
        "Trial", "Status", "Epochs", "Tested epoch", "Accuracy", "mAP@5", "mAP@100", "Train time (s)", "s/epoch",
        "Error",
    ]  # fmt: skip
    shown = []
    for r in data.itertuples():
        if isinstance(r.trial_id, str):
            name = r.trial_id
        else:
            name = f"{config_label(r.model, r.pretrained)} on {r.tier} (no plan: seed unknown)"
        error = str(r.error).strip().splitlines()[-1][:160] if isinstance(r.error, str) and r.error.strip() else ""
        status = r.status if r.status == "ok" else f"**{str(r.status).upper()}**"
        shown.append(
            [
                name,
                status,
                fmt(r.epochs, "int"),
                fmt(r.best_epoch, "int"),
                fmt(r.test_accuracy, "acc"),
                fmt(r.map_at_5, "acc"),
                fmt(r.map_at_100, "acc"),
                fmt(r.train_seconds, "sec"),
                fmt(r.seconds_per_epoch, "sec"),
                error,
            ]
        )
    note = (
        "Missing: planned (or, without plan.parquet, in the thesis's grid for a tier that ran) "
        "but without a result yet."
    )
    return Table("table_a.1_trials", "Table A.1: every trial", data, headers, shown, note)
