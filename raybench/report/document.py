"""The report as a document: its blocks (headings, text, tables, figures) and which the results call for."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from raybench import catalog
from raybench.report.comparison import (
    best_per_architecture,
    compare_with_thesis,
    configurations,
    groups,
    map_curves,
    pretrained_change,
    trial_status,
)
from raybench.report.figures import (
    accuracy_scatter,
    confusion_figure,
    curve_figure,
    heatmap_figure,
    map_figure,
    size_figure,
    speed_scatter,
)
from raybench.report.inputs import Results, Thesis
from raybench.report.tables import Table, architecture_table, change_table, map_table, tier_table, trials_table


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


# ------------------------------------------------------------------------------------------------ summary

# trials.parquet columns and loop options (its `options`, JSON) whose thesis values are fixed (§4.3-4.4)
SETUP_COLUMNS = ("image_size", "max_epochs", "precision")
LOOP_OPTIONS = ("lr", "es_start", "es_patience", "es_min_delta")


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
    for tier, sizes in catalog.TIER_SPLITS.items():
        n = pd.to_numeric(ran[ran.tier == tier].n_train, errors="coerce").dropna()
        if len(n) and int(n.iloc[0]) != sizes[0]:
            notes.append(f"tier {tier} has {int(n.iloc[0])} training images (thesis: {sizes[0]})")
    batch_size = pd.to_numeric(ran.batch_size, errors="coerce")
    batch = ran[ran.thesis_batch_size.notna() & (batch_size != ran.thesis_batch_size)]
    if len(batch):
        notes.append(f"{len(batch)} configuration(s) with a batch size other than the thesis's")
    return notes


def summary(
    trials: pd.DataFrame, comparison: pd.DataFrame, *, has_plan: bool, tiers_not_run: Sequence[str]
) -> list[str]:
    """The report's opening bullets: what ran, what is missing, how it agrees with the thesis, how fast."""
    count = trials.status.value_counts()
    expected = "planned in plan.parquet" if has_plan else "thesis configurations of the tiers that ran; no plan.parquet"
    statuses = ", ".join(f"{n} {s}" for s, n in comparison.status.value_counts().items())
    items = [
        f"Trials: {int(count.get('ok', 0))} finished, {int(count.get('failed', 0))} failed, "
        f"{int(count.get('missing', 0))} missing ({expected}). Configurations: {len(comparison)} ({statuses})."
    ]
    if tiers_not_run:
        items.append(
            f"Thesis tiers with no trials here: {', '.join(tiers_not_run)} "
            "(pass --tiers to list their configurations as missing)."
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
        ratio = g.seconds_per_epoch_ratio
        items.append(
            f"Speed on {device}: seconds per epoch are a median ×{ratio.median():.3g} of the thesis's "
            f"on one {catalog.THESIS_DEVICE} (range ×{ratio.min():.3g} to ×{ratio.max():.3g}, "
            f"{len(g)} configurations; ×1 = as fast, below 1 = faster)."
        )
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
    "Δ = ours − thesis's; × = ours / thesis's (times). s/epoch = total training time (training and validation) "
    "/ epochs, as in the thesis. Epochs marked * reached the epoch limit (100 in the thesis).",
    "Best configuration of an architecture = highest mean test accuracy in that tier; it is what the loss, confusion, "
    "mAP and learning-rate figures show.",
    "mAP@N (§5.1.1) is computed here for every N from the stored softmax scores (predictions.parquet); "
    "ties keep test-set order.",
    "Tables 5.9-5.14 follow the architecture order LeNet-5, ResNet, MobileNetV3, ConvNeXt, ViT, MLP-Mixer.",
    "Thesis numbers: Foix Romero (2022), chapter 5, shipped in raybench/thesis/.",
)


# --------------------------------------------------------------------------------------------- the blocks


