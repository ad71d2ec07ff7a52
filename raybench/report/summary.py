"""The report's first screen in words: how the run's setup differs from the thesis's, what ran and what was
unstable, how it agrees with the thesis; and the method notes at its end."""

from __future__ import annotations

import json

import pandas as pd

from raybench import catalog, metrics
from raybench.report.comparison import groups

# trials.parquet columns and loop options (its `options`, JSON) whose thesis values are fixed (§4.3-4.4)
SETUP_COLUMNS = ("image_size", "max_epochs", "precision")
LOOP_OPTIONS = ("lr", "es_start", "es_patience", "es_min_delta")
# options that change numbers, with (the default, the behaviour of results recorded before the option existed)
BEHAVIOUR_OPTIONS = {"val_order": ("shuffled", "class"), "nonfinite_stop": ("weights", "loss")}


def _plain(value) -> str:
    """A value as text, whole floats without their '.0'."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def settings_notes(comparison: pd.DataFrame) -> list[str]:
    """How this run's setup differs from the thesis's (so numbers are read for what they are)."""
    ran = comparison[comparison.seeds_ok > 0]
    notes = []
    for column in SETUP_COLUMNS:
        expected = catalog.LOOP_DEFAULTS[column]
        values = sorted({_plain(v) for v in ran[column].dropna()})
        if values and values != [str(expected)]:
            notes.append(f"{column} {', '.join(values)} (thesis: {expected})")
    options = [json.loads(text) for text in ran.get("options", pd.Series(dtype=object)).dropna()]
    for key in LOOP_OPTIONS:
        expected = catalog.LOOP_DEFAULTS[key]
        values = sorted({o[key] for o in options if key in o})
        if values and values != [expected]:
            notes.append(f"{key} {', '.join(map(str, values))} (thesis: {expected})")
    for key, (default, before) in BEHAVIOUR_OPTIONS.items():  # results written before an option existed: `before`
        values = sorted({str(o.get(key, before)) for o in options})
        if values and values != [default]:
            notes.append(f"{key} {', '.join(values)} (default: {default})")
    for tier, sizes in catalog.TIER_SPLITS.items():
        n = pd.to_numeric(ran[ran.tier == tier].n_train, errors="coerce").dropna()
        if len(n) and int(n.iloc[0]) != sizes[0]:
            notes.append(f"tier {tier} has {int(n.iloc[0])} training images (thesis: {sizes[0]})")
    batch_size = pd.to_numeric(ran.batch_size, errors="coerce")
    batch = ran[ran.thesis_batch_size.notna() & (batch_size != ran.thesis_batch_size)]
    if len(batch):
        notes.append(f"{len(batch)} configuration(s) with a batch size other than the thesis's")
    return notes


def unstable_trials(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(collapsed, diverged): the trials predicting at most 2 classes on the test set, and those whose loss diverged."""
    collapsed = trials[trials.collapsed.fillna(False).astype(bool)] if "collapsed" in trials else trials.iloc[:0]
    return collapsed, trials[trials.status == "diverged"]


def summary(trials: pd.DataFrame, comparison: pd.DataFrame, *, has_plan: bool) -> list[str]:
    """The report's opening bullets: what ran, what is missing, what was unstable, how it agrees with the thesis."""
    count = trials.status.value_counts()
    failed = int(len(trials) - count.get("ok", 0) - count.get("missing", 0) - count.get("diverged", 0))
    diverged = f"{int(count['diverged'])} diverged, " if count.get("diverged", 0) else ""
    planned = int(((trials.status == "missing") & trials.trial_id.notna()).sum())
    missing = f"{planned} missing (planned in plan.parquet)" if has_plan else "no plan.parquet (nothing is missing)"
    statuses = ", ".join(f"{n} {s}" for s, n in comparison.status.value_counts().items())
    items = [
        f"Trials: {int(count.get('ok', 0))} finished, {failed} failed, {diverged}{missing}. "
        f"Configurations: {len(comparison)} ({statuses})."
    ]
    collapsed, diverging = unstable_trials(trials)
    finished = collapsed[collapsed.status == "ok"]
    names = ", ".join(finished.trial_id.astype(str).head(8)) + (", …" if len(finished) > 8 else "")
    items.append(
        f"Unstable trials: {len(finished)} of {int(count.get('ok', 0))} finished trials collapsed to at most "
        f"{metrics.COLLAPSE_CLASSES} predicted classes on the test set{f' ({names})' if len(finished) else ''}; "
        f'{len(diverging)} diverged (the loss stopped being finite). See "Unstable trials".'
    )
    compared = comparison[comparison.inside_thesis_interval.notna()]
    if len(compared):
        per_tier = "; ".join(
            f"{t}{' pretrained' if p else ''}: {int(g.inside_thesis_interval.astype(bool).sum())} of {len(g)}"
            for (t, p), g in groups(compared)
        )
        inside = int(compared.inside_thesis_interval.astype(bool).sum())
        items.append(
            f"Agreement with the thesis: {inside} of {len(compared)} configurations have a (mean) test accuracy inside "
            f"the 95% Wilson score interval of the thesis's accuracy at our test-set size ({per_tier}). "
            f"Mean difference ours − thesis: {compared.accuracy_diff.mean():+.3f}; "
            f"mean absolute difference: {compared.accuracy_diff.abs().mean():.3f}."
        )
    else:
        items.append(
            "Agreement with the thesis: no finished configuration has a published counterpart to compare with."
        )
    speed = comparison[(comparison.seeds_ok > 0) & comparison.seconds_per_epoch_ratio.notna()]
    for device, g in speed.groupby("device"):
        ratio = g.seconds_per_epoch_ratio
        items.append(
            f"Speed on {device}: seconds per epoch are a median ×{ratio.median():.3g} of the thesis's "
            f"on one {catalog.THESIS_DEVICE} (range ×{ratio.min():.3g} to ×{ratio.max():.3g}, "
            f"{len(g)} configurations; ×1 = as fast, below 1 = faster)."
        )
    return items


