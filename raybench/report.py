"""The thesis's chapter 5 redrawn from a run's Parquet results, beside the published numbers.

`python -m raybench.report results/<name>` writes results/<name>/report/: report.md and report.html with
the figures as PNG files (figures/), and every table as CSV (tables/). Tables keep the thesis's numbers
(5.1-5.17); each of our numbers stands beside the thesis's and the difference.

Everything except `main` and `write_report` is a pure function: DataFrames in, tables and matplotlib
figures out. Nothing here imports torch or Ray: analysis reads only Parquet (and the thesis's CSVs).
"""
from __future__ import annotations

import argparse
import dataclasses
import html
import importlib.resources
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from raybench import metrics

# The six architectures of the thesis (§4.5) and their 22 configurations, in the order the report lists them.
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "LeNet-5": ("lenet5",),
    "ResNet": ("resnet_18", "resnet_34", "resnet_50", "resnet_101", "resnet_152"),
    "MobileNetV3": ("mobilenet_small", "mobilenet_large"),
    "ConvNeXt": ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"),
    "ViT": ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32"),
    "MLP-Mixer": ("mlpmixer_s32", "mlpmixer_s16", "mlpmixer_b32", "mlpmixer_b16", "mlpmixer_l32", "mlpmixer_l16"),
}
ARCHITECTURE_OF = {model: arch for arch, names in ARCHITECTURES.items() for model in names}
MODEL_ORDER = tuple(ARCHITECTURE_OF)
ARCHITECTURE_COLOR = {"LeNet-5": "#7f7f7f", "ResNet": "#1f77b4", "MobileNetV3": "#2ca02c",
                      "ConvNeXt": "#d62728", "ViT": "#9467bd", "MLP-Mixer": "#ff7f0e"}

# Table 4.1: train / validation / test images of each tier.
THESIS_TIERS: dict[str, tuple[int, int, int]] = {
    "large": (8544, 3415, 5125), "medium": (4250, 1700, 2550), "small": (2100, 840, 1260), "tiny": (200, 80, 120)}
THESIS_SETUP = {"image_size": 352, "max_epochs": 100, "precision": "fp32"}
# the loop's options (trials.parquet `options`, JSON) whose thesis values are fixed by §4.3-4.4
THESIS_LOOP = {"lr": 0.1, "es_start": 10, "es_patience": 20, "es_min_delta": 0.1}
THESIS_DEVICE = "RTX 3080"
# Table numbers of the thesis: per tier (results, mAP); per architecture; pretrained (results, change, mAP).
TIER_TABLES = {"large": ("5.1", "5.2"), "medium": ("5.3", "5.4"), "small": ("5.5", "5.6"), "tiny": ("5.7", "5.8")}
ARCHITECTURE_TABLES = dict(zip(ARCHITECTURES, ("5.9", "5.10", "5.11", "5.12", "5.13", "5.14")))
PRETRAINED_TABLES = ("5.15", "5.16", "5.17")

KEYS = ["model", "tier", "pretrained"]
Z95 = 1.959963984540054
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
T95 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
       2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
       2.0518, 2.0484, 2.0452, 2.0423)


# ----------------------------------------------------------------------------------------------- loading

@dataclasses.dataclass(frozen=True)
class Results:
    """The Parquet files of one results folder as DataFrames (plan is None when the folder has none)."""

    name: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    predictions: pd.DataFrame
    plan: pd.DataFrame | None
    classes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Thesis:
    """The thesis's published numbers: one row per configuration (results) and the best ones' mAP."""

    results: pd.DataFrame
    maps: pd.DataFrame


_EMPTY = {
    "trials": ["trial_id", "model", "tier", "pretrained", "seed", "status", "error"],
    "epochs": ["trial_id", "epoch", "train_loss", "val_loss", "val_accuracy", "lr", "improved", "epoch_seconds"],
    "predictions": ["trial_id", "image", "label", "class_name", "predicted"],
}


def _read_frame(folder: Path, name: str) -> tuple[pd.DataFrame, dict]:
    """A consolidated file, or its part files when a run was killed before consolidating them."""
    path = folder / f"{name}.parquet"
    paths = [path] if path.is_file() else sorted((folder / "parts").glob(f"*.{name}.parquet"))
    if not paths:
        return pd.DataFrame(columns=_EMPTY[name]), {}
    frames = [pd.read_parquet(p) for p in paths]
    metadata = pq.read_schema(paths[0]).metadata or {}
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True), metadata