def build_report(results: Results, thesis: Thesis, *, tiers: Sequence[str] = (), filters: str = "") -> Report:
    """The whole document: summary, per-tier sections, pretrained, per architecture, all trials, method."""
    trials = trial_status(results, thesis, tiers=tiers)
    comparison = compare_with_thesis(configurations(trials), thesis)
    curves = map_curves(results.predictions, results.classes)
    ran_tiers = set(trials.tier)
    tiers_not_run = [
        t
        for t in catalog.TIER_SPLITS
        if t not in ran_tiers and not tiers and results.plan is None and len(thesis.results[thesis.results.tier == t])
    ]
    has_plan = results.plan is not None
    blocks: list[Block] = [
        Paragraph(
            f"Results folder `{results.name}`{filters}. Every number of ours stands beside the thesis's "
            f"(Foix Romero 2022, chapter 5) and the difference; tables are numbered as in the thesis and are "
            f"also in tables/ as CSV."
        ),
        Heading(2, "Summary"),
        Bullets(tuple(summary(trials, comparison, has_plan=has_plan, tiers_not_run=tiers_not_run))),
    ]
    if comparison.seeds_ok.sum():
        blocks += [
            Plot(
                "heatmap_accuracy",
                "The grid at a glance: test accuracy per configuration and tier (left) and its "
                "difference from the thesis's (right); grey cells have no result.",
                heatmap_figure(comparison),
            ),
            Plot(
                "accuracy_vs_thesis",
                "Our test accuracy against the thesis's; the grey band is the 95% Wilson interval "
                "of the thesis's accuracy at our test-set size (inside it = agreement up to test sampling).",
                accuracy_scatter(comparison),
            ),
            Plot(
                "speed_vs_thesis",
                f"Seconds per epoch, ours against the thesis's ({catalog.THESIS_DEVICE}).",
                speed_scatter(comparison),
            ),
        ]
    change = pretrained_change(comparison, thesis)
    for (tier, pretrained), _ in groups(comparison):
        blocks += _group_section(results, thesis, comparison, curves, change, tier=tier, pretrained=pretrained)
    blocks.append(Heading(2, "By architecture"))
    for arch in catalog.ARCHITECTURES:
        scratch = comparison[(comparison.architecture == arch) & ~comparison.pretrained]
        if scratch.empty:
            continue
        blocks += [Heading(3, arch), architecture_table(comparison, arch)]
        if (scratch.seeds_ok > 0).any():
            caption = (
                f"{arch}: test accuracy against the number of training images (cf. thesis figs. 5.17-5.26); "
                "ours solid with 95% t-interval bars, the thesis's dashed."
            )
            blocks.append(Plot(f"training_size_{arch.lower()}", caption, size_figure(comparison, thesis, arch)))
    blocks += [Heading(2, "All trials"), trials_table(trials), Heading(2, "Method"), Bullets(METHOD_NOTES)]
    return Report(f"raybench report: {results.name}", blocks)


def _group_section(
    results: Results,
    thesis: Thesis,
    comparison: pd.DataFrame,
    curves: pd.DataFrame,
    change: pd.DataFrame,
    *,
    tier: str,
    pretrained: bool,
) -> list[Block]:
    """One tier's section: its results and mAP tables, then loss, confusion, mAP@N and learning-rate figures."""
    which = "ImageNet-pretrained" if pretrained else "from scratch"
    slug = f"{tier}{'_pretrained' if pretrained else ''}"
    blocks: list[Block] = [
        Heading(2, f"Tier {tier}, {which}"),
        tier_table(comparison, tier=tier, pretrained=pretrained),
    ]
    if pretrained:
        blocks.append(change_table(change, tier=tier))
    maps = map_table(comparison, thesis, tier=tier, pretrained=pretrained)
    blocks.append(maps)
    best = best_per_architecture(comparison, tier=tier, pretrained=pretrained)
    if best.empty:
        return [*blocks, Paragraph(f"No finished trial in tier {tier} ({which}): no figures.")]
    ids = [t for ts in best.trial_ids for t in ts]
    epochs = results.epochs[results.epochs.trial_id.isin(ids)]
    chosen = curves[curves.trial_id.isin(ids)]
    where = f"tier {tier}, {which}"
    return [
        *blocks,
        Plot(
            f"val_loss_{slug}",
            f"Validation loss per epoch of the best configuration of each architecture, {where} "
            "(cf. thesis figs. 5.1, 5.4, 5.6); dots mark the tested epoch (last improvement, fig. 4.5).",
            curve_figure(epochs, best, value="val_loss", title=f"Validation loss, {where}", ylabel="validation loss"),
            epochs,
        ),
        Plot(
            f"confusion_{slug}",
            f"Confusion matrices of the best configuration of each architecture, {where} "
            "(cf. thesis figs. 5.2, 5.5, 5.8); colour = share of the true class, numbers = images.",
            confusion_figure(best, results.trials, results.classes, title=f"Confusion matrices, {where}"),
        ),
        Plot(
            f"map_curve_{slug}",
            f"mAP@N for every N from 1 to the test size, {where} (cf. thesis fig. 5.14), from the stored scores; "
            "crosses: the thesis's mAP@5 and mAP@100 of its best configuration of the architecture.",
            map_figure(curves, best, maps.data, title=f"mAP@N, {where}"),
            chosen,
        ),
        Plot(
            f"learning_rate_{slug}",
            f"Learning rate per epoch (ReduceLROnPlateau, §4.3; cf. thesis fig. 5.31), {where}.",
            curve_figure(
                epochs, best, value="lr", title=f"Learning rate, {where}", ylabel="learning rate", log=True, steps=True
            ),
        ),
    ]
