"""Trials to configurations, and configurations beside the thesis's numbers: pure functions of DataFrames."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raybench import catalog, metrics
from raybench.report.inputs import ARCHITECTURE_OF, KEYS, Results, Thesis, model_rank, sort_rows, tier_rank
from raybench.report.statistics import mean_interval, wilson_interval


def trial_status(results: Results, thesis: Thesis, *, all_configurations: bool = False) -> pd.DataFrame:
    """Every trial that ran or was planned: the trials table plus rows with status "missing" for the trials of
    plan.parquet without a result; with `all_configurations`, also every thesis configuration this run neither
    ran nor planned (status "missing", no trial id, seed unknown)."""
    ran = results.trials.copy()
    frames = [ran]
    if results.plan is not None:
        frames.append(results.plan[~results.plan.trial_id.isin(ran.trial_id)][["trial_id", *KEYS, "seed"]].copy())
    if all_configurations:
        frames.append(configurations_not_run(results, thesis)[KEYS].assign(trial_id=None, seed=pd.NA))
    for frame in frames[1:]:
        frame["status"] = "missing"
    frames = [f for f in frames if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else ran
    table["pretrained"] = table["pretrained"].astype(bool)
    table["architecture"] = table.model.map(ARCHITECTURE_OF).fillna("other")
    return sort_rows(table)


def configurations_not_run(results: Results, thesis: Thesis) -> pd.DataFrame:
    """The thesis's configurations (its rows of published results) that this run neither ran nor planned."""
    have = {tuple(k) for k in results.trials[KEYS].itertuples(index=False, name=None)}
    if results.plan is not None:
        have |= set(results.plan[KEYS].astype({"pretrained": bool}).itertuples(index=False, name=None))
    keys = thesis.results[KEYS].itertuples(index=False, name=None)
    return thesis.results[[(m, t, bool(p)) not in have for m, t, p in keys]].reset_index(drop=True)


def _first(frame: pd.DataFrame, column: str):
    values = frame[column].dropna() if column in frame else ()
    return values.iloc[0] if len(values) else pd.NA


