"""Trials to configurations, and configurations beside the thesis's numbers: pure functions of DataFrames."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raybench import catalog, metrics
from raybench.report.inputs import ARCHITECTURE_OF, KEYS, Results, Thesis, sort_rows, tier_rank
from raybench.report.statistics import mean_interval, wilson_interval


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
    return sort_rows(table)


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
        row = {
            "model": model,
            "tier": tier,
            "pretrained": bool(pretrained),
            "architecture": ARCHITECTURE_OF.get(model, "other"),
            "status": status,
            "seeds_ok": counts["ok"],
            "seeds_failed": counts["failed"],
            "seeds_missing": counts["missing"],
            "seeds": ",".join(str(int(s)) for s in ok.seed.dropna()) if len(ok) else "",
            "trial_ids": tuple(ok.trial_id),
        }
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
    return sort_rows(pd.DataFrame(rows)) if rows else pd.DataFrame(columns=[*KEYS, "status"])


def compare_with_thesis(configs: pd.DataFrame, thesis: Thesis) -> pd.DataFrame:
    """Configurations with the thesis's numbers, differences (ratios for times) and the binomial check.

    inside_thesis_interval: our (mean) accuracy lies in the 95% Wilson interval of the thesis's accuracy
    at our test-set size, i.e. the spread test sampling alone gives around the thesis's number.
    """
    columns = ["parameters", "batch_size", "epochs", "hit_epoch_limit", "train_seconds", "seconds_per_epoch"]
    published = thesis.results[[*KEYS, *columns, "test_accuracy"]]
    published = published.rename(columns={c: f"thesis_{c}" for c in published.columns if c not in KEYS})
    published = published.rename(columns={"thesis_test_accuracy": "thesis_accuracy"})
    out = configs.merge(published, on=KEYS, how="left")
    for column in ("parameters", "batch_size", "epochs"):
        out[f"{column}_diff"] = pd.to_numeric(out[column], errors="coerce") - out[f"thesis_{column}"]
    for column in ("train_seconds", "seconds_per_epoch"):
        out[f"{column}_ratio"] = out[column] / out[f"thesis_{column}"]
    out["accuracy_diff"] = out.accuracy - out.thesis_accuracy
    # without a finished trial, the thesis's test-set size of the tier (table 4.1)
    thesis_n = out.tier.map(lambda t: catalog.TIER_SPLITS.get(t, (0, 0, math.nan))[2])
    n = pd.to_numeric(out.n_test, errors="coerce").fillna(thesis_n)
    bounds = [wilson_interval(p, k) for p, k in zip(out.thesis_accuracy, n, strict=True)]
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
    rank = best.architecture.map(list(catalog.ARCHITECTURES).index)
    return best.assign(_rank=rank).sort_values("_rank").drop(columns="_rank")


def map_curves(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """mAP@N for every N from 1 to the test size (fig. 5.14) of every trial: columns trial_id, n, map."""
    columns = [f"score_{c}" for c in classes]
    frames = []
    for trial_id, group in predictions.groupby("trial_id", sort=False):
        curve = metrics.map_curve(group[columns].to_numpy(dtype=np.float64), group.label.to_numpy())
        frames.append(pd.DataFrame({"trial_id": trial_id, "n": np.arange(1, len(curve) + 1), "map": curve}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", "n", "map"])


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


MAP_COLUMNS = ("map_at_5", "map_at_5_low", "map_at_5_high", "map_at_100", "map_at_100_low", "map_at_100_high")


def map_comparison(comparison: pd.DataFrame, thesis: Thesis, *, tier: str, pretrained: bool) -> pd.DataFrame:
    """mAP@5 and mAP@100 of each architecture's best configuration beside the thesis's best (tables 5.2...5.8, 5.17)."""
    best = best_per_architecture(comparison, tier=tier, pretrained=pretrained)
    published = thesis.maps[(thesis.maps.tier == tier) & (thesis.maps.pretrained == pretrained)]
    published = published.assign(architecture=published.model.map(ARCHITECTURE_OF))
    rows = []
    for arch in catalog.ARCHITECTURES:
        ours = best[best.architecture == arch]
        theirs = published[published.architecture == arch]
        if ours.empty and theirs.empty:
            continue
        row = {"architecture": arch, "tier": tier, "pretrained": pretrained}
        if len(ours):
            o = ours.iloc[0]
            row.update(model=o.model, accuracy=o.accuracy, seeds_ok=o.seeds_ok, **{c: o[c] for c in MAP_COLUMNS})
        else:
            row.update(model=None, accuracy=math.nan, seeds_ok=0, map_at_5=math.nan, map_at_100=math.nan)
        if len(theirs):  # the thesis lists ties; compare with our model when it is one of them
            match = theirs[theirs.model == row["model"]]
            t = (match if len(match) else theirs).iloc[0]
            row.update(
                thesis_model=", ".join(theirs.model),
                thesis_compared_model=t.model,
                thesis_map_at_5=t.map_at_5,
                thesis_map_at_100=t.map_at_100,
            )
        else:
            row.update(
                thesis_model=None, thesis_compared_model=None, thesis_map_at_5=math.nan, thesis_map_at_100=math.nan
            )
        row["map_at_5_diff"] = row["map_at_5"] - row["thesis_map_at_5"]
        row["map_at_100_diff"] = row["map_at_100"] - row["thesis_map_at_100"]
        rows.append(row)
    return pd.DataFrame(rows)


def groups(comparison: pd.DataFrame) -> list[tuple[tuple[str, bool], pd.DataFrame]]:
    """((tier, pretrained), rows) in thesis order: from scratch per tier, then pretrained."""
    return sorted(comparison.groupby(["tier", "pretrained"]), key=lambda kv: (kv[0][1], tier_rank(kv[0][0])))