def read_results(folder: str | Path) -> Results:
    """Read trials, epochs, predictions and plan of a results folder (the only reading the report does)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"results folder {str(folder)!r} does not exist; pass a folder written by "
                         "`python -m raybench.run` (results/<name>) or `python -m raybench.train --out`")
    trials, meta = _read_frame(folder, "trials")
    epochs, _ = _read_frame(folder, "epochs")
    predictions, pred_meta = _read_frame(folder, "predictions")
    plan = pd.read_parquet(folder / "plan.parquet") if (folder / "plan.parquet").is_file() else None
    if trials.empty and plan is None:
        raise ValueError(f"{folder} holds neither trials.parquet nor plan.parquet: nothing to report")
    stored = (pred_meta or meta).get(b"raybench.classes")
    if stored:
        classes = tuple(json.loads(stored))
    else:  # the score columns name the classes in label order
        classes = tuple(c.removeprefix("score_") for c in predictions.columns if c.startswith("score_"))
    trials = trials.drop_duplicates("trial_id", keep="last").reset_index(drop=True)
    trials["pretrained"] = trials["pretrained"].astype(bool)
    if plan is not None:
        plan = plan.assign(pretrained=plan["pretrained"].astype(bool))
    return Results(folder.name, trials, epochs, predictions, plan, classes)


def read_thesis() -> Thesis:
    """The published numbers shipped in raybench/thesis/ (tables 5.1-5.8, 5.15, 5.17)."""
    folder = importlib.resources.files("raybench") / "thesis"
    with (folder / "results.csv").open() as f:
        results = pd.read_csv(f).rename(columns={"dataset": "tier", "accuracy": "test_accuracy",
                                                 "total_training_s": "train_seconds"})
    with (folder / "map.csv").open() as f:
        maps = pd.read_csv(f).rename(columns={"dataset": "tier"})
    return Thesis(results, maps)


def select(results: Results, thesis: Thesis, *, models: Sequence[str] = (), tiers: Sequence[str] = ()) -> tuple[Results, Thesis]:
    """Keep only the given models (names or architectures) and tiers; unknown names are a ValueError."""
    chosen_models = expand_models(models) if models else None
    known_tiers = set(THESIS_TIERS) | set(results.trials.tier.dropna())
    if results.plan is not None:
        known_tiers |= set(results.plan.tier)
    unknown = [t for t in tiers if t not in known_tiers]
    if unknown:
        raise ValueError(f"unknown tier(s) {unknown}; valid tiers: {', '.join(sorted(known_tiers, key=_tier_rank))}")

    def keep(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None:
            return None
        mask = pd.Series(True, index=frame.index)
        if chosen_models is not None:
            mask &= frame.model.isin(chosen_models)
        if tiers:
            mask &= frame.tier.isin(tiers)
        return frame[mask].reset_index(drop=True)

    trials = keep(results.trials)
    ids = set(trials.trial_id)
    picked = dataclasses.replace(
        results, trials=trials, plan=keep(results.plan),
        epochs=results.epochs[results.epochs.trial_id.isin(ids)].reset_index(drop=True),
        predictions=results.predictions[results.predictions.trial_id.isin(ids)].reset_index(drop=True))
    return picked, Thesis(keep(thesis.results), keep(thesis.maps))


def expand_models(names: Sequence[str]) -> list[str]:
    """Model names, with an architecture name (any case, e.g. 'resnet', 'MLP-Mixer') standing for its models."""
    by_arch = {arch.lower(): models for arch, models in ARCHITECTURES.items()}
    chosen: list[str] = []
    for name in names:
        found = (name,) if name in ARCHITECTURE_OF else by_arch.get(name.lower())
        if found is None:
            raise ValueError(f"unknown model {name!r}; valid: the architectures {', '.join(ARCHITECTURES)} "
                             f"or the models {', '.join(MODEL_ORDER)}")
        chosen += [m for m in found if m not in chosen]
    return chosen


# ------------------------------------------------------------------------------------------- statistics

def t_quantile(df: int) -> float:
    """Two-sided 95% quantile of Student's t (table to 30, Cornish-Fisher expansion beyond: error < 1e-4)."""
    if df < 1:
        raise ValueError(f"t needs at least 1 degree of freedom, got {df}")
    if df <= len(T95):
        return T95[df - 1]
    z = Z95
    g = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
         (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def mean_interval(values) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the mean (NaN bounds for fewer than two values)."""
    x = np.asarray(pd.Series(values, dtype=float).dropna())
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def wilson_interval(p: float, n: float) -> tuple[float, float]:
    """95% Wilson score interval of a proportion p observed on n trials."""
    if not (n and n > 0) or p is None or math.isnan(p):
        return math.nan, math.nan
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# --------------------------------------------------------------------------------------------- analysis

def _tier_rank(tier: str) -> tuple[int, str]:
    order = list(THESIS_TIERS)
    return (order.index(tier), "") if tier in order else (len(order), tier)


def _model_rank(model: str) -> int:
    return MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame.reset_index(drop=True)
    key = frame.apply(lambda r: (_tier_rank(r.tier), bool(r.pretrained), _model_rank(r.model), str(r.model),
                                 -1 if pd.isna(r.get("seed")) else r.get("seed")), axis=1)
    return frame.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def trial_status(results: Results, thesis: Thesis, *, tiers: Sequence[str] = ()) -> pd.DataFrame:
    """Every trial that ran or was expected to: the trials table plus rows with status "missing".

    Expected means listed in plan.parquet; without a plan, every thesis configuration of the tiers that
    ran (or were asked for with `tiers`) is expected, with an unknown seed.
    """
    ran = results.trials.copy()
    if results.plan is not None:
        missing = results.plan[~results.plan.trial_id.isin(ran.trial_id)][["trial_id", *KEYS, "seed"]].copy()
    else:
        considered = set(ran.tier) | set(tiers)
        expected = thesis.results[thesis.results.tier.isin(considered)][KEYS]
        have = set(ran[KEYS].itertuples(index=False, name=None))
        missing = expected[[key not in have for key in expected.itertuples(index=False, name=None)]].copy()
        missing["trial_id"], missing["seed"] = None, pd.NA
    missing["status"] = "missing"
    frames = [f for f in (ran, missing) if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else ran
    table["pretrained"] = table["pretrained"].astype(bool)
    table["architecture"] = table.model.map(ARCHITECTURE_OF).fillna("other")
    return _sorted(table)


def _first(frame: pd.DataFrame, column: str):
    values = frame[column].dropna() if column in frame else ()
    return values.iloc[0] if len(values) else pd.NA


def configurations(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (model, tier, pretrained): its seeds' mean and 95% t-interval, and status.

    status is "ok" (every expected seed finished), "partial", "failed" or "missing".
    """
    rows = []
    for (model, tier, pretrained), group in trials.groupby(KEYS, sort=False):
        ok = group[group.status == "ok"]
        counts = {s: int((group.status == s).sum()) for s in ("ok", "failed", "missing")}
        if counts["ok"] == len(group):
            status = "ok"
        elif counts["ok"]:
            status = "partial"
        else:
            status = "failed" if counts["failed"] else "missing"
        row = {"model": model, "tier": tier, "pretrained": bool(pretrained), "architecture": ARCHITECTURE_OF.get(model, "other"),
               "status": status, "seeds_ok": counts["ok"], "seeds_failed": counts["failed"], "seeds_missing": counts["missing"],
               "seeds": ",".join(str(int(s)) for s in ok.seed.dropna()) if len(ok) else "",
               "trial_ids": tuple(ok.trial_id)}
        for metric, name in (("test_accuracy", "accuracy"), ("map_at_5", "map_at_5"), ("map_at_100", "map_at_100")):
            mean, low, high = mean_interval(ok.get(metric, ()))  # proportions: the interval is clipped to [0, 1]
            row[name], row[f"{name}_low"], row[f"{name}_high"] = mean, max(low, 0.0), min(high, 1.0)
        row["accuracy_sd"] = float(ok.test_accuracy.std(ddof=1)) if len(ok) > 1 else math.nan
        for metric in ("epochs", "best_epoch", "train_seconds", "seconds_per_epoch"):
            row[metric] = mean_interval(ok.get(metric, ()))[0]
        source = ok if len(ok) else group
        row["total_parameters"] = _first(source, "parameters")
        # the thesis counts a pretrained model's trainable parameters (its new head) only
        row["parameters"] = _first(source, "trainable_parameters" if pretrained else "parameters")
        for column in ("batch_size", "image_size", "precision", "max_epochs", "n_train", "n_val", "n_test", "options"):
            row[column] = _first(source, column)
        row["device"] = ", ".join(sorted(set(ok.device.dropna()))) if "device" in ok and len(ok) else ""
        row["hit_epoch_limit"] = bool((ok.epochs >= ok.max_epochs).any()) if len(ok) else pd.NA
        rows.append(row)
    return _sorted(pd.DataFrame(rows)) if rows else pd.DataFrame(columns=[*KEYS, "status"])


def compare_with_thesis(configs: pd.DataFrame, thesis: Thesis) -> pd.DataFrame:
    """Configurations with the thesis's numbers, differences (ratios for times) and the binomial check.

    inside_thesis_interval: our (mean) accuracy lies in the 95% Wilson interval of the thesis's accuracy
    at our test-set size, i.e. the spread test sampling alone gives around the thesis's number.
    """
    published = thesis.results[[*KEYS, "parameters", "batch_size", "epochs", "hit_epoch_limit", "train_seconds",
                                "seconds_per_epoch", "test_accuracy"]]
    published = published.rename(columns={c: f"thesis_{c}" for c in published.columns if c not in KEYS})
    published = published.rename(columns={"thesis_test_accuracy": "thesis_accuracy"})
    out = configs.merge(published, on=KEYS, how="left")
    for column in ("parameters", "batch_size", "epochs"):
        out[f"{column}_diff"] = pd.to_numeric(out[column], errors="coerce") - out[f"thesis_{column}"]
    for column in ("train_seconds", "seconds_per_epoch"):
        out[f"{column}_ratio"] = out[column] / out[f"thesis_{column}"]
    out["accuracy_diff"] = out.accuracy - out.thesis_accuracy
    n = pd.to_numeric(out.n_test, errors="coerce").fillna(out.tier.map(lambda t: THESIS_TIERS.get(t, (0, 0, math.nan))[2]))
    bounds = [wilson_interval(p, k) for p, k in zip(out.thesis_accuracy, n)]
    out["interval_n"] = n
    out["thesis_interval_low"] = [b[0] for b in bounds]
    out["thesis_interval_high"] = [b[1] for b in bounds]
    inside = (out.accuracy >= out.thesis_interval_low) & (out.accuracy <= out.thesis_interval_high)
    out["inside_thesis_interval"] = inside.where(out.accuracy.notna() & out.thesis_accuracy.notna(), pd.NA)
    return out


def best_per_architecture(comparison: pd.DataFrame, *, tier: str, pretrained: bool) -> pd.DataFrame:
    """The configuration with the highest mean test accuracy of each architecture in one tier."""
    group = comparison[(comparison.tier == tier) & (comparison.pretrained == pretrained) & (comparison.seeds_ok > 0)]
    if group.empty:
        return group
    best = group.loc[group.groupby("architecture", sort=False).accuracy.idxmax()]
    return best.assign(_rank=best.architecture.map(list(ARCHITECTURES).index)).sort_values("_rank").drop(columns="_rank")


def map_curves(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """mAP@N for every N from 1 to the test size (fig. 5.14) of every trial: columns trial_id, n, map."""
    columns = [f"score_{c}" for c in classes]
    frames = []
    for trial_id, group in predictions.groupby("trial_id", sort=False):
        curve = metrics.map_curve(group[columns].to_numpy(dtype=np.float64), group.label.to_numpy())
        frames.append(pd.DataFrame({"trial_id": trial_id, "n": np.arange(1, len(curve) + 1), "map": curve}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", "n", "map"])


def seed_band(frame: pd.DataFrame, *, by: str, value: str) -> pd.DataFrame:
    """Mean and 95% t-interval of `value` across seeds at each `by` (epoch, N): columns by, mean, low, high, count."""
    stats = frame.groupby(by)[value].agg(["mean", "std", "count"]).reset_index()
    half = np.array([t_quantile(int(n) - 1) * sd / math.sqrt(n) if n > 1 else math.nan for sd, n in zip(stats["std"], stats["count"])])
    return stats.assign(low=stats["mean"] - half, high=stats["mean"] + half)[[by, "mean", "low", "high", "count"]]


def pretrained_change(comparison: pd.DataFrame, thesis: Thesis) -> pd.DataFrame:
    """Table 5.16: proportion change (pretrained - scratch) / scratch of accuracy, epochs and times."""
    measures = ("accuracy", "epochs", "seconds_per_epoch", "train_seconds")
    ours = comparison.set_index(KEYS)
    published = thesis.results.rename(columns={"test_accuracy": "accuracy"}).set_index(KEYS)
    rows = []
    for model, tier in comparison[comparison.pretrained][["model", "tier"]].itertuples(index=False):
        row = {"model": model, "tier": tier, "architecture": ARCHITECTURE_OF.get(model, "other")}
        for measure in measures:
            for prefix, table in (("", ours), ("thesis_", published)):
                scratch = table[measure].get((model, tier, False), math.nan)
                pre = table[measure].get((model, tier, True), math.nan)
                if prefix == "":
                    row[f"{measure}_scratch"], row[f"{measure}_pretrained"] = scratch, pre
                row[f"{prefix}{measure}_change"] = (pre - scratch) / scratch if scratch else math.nan
            row[f"{measure}_change_diff"] = row[f"{measure}_change"] - row[f"thesis_{measure}_change"]
        rows.append(row)
    return pd.DataFrame(rows)


def map_comparison(comparison: pd.DataFrame, thesis: Thesis, *, tier: str, pretrained: bool) -> pd.DataFrame:
    """mAP@5 and mAP@100 of each architecture's best configuration beside the thesis's best (tables 5.2...5.8, 5.17)."""
    best = best_per_architecture(comparison, tier=tier, pretrained=pretrained)
    published = thesis.maps[(thesis.maps.tier == tier) & (thesis.maps.pretrained == pretrained)]
    published = published.assign(architecture=published.model.map(ARCHITECTURE_OF))
    rows = []
    for arch in ARCHITECTURES:
        ours = best[best.architecture == arch]
        theirs = published[published.architecture == arch]
        if ours.empty and theirs.empty:
            continue
        row = {"architecture": arch, "tier": tier, "pretrained": pretrained}
        if len(ours):
            o = ours.iloc[0]
            row.update(model=o.model, accuracy=o.accuracy, seeds_ok=o.seeds_ok,
                       **{c: o[c] for c in ("map_at_5", "map_at_5_low", "map_at_5_high", "map_at_100", "map_at_100_low", "map_at_100_high")})
        else:
            row.update(model=None, accuracy=math.nan, seeds_ok=0, map_at_5=math.nan, map_at_100=math.nan)
        if len(theirs):  # the thesis lists ties; compare with our model when it is one of them
            match = theirs[theirs.model == row["model"]]
            t = (match if len(match) else theirs).iloc[0]
            row.update(thesis_model=", ".join(theirs.model), thesis_compared_model=t.model,
                       thesis_map_at_5=t.map_at_5, thesis_map_at_100=t.map_at_100)
        else:
            row.update(thesis_model=None, thesis_compared_model=None, thesis_map_at_5=math.nan, thesis_map_at_100=math.nan)
        row["map_at_5_diff"] = row["map_at_5"] - row["thesis_map_at_5"]
        row["map_at_100_diff"] = row["map_at_100"] - row["thesis_map_at_100"]
        rows.append(row)
    return pd.DataFrame(rows)


def groups(comparison: pd.DataFrame) -> list[tuple[tuple[str, bool], pd.DataFrame]]:
    """((tier, pretrained), rows) in thesis order: from scratch per tier, then pretrained."""
    return sorted(comparison.groupby(["tier", "pretrained"]), key=lambda kv: (kv[0][1], _tier_rank(kv[0][0])))


# ---------------------------------------------------------------------------------------- tables to show

@dataclasses.dataclass(frozen=True)
class Table:
    """A numbered table: `data` (numbers, written as CSV) and `headers`/`rows` (formatted, for reading)."""

    key: str
    title: str
    data: pd.DataFrame
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def fmt(value, kind: str) -> str:
    """One cell: kinds int, sint (signed), acc, sacc (signed), sec, ratio, pct, spct, bool, text."""
    if _missing(value):
        return "–"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "sint":
        return "0" if value == 0 else f"{int(value):+,}"
    if kind == "acc":
        return f"{value:.3f}"
    if kind == "sacc":
        return f"{value:+.3f}"
    if kind == "sec":
        return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    if kind == "ratio":
        return f"×{value:.2g}" if value < 0.1 else f"×{value:.2f}"
    if kind == "pct":
        return f"{100 * value:+.1f}%"
    if kind == "spct":
        return f"{100 * value:+.1f} pp"
    if kind == "bool":
        return "yes" if value else "no"
    return str(value)


def fmt_interval(mean, low, high, kind: str = "acc") -> str:
    """'0.812 [0.790, 0.834]' for several seeds, '0.812' for one."""
    if _missing(low):
        return fmt(mean, kind)
    return f"{fmt(mean, kind)} [{fmt(low, kind)}, {fmt(high, kind)}]"


def _status_cell(r) -> str:
    if r.status == "ok":
        return "ok" if r.seeds_ok == 1 else f"ok ({r.seeds_ok} seeds)"
    if r.status == "partial":
        parts = [f"{r.seeds_ok} ok"] + [f"{getattr(r, 'seeds_' + s)} {s}" for s in ("failed", "missing") if getattr(r, "seeds_" + s)]
        return "partial: " + ", ".join(parts)
    if r.seeds_failed and r.seeds_missing:
        return f"**{r.status.upper()}** ({r.seeds_failed} failed, {r.seeds_missing} missing)"
    return f"**{r.status.upper()}**"


def _epochs_cell(epochs, hit=False, *, signed: bool = False) -> str:
    """Epochs (a mean over seeds may be fractional), '*' when the epoch limit was hit."""
    if _missing(epochs):
        return "–"
    text = "0" if signed and epochs == 0 else f"{epochs:{'+' if signed else ''}.{0 if float(epochs).is_integer() else 1}f}"
    return text + ("*" if not _missing(hit) and bool(hit) else "")


def _inside_cell(r) -> str:
    if _missing(r.thesis_interval_low):
        return "–"
    mark = "–" if _missing(r.inside_thesis_interval) else ("yes" if r.inside_thesis_interval else "**no**")
    return f"{r.thesis_interval_low:.3f}–{r.thesis_interval_high:.3f} (n={int(r.interval_n)}): {mark}"


def _config_label(model: str, pretrained: bool) -> str:
    return f"{model} (pretrained)" if pretrained else model


def _number(kind: str, tier: str, pretrained: bool) -> str:
    """Thesis table number of a per-tier table ('results', 'map', 'change'); tiers the thesis lacks get none."""
    if pretrained:
        number = dict(zip(("results", "change", "map"), PRETRAINED_TABLES))[kind]
        return number if tier == "tiny" else f"{number} ({tier})"
    if tier in TIER_TABLES:
        return TIER_TABLES[tier][0 if kind == "results" else 1]
    return f"{'results' if kind == 'results' else 'mAP'} ({tier})"


def _key(number: str, *parts: str) -> str:
    return "table_" + "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", p).strip("-").lower() for p in (number, *parts) if p)


def tier_table(comparison: pd.DataFrame, *, tier: str, pretrained: bool = False) -> Table:
    """Tables 5.1/5.3/5.5/5.7 (and 5.15 for pretrained): every configuration of one tier against the thesis."""
    rows = comparison[(comparison.tier == tier) & (comparison.pretrained == pretrained)]
    columns = ["model", "architecture", "status", "seeds_ok", "seeds_failed", "seeds_missing", "seeds",
               "parameters", "thesis_parameters", "parameters_diff", "batch_size", "thesis_batch_size", "batch_size_diff",
               "epochs", "hit_epoch_limit", "thesis_epochs", "thesis_hit_epoch_limit", "epochs_diff", "best_epoch",
               "train_seconds", "thesis_train_seconds", "train_seconds_ratio",
               "seconds_per_epoch", "thesis_seconds_per_epoch", "seconds_per_epoch_ratio",
               "accuracy", "accuracy_low", "accuracy_high", "accuracy_sd", "thesis_accuracy", "accuracy_diff",
               "thesis_interval_low", "thesis_interval_high", "interval_n", "inside_thesis_interval",
               "map_at_5", "map_at_5_low", "map_at_5_high", "map_at_100", "map_at_100_low", "map_at_100_high",
               "device", "image_size", "precision", "max_epochs", "n_train", "n_val", "n_test"]
    headers = ["Model", "Status", "Trainable params" if pretrained else "Params", "thesis", "Δ",
               "Batch", "thesis", "Δ", "Epochs", "thesis", "Δ", "Train time (s)", "thesis", "×",
               "s/epoch", "thesis", "×", "Accuracy", "thesis", "Δ", "thesis 95% interval: inside?"]
    shown = [[r.model, _status_cell(r), fmt(r.parameters, "int"), fmt(r.thesis_parameters, "int"), fmt(r.parameters_diff, "sint"),
              fmt(r.batch_size, "int"), fmt(r.thesis_batch_size, "int"), fmt(r.batch_size_diff, "sint"),
              _epochs_cell(r.epochs, r.hit_epoch_limit), _epochs_cell(r.thesis_epochs, r.thesis_hit_epoch_limit),
              _epochs_cell(r.epochs_diff, signed=True),
              fmt(r.train_seconds, "sec"), fmt(r.thesis_train_seconds, "sec"), fmt(r.train_seconds_ratio, "ratio"),
              fmt(r.seconds_per_epoch, "sec"), fmt(r.thesis_seconds_per_epoch, "sec"), fmt(r.seconds_per_epoch_ratio, "ratio"),
              fmt_interval(r.accuracy, r.accuracy_low, r.accuracy_high), fmt(r.thesis_accuracy, "acc"), fmt(r.accuracy_diff, "sacc"),
              _inside_cell(r)] for r in rows.itertuples()]
    devices = sorted({d for ds in rows.device for d in str(ds).split(", ") if d})
    which = "ImageNet-pretrained, frozen backbone" if pretrained else "trained from scratch"
    number = _number("results", tier, pretrained)
    note = (f"Epochs marked * hit the epoch limit. × is our time divided by the thesis's: ours on "
            f"{', '.join(devices) or 'no device (nothing finished)'}, the thesis's on one {THESIS_DEVICE} (fp32). "
            "Accuracy with several seeds: mean [95% t-interval].")
    return Table(_key(number, tier), f"Table {number}: tier {tier}, {which}", rows[columns].reset_index(drop=True),
                 headers, shown, note)


def map_table(comparison: pd.DataFrame, thesis: Thesis, *, tier: str, pretrained: bool = False) -> Table:
    """Tables 5.2/5.4/5.6/5.8 (5.17 pretrained): mAP of each architecture's best configuration."""
    data = map_comparison(comparison, thesis, tier=tier, pretrained=pretrained)
    headers = ["Architecture", "Our best", "Accuracy", "mAP@5", "thesis", "Δ", "mAP@100", "thesis", "Δ", "Thesis's best"]
    shown = [[r["architecture"], r["model"] if isinstance(r["model"], str) else "**none finished**", fmt(r["accuracy"], "acc"),
              fmt_interval(r["map_at_5"], r.get("map_at_5_low"), r.get("map_at_5_high")), fmt(r["thesis_map_at_5"], "acc"),
              fmt(r["map_at_5_diff"], "sacc"),
              fmt_interval(r["map_at_100"], r.get("map_at_100_low"), r.get("map_at_100_high")), fmt(r["thesis_map_at_100"], "acc"),
              fmt(r["map_at_100_diff"], "sacc"), r["thesis_model"] if isinstance(r["thesis_model"], str) else "–"] for _, r in data.iterrows()]
    number = _number("map", tier, pretrained)
    which = ", ImageNet-pretrained" if pretrained else ""
    note = ("Best = highest mean test accuracy of the architecture. Where the thesis lists several best models "
            "(ties), the comparison uses ours when it is one of them, else the first.")
    return Table(_key(number, tier), f"Table {number}: mAP@5 and mAP@100 of the best configuration of each architecture, tier {tier}{which}",
                 data, headers, shown, note)


def architecture_table(comparison: pd.DataFrame, architecture: str) -> Table:
    """Tables 5.9-5.14: one architecture's configurations across tiers (from scratch), accuracy against the thesis."""
    rows = comparison[(comparison.architecture == architecture) & ~comparison.pretrained]
    tiers = sorted(set(rows.tier), key=_tier_rank)
    models = sorted(set(rows.model), key=_model_rank)
    records, shown = [], []
    for model in models:
        record, cells = {"model": model, "architecture": architecture}, [model]
        for tier in tiers:
            match = rows[(rows.model == model) & (rows.tier == tier)]
            r = match.iloc[0] if len(match) else None
            get = (lambda c: r[c]) if r is not None else (lambda c: math.nan)
            for column in ("n_train", "status", "accuracy", "accuracy_low", "accuracy_high", "thesis_accuracy", "accuracy_diff",
                           "inside_thesis_interval"):
                record[f"{column}_{tier}"] = get(column)
            status = get("status") if r is not None else "not in this run"
            ours = (fmt_interval(get("accuracy"), get("accuracy_low"), get("accuracy_high")) if status in ("ok", "partial")
                    else "–" if r is None else f"**{str(status).upper()}**")
            cells += [ours, fmt(get("thesis_accuracy"), "acc"), fmt(get("accuracy_diff"), "sacc")]
        records.append(record)
        shown.append(cells)
    headers = ["Model"] + [h for t in tiers for h in (f"{t}", "thesis", "Δ")]
    number = ARCHITECTURE_TABLES.get(architecture, architecture)
    train_sizes = ", ".join(f"{t} {_train_size(rows, t)}" for t in tiers)
    return Table(_key(number, architecture), f"Table {number}: {architecture}, test accuracy per tier (from scratch)",
                 pd.DataFrame(records), headers, shown, f"Training images per tier here: {train_sizes}.")


def _train_size(rows: pd.DataFrame, tier: str) -> str:
    n = pd.to_numeric(rows[rows.tier == tier].n_train, errors="coerce").dropna()
    return str(int(n.iloc[0])) if len(n) else "?"


def change_table(change: pd.DataFrame, *, tier: str) -> Table:
    """Table 5.16: proportion change from training from scratch to the pretrained model."""
    data = change[change.tier == tier].reset_index(drop=True)
    headers = ["Model", "Accuracy scratch → pretrained", "change", "thesis", "Δ",
               "Epochs change", "thesis", "Δ", "s/epoch change", "thesis", "Δ", "Train time change", "thesis", "Δ"]
    shown = []
    for _, r in data.iterrows():
        cells = [r["model"], f"{fmt(r['accuracy_scratch'], 'acc')} → {fmt(r['accuracy_pretrained'], 'acc')}"]
        for measure in ("accuracy", "epochs", "seconds_per_epoch", "train_seconds"):
            cells += [fmt(r[f"{measure}_change"], "pct"), fmt(r[f"thesis_{measure}_change"], "pct"), fmt(r[f"{measure}_change_diff"], "spct")]
        shown.append(cells)
    number = _number("change", tier, True)
    return Table(_key(number, tier), f"Table {number}: proportion change from scratch to pretrained, tier {tier}",
                 data, headers, shown, "Change = (pretrained − scratch) / scratch; Δ in percentage points (ours − thesis's).")


def trials_table(trials: pd.DataFrame) -> Table:
    """Every trial, finished, failed or missing, with its error's last line."""
    columns = ["trial_id", "model", "tier", "pretrained", "seed", "status", "epochs", "best_epoch", "stopped_early",
               "test_accuracy", "map_at_5", "map_at_100", "train_seconds", "seconds_per_epoch", "device", "error"]
    data = trials.reindex(columns=columns)
    headers = ["Trial", "Status", "Epochs", "Tested epoch", "Accuracy", "mAP@5", "mAP@100", "Train time (s)", "s/epoch", "Error"]
    shown = []
    for r in data.itertuples():
        name = r.trial_id if isinstance(r.trial_id, str) else f"{_config_label(r.model, r.pretrained)} on {r.tier} (no plan: seed unknown)"
        error = str(r.error).strip().splitlines()[-1][:160] if isinstance(r.error, str) and r.error.strip() else ""
        status = r.status if r.status == "ok" else f"**{str(r.status).upper()}**"
        shown.append([name, status, fmt(r.epochs, "int"), fmt(r.best_epoch, "int"), fmt(r.test_accuracy, "acc"),
                      fmt(r.map_at_5, "acc"), fmt(r.map_at_100, "acc"), fmt(r.train_seconds, "sec"), fmt(r.seconds_per_epoch, "sec"), error])
    return Table("table_a.1_trials", "Table A.1: every trial", data, headers, shown,
                 "Missing: planned (or, without plan.parquet, in the thesis's grid for a tier that ran) but without a result yet.")


# --------------------------------------------------------------------------------------------- figures

def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _trials_of(row) -> list[str]:
    return list(row.trial_ids)


def _legend(ax, *, outside: bool = False, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles and outside:
        ax.figure.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    elif handles:
        ax.legend(fontsize=8, frameon=False, **kw)


def curve_figure(epochs: pd.DataFrame, best: pd.DataFrame, *, value: str, title: str, ylabel: str,
                 log: bool = False, steps: bool = False) -> Figure:
    """One line per configuration over epochs, tested epochs marked.

    Several seeds: their mean with a shaded 95% t-interval, or with `steps` (a schedule, where a mean of
    step functions would invent steps) one line per seed.
    """
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    styles = ("-", "--", "-.", ":")
    for i, row in enumerate(best.itertuples()):
        own = epochs[epochs.trial_id.isin(_trials_of(row))]
        if own.empty:
            continue
        color = ARCHITECTURE_COLOR.get(row.architecture, "black")
        label = f"{row.architecture}: {_config_label(row.model, row.pretrained)}" + (f" ({row.seeds_ok} seeds)" if row.seeds_ok > 1 else "")
        if steps:
            for k, (_, seed) in enumerate(own.groupby("trial_id", sort=False)):
                ax.plot(seed.epoch, seed[value], color=color, label=None if k else label, linestyle=styles[i % 4],
                        drawstyle="steps-post", linewidth=1.6)
            continue
        band = seed_band(own, by="epoch", value=value)
        ax.plot(band.epoch, band["mean"], color=color, label=label, linewidth=1.6)
        if (band["count"] > 1).any():
            ax.fill_between(band.epoch, band.low, band.high, color=color, alpha=0.18, linewidth=0)
        # fig. 4.5: the tested checkpoint is the last improvement
        tested = own[own.improved.astype(bool)].groupby("trial_id").epoch.max()
        points = own.set_index(["trial_id", "epoch"])[value]
        ys = [points.get((t, e), math.nan) for t, e in tested.items()]
        ax.scatter(tested.to_numpy(), ys, color=color, marker="o", s=28, zorder=3, edgecolor="white")
    drawn = np.concatenate([line.get_ydata() for line in ax.lines]) if ax.lines else np.ones(1)
    if log or (drawn.min() > 0 and drawn.max() / drawn.min() > 30):  # a diverging epoch would flatten the other curves
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    _legend(ax, loc="best")
    return fig


def confusion_figure(best: pd.DataFrame, trials: pd.DataFrame, classes: Sequence[str], *, title: str) -> Figure:
    """Confusion matrices (rows true, columns predicted; seeds summed), coloured by the share of each true class."""
    cols = min(3, max(len(best), 1))
    rows = math.ceil(max(len(best), 1) / cols)
    fig = _figure(4.1 * cols, 3.9 * rows)
    fig.suptitle(title, fontsize=12)
    by_id = trials.set_index("trial_id")
    for i, row in enumerate(best.itertuples()):
        ax = fig.add_subplot(rows, cols, i + 1)
        matrix = sum(np.asarray([list(r) for r in by_id.confusion_matrix[t]], dtype=np.int64) for t in _trials_of(row))
        share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (y, x), count in np.ndenumerate(matrix):
            if count:
                ax.text(x, y, str(count), ha="center", va="center", fontsize=7,
                        color="white" if share[y, x] > 0.6 else "black")
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(ticks, classes, fontsize=7)
        seeds = f", {row.seeds_ok} seeds summed" if row.seeds_ok > 1 else ""
        ax.set_title(f"{row.architecture}: {_config_label(row.model, row.pretrained)}\naccuracy {row.accuracy:.3f}{seeds}", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    return fig


def map_figure(curves: pd.DataFrame, best: pd.DataFrame, maps: pd.DataFrame, *, title: str) -> Figure:
    """mAP@N for N = 1..test size of each architecture's best configuration; the thesis's mAP@5/@100 as crosses."""
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    for row in best.itertuples():
        band = seed_band(curves[curves.trial_id.isin(_trials_of(row))], by="n", value="map")
        if band.empty:
            continue
        color = ARCHITECTURE_COLOR.get(row.architecture, "black")
        ax.plot(band.n, band["mean"], color=color, linewidth=1.5, label=f"{row.architecture}: {_config_label(row.model, row.pretrained)}")
        if (band["count"] > 1).any():
            ax.fill_between(band.n, band.low, band.high, color=color, alpha=0.18, linewidth=0)
        theirs = maps[maps.architecture == row.architecture]
        if len(theirs) and not _missing(theirs.iloc[0].thesis_map_at_5):
            ax.scatter([5, 100], [theirs.iloc[0].thesis_map_at_5, theirs.iloc[0].thesis_map_at_100], marker="x",
                       color=color, s=45, zorder=3)
    ax.scatter([], [], marker="x", color="black", label="thesis: mAP@5, mAP@100 of its best")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("N (images retrieved per class)")
    ax.set_ylabel("mAP@N")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, loc="lower left")
    return fig


def size_figure(comparison: pd.DataFrame, thesis: Thesis, architecture: str) -> Figure:
    """Test accuracy against training-set size, one line per configuration: ours solid (t-interval bars), thesis dashed."""
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    ours = comparison[(comparison.architecture == architecture) & ~comparison.pretrained & (comparison.seeds_ok > 0)]
    published = thesis.results[~thesis.results.pretrained & thesis.results.model.isin(ARCHITECTURES.get(architecture, ()))]
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    names = sorted(set(ours.model) | set(published.model), key=_model_rank)
    for i, model in enumerate(names):
        color = palette[i % len(palette)]
        mine = ours[ours.model == model].assign(n=lambda f: pd.to_numeric(f.n_train)).sort_values("n")
        if len(mine):
            err = np.vstack([mine.accuracy - mine.accuracy_low, mine.accuracy_high - mine.accuracy]).astype(float)
            dodge = 1 + 0.025 * (i - (len(names) - 1) / 2)  # side by side, so that the bars stay apart
            ax.errorbar(mine.n * dodge, mine.accuracy, yerr=np.nan_to_num(err), color=color, marker="o", capsize=2, label=model,
                        elinewidth=0.8, ecolor=(*to_rgb(color), 0.5))
        theirs = published[published.model == model].assign(n=lambda f: f.tier.map(lambda t: THESIS_TIERS[t][0])).sort_values("n")
        if len(theirs):
            ax.plot(theirs.n, theirs.test_accuracy, color=color, linestyle="--", marker="s", markersize=3, alpha=0.6,
                    label=None if len(mine) else f"{model} (thesis only)")
    ax.plot([], [], color="black", linestyle="--", label="thesis (dashed)")
    ax.set_xscale("log")
    ticks = {n: f"{n}\n{t}" for t, (n, _, _) in THESIS_TIERS.items()}
    for r in ours.itertuples():  # our own tier sizes, where they differ from the thesis's
        ticks.setdefault(int(r.n_train), f"{int(r.n_train)}\n{r.tier} (ours)")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training images")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{architecture}: test accuracy against training-set size", fontsize=11)
    ax.grid(alpha=0.3)
    _legend(ax, loc="lower right")
    return fig


def heatmap_figure(comparison: pd.DataFrame) -> Figure:
    """The whole grid at a glance: accuracy per configuration x tier, and its difference from the thesis."""
    labels = list(dict.fromkeys(_config_label(m, p) for m, p in
                                _sorted(comparison.assign(tier="", seed=0))[["model", "pretrained"]].itertuples(index=False)))
    tiers = sorted(set(comparison.tier), key=_tier_rank)
    acc = np.full((len(labels), len(tiers)), np.nan)
    diff = acc.copy()
    text = [["" for _ in tiers] for _ in labels]
    for r in comparison.itertuples():
        i, j = labels.index(_config_label(r.model, r.pretrained)), tiers.index(r.tier)
        if r.seeds_ok > 0:
            acc[i, j], diff[i, j] = r.accuracy, r.accuracy_diff
            text[i][j] = f"{r.accuracy:.2f}" + ("*" if r.status == "partial" else "")
        else:
            text[i][j] = r.status
    fig = _figure(2.6 + 2 * (0.9 * len(tiers) + 0.6), 2.0 + 0.28 * len(labels))
    for k, (values, cmap, vmin, vmax, name) in enumerate(((acc, "viridis", 0, 1, "test accuracy"),
                                                           (diff, "RdBu", -0.5, 0.5, "ours − thesis"))):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.set_facecolor("#eeeeee")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(len(labels)):
            for j in range(len(tiers)):
                v = values[i, j]
                if math.isnan(v):
                    cell = "no thesis" if k == 1 and text[i][j][:1].isdigit() else text[i][j]
                else:
                    cell = text[i][j] if k == 0 else f"{v:+.2f}"
                light = not math.isnan(v) and (v < 0.45 if k == 0 else abs(v) > 0.3)
                ax.text(j, i, cell, ha="center", va="center", fontsize=7, color="white" if light else "black")
        ax.set_xticks(range(len(tiers)), tiers)
        ax.set_yticks(range(len(labels)), labels if k == 0 else [""] * len(labels), fontsize=8)
        ax.set_title(name, fontsize=10)
        bar = fig.colorbar(image, ax=ax, orientation="horizontal", fraction=0.04 if len(labels) > 10 else 0.1, pad=0.02, aspect=15)
        bar.set_ticks([vmin, (vmin + vmax) / 2, vmax])
    fig.suptitle("Accuracy, configuration × tier\n(grey: no result; *: some seeds failed or missing)", fontsize=10)
    return fig


def accuracy_scatter(comparison: pd.DataFrame) -> Figure:
    """Our accuracy against the thesis's, with the 95% Wilson band of the thesis's number at our test size."""
    fig = _figure(7.6, 5.2)
    ax = fig.add_subplot()
    both = comparison[(comparison.seeds_ok > 0) & comparison.thesis_accuracy.notna()]
    p = np.linspace(0, 1, 201)
    for n in sorted(set(both.interval_n.dropna())):
        low, high = zip(*(wilson_interval(x, n) for x in p))
        ax.fill_between(p, low, high, color="grey", alpha=0.15, linewidth=0)
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8)
    markers = {"large": "o", "medium": "s", "small": "^", "tiny": "D"}
    for r in both.itertuples():
        err = None if _missing(r.accuracy_low) else [[r.accuracy - r.accuracy_low], [r.accuracy_high - r.accuracy]]
        ax.errorbar(r.thesis_accuracy, r.accuracy, yerr=err, marker=markers.get(r.tier, "o"), linestyle="none",
                    markerfacecolor="white" if r.pretrained else ARCHITECTURE_COLOR.get(r.architecture, "black"),
                    color=ARCHITECTURE_COLOR.get(r.architecture, "black"), capsize=2, markersize=6,
                    elinewidth=0.8, ecolor=(*to_rgb(ARCHITECTURE_COLOR.get(r.architecture, "black")), 0.45))
    for arch, color in ARCHITECTURE_COLOR.items():
        if arch in set(both.architecture):
            ax.scatter([], [], color=color, label=arch)
    for tier, marker in markers.items():
        if tier in set(both.tier):
            ax.scatter([], [], color="black", marker=marker, facecolor="none", label=f"tier {tier}")
    ax.fill_between([], [], [], color="grey", alpha=0.15, label="95% Wilson band\nof the thesis's accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("thesis's test accuracy")
    ax.set_ylabel("our test accuracy")
    ax.set_title("Test accuracy: ours against the thesis's\n(open markers: pretrained; bars: 95% t-interval over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, outside=True)
    return fig


def speed_scatter(comparison: pd.DataFrame) -> Figure:
    """Our seconds per epoch against the thesis's on its RTX 3080, log-log."""
    fig = _figure(7.2, 5.2)
    ax = fig.add_subplot()
    both = comparison[(comparison.seeds_ok > 0) & comparison.thesis_seconds_per_epoch.notna() & (comparison.seconds_per_epoch > 0)]
    for arch, rows in both.groupby("architecture", sort=False):
        ax.scatter(rows.thesis_seconds_per_epoch, rows.seconds_per_epoch, color=ARCHITECTURE_COLOR.get(arch, "black"), label=arch, s=22)
        if len(both) <= 25:
            for r in rows.itertuples():
                ax.annotate(f"{_config_label(r.model, r.pretrained)} {r.tier}", (r.thesis_seconds_per_epoch, r.seconds_per_epoch),
                            fontsize=7, xytext=(4, 2), textcoords="offset points")
    values = pd.concat([both.thesis_seconds_per_epoch, both.seconds_per_epoch]).astype(float)
    if len(values):
        lo, hi = values.min() / 2, values.max() * 2
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="same speed")
    ax.set_xscale("log")
    ax.set_yscale("log")
    devices = ", ".join(sorted({d for ds in both.device for d in str(ds).split(", ") if d}))
    ax.set_xlabel(f"thesis: s/epoch on one {THESIS_DEVICE}")
    ax.set_ylabel(f"ours: s/epoch on {devices}")
    ax.set_title("Seconds per epoch, ours against the thesis's", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, outside=True)
    return fig


# -------------------------------------------------------------------------------------------- document

@dataclasses.dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclasses.dataclass(frozen=True)
class Paragraph:
    text: str


@dataclasses.dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Plot:
    """A figure, saved as figures/<key>.png; `data` (if any) is what it draws, written as tables/<key>.csv."""

    key: str
    caption: str
    figure: Figure
    data: pd.DataFrame | None = None


Block = Heading | Paragraph | Bullets | Table | Plot


@dataclasses.dataclass(frozen=True)
class Report:
    title: str
    blocks: list[Block]

    @property
    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    @property
    def plots(self) -> list[Plot]:
        return [b for b in self.blocks if isinstance(b, Plot)]


def _plain(value) -> str:
    """A value as text, whole floats without their '.0'."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def settings_notes(comparison: pd.DataFrame) -> list[str]:
    """How this run's setup differs from the thesis's (so numbers are read for what they are)."""
    ran = comparison[comparison.seeds_ok > 0]
    notes = []
    for column, expected in THESIS_SETUP.items():
        values = sorted({_plain(v) for v in ran[column].dropna()})
        if values and values != [str(expected)]:
            notes.append(f"{column} {', '.join(values)} (thesis: {expected})")
    options = [json.loads(text) for text in ran.get("options", pd.Series(dtype=object)).dropna()]
    for key, expected in THESIS_LOOP.items():
        values = sorted({o[key] for o in options if key in o})
        if values and values != [expected]:
            notes.append(f"{key} {', '.join(map(str, values))} (thesis: {expected})")
    for tier, sizes in THESIS_TIERS.items():
        n = pd.to_numeric(ran[ran.tier == tier].n_train, errors="coerce").dropna()
        if len(n) and int(n.iloc[0]) != sizes[0]:
            notes.append(f"tier {tier} has {int(n.iloc[0])} training images (thesis: {sizes[0]})")
    batch = ran[ran.thesis_batch_size.notna() & (pd.to_numeric(ran.batch_size, errors="coerce") != ran.thesis_batch_size)]
    if len(batch):
        notes.append(f"{len(batch)} configuration(s) with a batch size other than the thesis's")
    return notes


def summary(trials: pd.DataFrame, comparison: pd.DataFrame, *, has_plan: bool, tiers_not_run: Sequence[str]) -> list[str]:
    """The report's opening bullets: what ran, what is missing, how it agrees with the thesis, how fast."""
    count = trials.status.value_counts()
    expected = "planned in plan.parquet" if has_plan else "thesis configurations of the tiers that ran; no plan.parquet"
    items = [f"Trials: {int(count.get('ok', 0))} finished, {int(count.get('failed', 0))} failed, "
             f"{int(count.get('missing', 0))} missing ({expected}). "
             f"Configurations: {len(comparison)} ({', '.join(f'{n} {s}' for s, n in comparison.status.value_counts().items())})."]
    if tiers_not_run:
        items.append(f"Thesis tiers with no trials here: {', '.join(tiers_not_run)} (pass --tiers to list their configurations as missing).")
    compared = comparison[comparison.inside_thesis_interval.notna()]
    if len(compared):
        per_tier = "; ".join(
            f"{t}{' pretrained' if p else ''}: {int(g.inside_thesis_interval.astype(bool).sum())} of {len(g)}"
            for (t, p), g in groups(compared))
        inside = int(compared.inside_thesis_interval.astype(bool).sum())
        items.append(f"Agreement with the thesis: {inside} of {len(compared)} configurations have a (mean) test accuracy inside "
                     f"the 95% Wilson score interval of the thesis's accuracy at our test-set size ({per_tier}). "
                     f"Mean difference ours − thesis: {compared.accuracy_diff.mean():+.3f}; "
                     f"mean absolute difference: {compared.accuracy_diff.abs().mean():.3f}.")
    else:
        items.append("Agreement with the thesis: no finished configuration has a published counterpart to compare with.")
    for (tier, pretrained), g in groups(comparison):
        done, theirs = g[g.seeds_ok > 0], g[g.thesis_accuracy.notna()]
        if len(done):
            ours = done.loc[done.accuracy.idxmax()]
            line = f"Best in tier {tier}{' (pretrained)' if pretrained else ''}: {ours.model} {ours.accuracy:.3f}"
            if len(theirs):
                best = theirs.loc[theirs.thesis_accuracy.idxmax()]
                line += f" (the thesis's best among these configurations: {best.model} {best.thesis_accuracy:.3f})"
            items.append(line + ".")
    speed = comparison[(comparison.seeds_ok > 0) & comparison.seconds_per_epoch_ratio.notna()]
    for device, g in speed.groupby("device"):
        items.append(f"Speed on {device}: seconds per epoch are a median ×{g.seconds_per_epoch_ratio.median():.3g} of the thesis's "
                     f"on one {THESIS_DEVICE} (range ×{g.seconds_per_epoch_ratio.min():.3g} to ×{g.seconds_per_epoch_ratio.max():.3g}, "
                     f"{len(g)} configurations; ×1 = as fast, below 1 = faster).")
    notes = settings_notes(comparison)
    if notes:
        items.append("Not the thesis's setup, so differences are expected: " + "; ".join(notes) + ".")
    return items


METHOD_NOTES = (
    "Configuration = model × tier × pretrained; several seeds of one configuration give its mean and a 95% "
    "Student-t interval of the mean (tables: [low, high], clipped to [0, 1] for accuracy and mAP; figures: bars or "
    "shaded bands). Confusion matrices sum the seeds.",
    "Binomial check: the thesis's accuracy p and our test-set size n give the 95% Wilson score interval; a "
    "configuration agrees when our (mean) accuracy lies inside it, i.e. within the spread test-set sampling alone "
    "produces. Without a finished trial the thesis's tier test size is used (table 4.1).",
    "Δ = ours − thesis's; × = ours / thesis's (times). s/epoch = total training time (training and validation) / epochs, "
    "as in the thesis. Epochs marked * reached the epoch limit (100 in the thesis).",
    "Best configuration of an architecture = highest mean test accuracy in that tier; it is what the loss, confusion, "
    "mAP and learning-rate figures show.",
    "mAP@N (§5.1.1) is computed here for every N from the stored softmax scores (predictions.parquet); ties keep test-set order.",
    "Tables 5.9-5.14 follow the architecture order LeNet-5, ResNet, MobileNetV3, ConvNeXt, ViT, MLP-Mixer.",
    "Thesis numbers: Foix Romero (2022), chapter 5, shipped in raybench/thesis/.",
)


def build_report(results: Results, thesis: Thesis, *, tiers: Sequence[str] = (), filters: str = "") -> Report:
    """The whole document: summary, per-tier sections, pretrained, per architecture, all trials, method."""
    trials = trial_status(results, thesis, tiers=tiers)
    comparison = compare_with_thesis(configurations(trials), thesis)
    curves = map_curves(results.predictions, results.classes)
    ran_tiers = set(trials.tier)
    tiers_not_run = [t for t in THESIS_TIERS if t not in ran_tiers and not tiers and results.plan is None
                     and len(thesis.results[thesis.results.tier == t])]
    blocks: list[Block] = [
        Paragraph(f"Results folder `{results.name}`{filters}. Every number of ours stands beside the thesis's "
                  f"(Foix Romero 2022, chapter 5) and the difference; tables are numbered as in the thesis and are "
                  f"also in tables/ as CSV."),
        Heading(2, "Summary"),
        Bullets(tuple(summary(trials, comparison, has_plan=results.plan is not None, tiers_not_run=tiers_not_run))),
    ]
    if comparison.seeds_ok.sum():
        blocks += [
            Plot("heatmap_accuracy", "The grid at a glance: test accuracy per configuration and tier (left) and its "
                 "difference from the thesis's (right); grey cells have no result.", heatmap_figure(comparison)),
            Plot("accuracy_vs_thesis", "Our test accuracy against the thesis's; the grey band is the 95% Wilson interval "
                 "of the thesis's accuracy at our test-set size (inside it = agreement up to test sampling).", accuracy_scatter(comparison)),
            Plot("speed_vs_thesis", f"Seconds per epoch, ours against the thesis's ({THESIS_DEVICE}).", speed_scatter(comparison)),
        ]
    change = pretrained_change(comparison, thesis)
    for (tier, pretrained), _ in groups(comparison):
        blocks += _group_section(results, thesis, comparison, curves, change, tier=tier, pretrained=pretrained)
    blocks.append(Heading(2, "By architecture"))
    for arch in ARCHITECTURES:
        if (comparison.architecture == arch).any() and (~comparison.pretrained[comparison.architecture == arch]).any():
            blocks += [Heading(3, arch), architecture_table(comparison, arch)]
            if (comparison[(comparison.architecture == arch) & ~comparison.pretrained].seeds_ok > 0).any():
                blocks.append(Plot(f"training_size_{arch.lower()}", f"{arch}: test accuracy against the number of "
                                   "training images (cf. thesis figs. 5.17-5.26); ours solid with 95% t-interval bars, the thesis's dashed.",
                                   size_figure(comparison, thesis, arch)))
    blocks += [Heading(2, "All trials"), trials_table(trials), Heading(2, "Method"), Bullets(METHOD_NOTES)]
    return Report(f"raybench report: {results.name}", blocks)


def _group_section(results: Results, thesis: Thesis, comparison: pd.DataFrame, curves: pd.DataFrame, change: pd.DataFrame,
                   *, tier: str, pretrained: bool) -> list[Block]:
    """One tier's section: its results and mAP tables, then loss, confusion, mAP@N and learning-rate figures."""
    which = "ImageNet-pretrained" if pretrained else "from scratch"
    slug = f"{tier}{'_pretrained' if pretrained else ''}"
    blocks: list[Block] = [Heading(2, f"Tier {tier}, {which}"), tier_table(comparison, tier=tier, pretrained=pretrained)]
    if pretrained:
        blocks.append(change_table(change, tier=tier))
    maps = map_table(comparison, thesis, tier=tier, pretrained=pretrained)
    blocks.append(maps)
    best = best_per_architecture(comparison, tier=tier, pretrained=pretrained)
    if best.empty:
        return blocks + [Paragraph(f"No finished trial in tier {tier} ({which}): no figures.")]
    ids = [t for ts in best.trial_ids for t in ts]
    epochs = results.epochs[results.epochs.trial_id.isin(ids)]
    chosen = curves[curves.trial_id.isin(ids)]
    blocks += [
        Plot(f"val_loss_{slug}", f"Validation loss per epoch of the best configuration of each architecture, tier {tier}, {which} "
             "(cf. thesis figs. 5.1, 5.4, 5.6); dots mark the tested epoch (last improvement, fig. 4.5).",
             curve_figure(epochs, best, value="val_loss", title=f"Validation loss, tier {tier}, {which}", ylabel="validation loss"),
             epochs),
        Plot(f"confusion_{slug}", f"Confusion matrices of the best configuration of each architecture, tier {tier}, {which} "
             "(cf. thesis figs. 5.2, 5.5, 5.8); colour = share of the true class, numbers = images.",
             confusion_figure(best, results.trials, results.classes, title=f"Confusion matrices, tier {tier}, {which}")),
        Plot(f"map_curve_{slug}", f"mAP@N for every N from 1 to the test size, tier {tier}, {which} (cf. thesis fig. 5.14), "
             "from the stored scores; crosses: the thesis's mAP@5 and mAP@100 of its best configuration of the architecture.",
             map_figure(curves, best, maps.data, title=f"mAP@N, tier {tier}, {which}"), chosen),
        Plot(f"learning_rate_{slug}", f"Learning rate per epoch (ReduceLROnPlateau, §4.3; cf. thesis fig. 5.31), tier {tier}, {which}.",
             curve_figure(epochs, best, value="lr", title=f"Learning rate, tier {tier}, {which}", ylabel="learning rate",
                          log=True, steps=True)),
    ]
    return blocks


# ------------------------------------------------------------------------------------------- rendering

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    lines = [f"# {report.title}", ""]
    for block in report.blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines += [f"**{block.title}** ([CSV](tables/{block.key}.csv))", ""]
            lines.append("| " + " | ".join(map(_md_cell, block.headers)) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
            lines += ["", f"_{block.note}_" if block.note else "", ""]
        elif isinstance(block, Plot):
            data = f" ([data](tables/{block.key}.csv))" if block.data is not None else ""
            lines += [f"![{block.caption}](figures/{block.key}.png)", "", f"_{block.caption}_{data}", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """The little Markdown the report's text uses (**bold**, `code`), as HTML."""
    out = html.escape(str(text))
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}tr:nth-child(even){background:#fafafa}
figure{margin:1em 0}img{max-width:100%}figcaption,.note{font-size:13px;color:#555}"""


def render_html(report: Report) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(report.title)}</h1>"]
    for block in report.blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<h4>{_inline(block.title)} <a href='tables/{block.key}.csv'>CSV</a></h4>"
                         f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p class='note'>{_inline(block.note)}</p>")
        elif isinstance(block, Plot):
            parts.append(f"<figure><img src='figures/{block.key}.png' alt='{html.escape(block.key)}'>"
                         f"<figcaption>{_inline(block.caption)}</figcaption></figure>")
    return "\n".join(parts + ["</body></html>"])


def _csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in ("trial_ids",) if c in frame.columns])


def check_out(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier report (writing replaces the whole folder)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.md").is_file())):
        raise ValueError(f"{out} exists and is not a raybench report folder (no report.md); choose another --out")


def write_report(report: Report, out: str | Path, *, dpi: int = 110) -> Path:
    """Write report.md, report.html, figures/*.png and tables/*.csv into `out`, replacing an earlier report there."""
    out = Path(out)
    check_out(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    (tmp / "tables").mkdir()
    for table in report.tables:
        _csv_frame(table.data).to_csv(tmp / "tables" / f"{table.key}.csv", index=False)
    for plot in report.plots:
        plot.figure.savefig(tmp / "figures" / f"{plot.key}.png", dpi=dpi)
        if plot.data is not None:
            _csv_frame(plot.data).to_csv(tmp / "tables" / f"{plot.key}.csv", index=False)
    (tmp / "report.md").write_text(render_markdown(report))
    (tmp / "report.html").write_text(render_html(report))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raybench.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a results folder (results/<name>, or the --out of python -m raybench.train)")
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME",
                        help="only these models or architectures (e.g. resnet_18 MobileNetV3)")
    parser.add_argument("--tiers", nargs="+", default=[], metavar="TIER", help="only these tiers (e.g. tiny small)")
    parser.add_argument("--out", help="report folder (default: RESULTS/report)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out) if args.out else Path(args.results) / "report"
    try:
        results, thesis = select(read_results(args.results), read_thesis(), models=args.models, tiers=args.tiers)
        check_out(out)
    except ValueError as error:
        parser.error(str(error))
    filters = "; ".join(f"{name}: {' '.join(values)}" for name, values in (("models", args.models), ("tiers", args.tiers)) if values)
    report = build_report(results, thesis, tiers=args.tiers, filters=f" (filtered to {filters})" if filters else "")
    write_report(report, out)
    print(f"{len(report.tables)} tables, {len(report.plots)} figures in {time.perf_counter() - started:.1f}s -> {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