def configurations(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (model, tier, pretrained): its seeds' mean and 95% t-interval, and status.

    status is "ok" (every expected seed finished), "partial", "failed", "diverged" (its loss stopped being
    finite) or "missing". Only finished ("ok") seeds enter the means; a failed or diverged seed is counted,
    like a missing one. Any other status counts as failed.
    """
    rows = []
    for (model, tier, pretrained), group in trials.groupby(KEYS, sort=False):
        ok = group[group.status == "ok"]
        counts = {s: int((group.status == s).sum()) for s in ("ok", "diverged", "missing")}
        counts["failed"] = len(group) - sum(counts.values())
        if counts["ok"] == len(group):
            status = "ok"
        elif counts["ok"]:
            status = "partial"
        else:
            status = next((s for s in ("failed", "diverged") if counts[s]), "missing")
        row = {
            "model": model,
            "tier": tier,
            "pretrained": bool(pretrained),
            "architecture": ARCHITECTURE_OF.get(model, "other"),
            "status": status,
            "seeds_ok": counts["ok"],
            "seeds_failed": counts["failed"],
            "seeds_diverged": counts["diverged"],
            "seeds_missing": counts["missing"],
            "seeds": ",".join(str(int(s)) for s in ok.seed.dropna()) if len(ok) else "",
            "trial_ids": tuple(ok.trial_id),
        }
        for metric, name in (("test_accuracy", "accuracy"), ("map_at_5", "map_at_5"), ("map_at_100", "map_at_100")):
            mean, low, high = mean_interval(ok.get(metric, ()))  # proportions: the interval is clipped to [0, 1]
            row[name], row[f"{name}_low"], row[f"{name}_high"] = mean, max(low, 0.0), min(high, 1.0)
        row["accuracy_sd"] = float(ok.test_accuracy.std(ddof=1)) if len(ok) > 1 else math.nan
        for metric in ("epochs", "tested_epoch", "train_seconds", "seconds_per_epoch"):
            row[metric] = mean_interval(ok.get(metric, ()))[0]
        source = ok if len(ok) else group
        row["total_parameters"] = _first(source, "parameters")
        # the thesis counts a pretrained model's trainable parameters (its new head) only
        row["parameters"] = _first(source, "trainable_parameters" if pretrained else "parameters")
        for column in ("batch_size", "image_size", "precision", "max_epochs", "n_train", "n_val", "n_test", "options"):
            row[column] = _first(source, column)
        row["device"] = ", ".join(sorted(set(ok.device.dropna()))) if "device" in ok and len(ok) else ""
        predicted = pd.to_numeric(ok.get("classes_predicted", pd.Series(dtype=float)), errors="coerce").dropna()
        row["classes_predicted"] = int(predicted.min()) if len(predicted) else pd.NA  # the worst seed's
        row["seeds_collapsed"] = int((predicted <= metrics.COLLAPSE_CLASSES).sum())
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
    """The configuration(s) with the highest mean test accuracy of each architecture in one tier (ties: each)."""
    group = comparison[(comparison.tier == tier) & (comparison.pretrained == pretrained) & (comparison.seeds_ok > 0)]
    if group.empty:
        return group
    best = group[group.accuracy == group.groupby("architecture", sort=False).accuracy.transform("max")]
    rank = best.architecture.map(list(catalog.ARCHITECTURES).index)
    return best.assign(_rank=rank).sort_values("_rank", kind="stable").drop(columns="_rank")


def ranking_outputs(rows: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, str]:
    """What mAP@N ranks one trial's test images by: its logits, or its softmax scores where no logits were stored.

    Returns the matrix and "logits" or "scores". Results written before raybench stored logits have scores only;
    the thesis's rule on them keeps its predicted images but not quite its order.
    """
    logits = [f"logit_{c}" for c in classes]
    if set(logits) <= set(rows.columns) and rows[logits].notna().to_numpy().any():
        return rows[logits].to_numpy(dtype=np.float64), "logits"
    return rows[[f"score_{c}" for c in classes]].to_numpy(dtype=np.float64), "scores"


def map_curves(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """mAP@N for every N from 1 to the test size (fig. 5.14) of every trial, the thesis's way (§5.1.1).

    Columns trial_id, n, map and ranked_by ("logits", or "scores" for results stored without logits).
    """
    frames = []
    for trial_id, group in predictions.groupby("trial_id", sort=False):
        outputs, ranked_by = ranking_outputs(group, classes)
        curve = metrics.map_curve(outputs, group.label.to_numpy())
        n = np.arange(1, len(curve) + 1)
        frames.append(pd.DataFrame({"trial_id": trial_id, "n": n, "map": curve, "ranked_by": ranked_by}))
    return (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", "n", "map", "ranked_by"])
    )


def maps_without_logits(
    trials: pd.DataFrame, predictions: pd.DataFrame, classes: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Trials whose predictions hold no logits, with mAP@5/@100 recomputed the thesis's way from the stored scores.

    Such results were written when raybench ranked every test image by its softmax score; the recomputed
    numbers follow §5.1.1 (only the images predicted as the class), ranked by score. Returns the trials
    and the ids recomputed.
    """
    trials, redone = trials.copy(), []
    for trial_id, group in predictions.groupby("trial_id", sort=False):
        outputs, ranked_by = ranking_outputs(group, classes)
        if ranked_by == "logits" or trial_id not in set(trials.trial_id):
            continue
        labels = group.label.to_numpy()
        at = trials.trial_id == trial_id
        trials.loc[at, "map_at_5"] = metrics.map_at_n(outputs, labels, 5)
        trials.loc[at, "map_at_100"] = metrics.map_at_n(outputs, labels, 100)
        redone.append(trial_id)
    return trials, redone


RATIO_MEASURES = ("parameters", "accuracy", "epochs", "seconds_per_epoch", "train_seconds")


def pretrained_ratios(comparison: pd.DataFrame, thesis: Thesis) -> pd.DataFrame:
    """Table 5.16: pretrained / from scratch of parameters (trainable), accuracy, epochs and times, ours and theirs."""
    ours = comparison.set_index(KEYS)
    published = thesis.results.rename(columns={"test_accuracy": "accuracy"}).set_index(KEYS)
    rows = []
    for model, tier in comparison[comparison.pretrained][["model", "tier"]].itertuples(index=False):
        row = {"model": model, "tier": tier, "architecture": ARCHITECTURE_OF.get(model, "other")}
        for measure in RATIO_MEASURES:
            for prefix, table in (("", ours), ("thesis_", published)):
                column = pd.to_numeric(table[measure], errors="coerce")
                scratch = column.get((model, tier, False), math.nan)
                pre = column.get((model, tier, True), math.nan)
                if prefix == "":
                    row[f"{measure}_scratch"], row[f"{measure}_pretrained"] = scratch, pre
                row[f"{prefix}{measure}_ratio"] = pre / scratch if scratch else math.nan
            row[f"{measure}_ratio_diff"] = row[f"{measure}_ratio"] - row[f"thesis_{measure}_ratio"]
        rows.append(row)
    return pd.DataFrame(rows)


MAP_COLUMNS = ("map_at_5", "map_at_5_low", "map_at_5_high", "map_at_100", "map_at_100_low", "map_at_100_high")


def map_comparison(comparison: pd.DataFrame, thesis: Thesis, *, tier: str, pretrained: bool) -> pd.DataFrame:
    """mAP@5 and mAP@100 of each architecture's best configurations, ours and the thesis's (tables 5.2...5.8, 5.17).

    One row per configuration that is a best one, ours (highest mean accuracy) or the thesis's (map.csv lists
    several for some architectures and tiers: each is a row), with our numbers and the thesis's for it.
    """
    best = best_per_architecture(comparison, tier=tier, pretrained=pretrained)
    ours_all = comparison[(comparison.tier == tier) & (comparison.pretrained == pretrained)].set_index("model")
    published = thesis.maps[(thesis.maps.tier == tier) & (thesis.maps.pretrained == pretrained)]
    # the thesis's best configurations of this run's (with --all-configurations every one is in `comparison`)
    published = published[published.model.isin(ours_all.index)]
    published = published.assign(architecture=published.model.map(ARCHITECTURE_OF))
    accuracy = thesis.results.set_index(KEYS).test_accuracy
    rows = []
    for arch in catalog.ARCHITECTURES:
        ours = best[best.architecture == arch]
        theirs = published[published.architecture == arch].set_index("model")
        models = sorted(set(ours.model) | set(theirs.index), key=model_rank)
        for model in models:
            row = {"architecture": arch, "model": model, "our_best": model in set(ours.model)}
            row["thesis_best"] = model in theirs.index
            o = ours_all.loc[model] if model in ours_all.index else None
            ran = o is not None and o.seeds_ok > 0
            row["status"] = o.status if o is not None else None
            row.update(accuracy=o.accuracy if ran else math.nan, seeds_ok=int(o.seeds_ok) if o is not None else 0)
            row.update({c: o[c] if ran else math.nan for c in MAP_COLUMNS})
            row["thesis_accuracy"] = accuracy.get((model, tier, pretrained), math.nan)
            for n in (5, 100):
                row[f"thesis_map_at_{n}"] = theirs[f"map_at_{n}"].get(model, math.nan)
                row[f"map_at_{n}_diff"] = row[f"map_at_{n}"] - row[f"thesis_map_at_{n}"]
            rows.append(row)
    return pd.DataFrame(rows).assign(tier=tier, pretrained=pretrained)


def groups(comparison: pd.DataFrame) -> list[tuple[tuple[str, bool], pd.DataFrame]]:
    """((tier, pretrained), rows) in thesis order: from scratch per tier, then pretrained."""
    return sorted(comparison.groupby(["tier", "pretrained"]), key=lambda kv: (kv[0][1], tier_rank(kv[0][0])))