def not_run_line(not_run: pd.DataFrame, thesis, *, ran_tiers: set[str], listed: bool) -> str:
    """How many of the thesis's configurations this run neither ran nor planned, and where they are."""
    tiers = [t for t in catalog.TIER_SPLITS if t in set(not_run.tier) and t not in ran_tiers]
    none = f" (none on tier{'s' if len(tiers) > 1 else ''} {', '.join(tiers)})" if tiers else ""
    where = (
        "listed as missing (--all-configurations)"
        if listed
        else "left out of the tables and figures (--all-configurations lists them)"
    )
    return f"Not in this run: {len(not_run)} of the thesis's {len(thesis.results)} configurations{none}, {where}."


METHOD_NOTES = (
    "Configuration = model × tier × pretrained; several seeds of one configuration give its mean and a 95% "
    "Student-t interval of the mean (tables: [low, high], clipped to [0, 1] for accuracy and mAP; figures: bars or "
    "shaded bands). Confusion matrices sum the seeds. Failed and diverged seeds do not enter the means.",
    "Binomial check: the thesis's accuracy p and our test-set size n give the 95% Wilson score interval; a "
    "configuration agrees when our (mean) accuracy lies inside it, i.e. within the spread test-set sampling alone "
    "produces. Without a finished trial the tier's test size as used is (table 4.1 above: the thesis's rule).",
    "Δ = ours − thesis's; × = ours / thesis's (times). s/epoch = total training time (training and validation) "
    "/ epochs, as in the thesis. Epochs marked * reached the epoch limit (100 in the thesis). Table 5.16 divides "
    "each pretrained number by the same model's from scratch.",
    "Best configuration of an architecture = highest mean test accuracy in that tier (ties: each); it is what the "
    "loss, confusion, mAP and learning-rate figures show.",
    "mAP@N as §5.1.1: for each class, the test images predicted as that class (highest output) are ranked by their "
    "raw output (logit) for it, and the true positives among the first N are divided by N, also when fewer than N "
    "were predicted (a class never predicted scores 0); mAP@N is the mean over the 8 classes. Computed from the "
    "logits in predictions.parquet; ties keep test-set order.",
    "Collapsed = the tested model predicts at most 2 of the 8 classes on the test set; diverged = the training or "
    "validation loss stopped being finite in some epoch: such an epoch never improves, and training goes on as in "
    "the thesis's loop until the weights themselves are not finite (nonfinite_stop=loss: at once); its last "
    "improvement, if any, is tested.",
    "Validation-loss axes are linear and cut above spikes (values beyond Q3 + 3 IQR of the drawn ones, when they "
    "would squash the rest into less than half the height): cut-off epochs are triangles on the top edge with "
    "their values written. Linear, not log, because early stopping asks for an absolute drop of 0.1 (§4.4).",
    "Tables 5.9-5.14 follow the thesis's order: LeNet-5, ResNet, MobileNetV3, ViT, MLP-Mixer, ConvNeXt.",
    "Thesis numbers: Foix Romero (2022), chapter 5, shipped in raybench/thesis/.",
)
