"""The report as a document: its blocks (headings, text, tables, figures) and which the results call for."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from raybench import catalog, metrics
from raybench.report.comparison import (
    best_per_architecture,
    compare_with_thesis,
    configurations,
    groups,
    map_curves,
    maps_without_logits,
    pretrained_ratios,
    trial_status,
)
from raybench.report.effects import (
    effect_figure,
    effect_summary,
    effect_table,
    effects,
    slug,
    split_baseline,
    summary_table,
)
from raybench.report.figures import (
    accuracy_scatter,
    confusion_figure,
    curve_figure,
    heatmap_figure,
    map_figure,
    ratio_figure,
    size_figure,
    speed_scatter,
)
from raybench.report.inputs import Results, Thesis
from raybench.report.tables import (
    ARCHITECTURE_TABLES,
    Table,
    architecture_table,
    change_table,
    instability_table,
    map_table,
    tier_table,
    trials_table,
)


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


def summary(
    trials: pd.DataFrame, comparison: pd.DataFrame, *, has_plan: bool, tiers_not_run: Sequence[str]
) -> list[str]:
    """The report's opening bullets: what ran, what is missing, what was unstable, how it agrees with the thesis."""
    count = trials.status.value_counts()
    failed = int(len(trials) - count.get("ok", 0) - count.get("missing", 0) - count.get("diverged", 0))
    diverged = f"{int(count['diverged'])} diverged, " if count.get("diverged", 0) else ""
    expected = "planned in plan.parquet" if has_plan else "thesis configurations of the tiers that ran; no plan.parquet"
    statuses = ", ".join(f"{n} {s}" for s, n in comparison.status.value_counts().items())
    items = [
        f"Trials: {int(count.get('ok', 0))} finished, {failed} failed, {diverged}"
        f"{int(count.get('missing', 0))} missing ({expected}). Configurations: {len(comparison)} ({statuses})."
    ]
    collapsed, diverging = unstable_trials(trials)
    finished = collapsed[collapsed.status == "ok"]
    names = ", ".join(finished.trial_id.astype(str).head(8)) + (", …" if len(finished) > 8 else "")
    items.append(
        f"Unstable trials: {len(finished)} of {int(count.get('ok', 0))} finished trials collapsed to at most "
        f"{metrics.COLLAPSE_CLASSES} predicted classes on the test set{f' ({names})' if len(finished) else ''}; "
        f'{len(diverging)} diverged (the loss stopped being finite). See "Unstable trials".'
    )
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
    return items


METHOD_NOTES = (
    "Configuration = model × tier × pretrained; several seeds of one configuration give its mean and a 95% "
    "Student-t interval of the mean (tables: [low, high], clipped to [0, 1] for accuracy and mAP; figures: bars or "
    "shaded bands). Confusion matrices sum the seeds. Failed and diverged seeds do not enter the means.",
    "Binomial check: the thesis's accuracy p and our test-set size n give the 95% Wilson score interval; a "
    "configuration agrees when our (mean) accuracy lies inside it, i.e. within the spread test-set sampling alone "
    "produces. Without a finished trial the thesis's tier test size is used (table 4.1).",
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
    "validation loss stopped being finite, which ends a trial (its last improvement, if any, is tested).",
    "Validation-loss axes are linear and cut above spikes (values beyond Q3 + 3 IQR of the drawn ones, when they "
    "would squash the rest into less than half the height): cut-off epochs are triangles on the top edge with "
    "their values written. Linear, not log, because early stopping asks for an absolute drop of 0.1 (§4.4).",
    "Tables 5.9-5.14 follow the thesis's order: LeNet-5, ResNet, MobileNetV3, ViT, MLP-Mixer, ConvNeXt.",
    "Thesis numbers: Foix Romero (2022), chapter 5, shipped in raybench/thesis/.",
)


# --------------------------------------------------------------------------------------------- the blocks


def build_report(results: Results, thesis: Thesis, *, tiers: Sequence[str] = (), filters: str = "") -> Report:
    """The whole document: setup and summary, unstable trials, per-tier sections, per architecture, all trials."""
    redone: list[str] = []
    if len(results.predictions):
        remapped, redone = maps_without_logits(results.trials, results.predictions, results.classes)
        results = dataclasses.replace(results, trials=remapped)
    # the thesis's chapter 5 reads the baseline trials of its 22 models; the rest are "Effects" (and every trial is
    # in the unstable trials and the list of all trials)
    everything, results = results, split_baseline(results)
    all_trials = trial_status(everything, thesis, tiers=tiers)
    trials = trial_status(results, thesis, tiers=tiers)
    if trials.empty:  # nothing of the thesis's to compare with: a run of variants or other models only
        return Report(
            f"raybench report: {results.name}",
            [
                Paragraph(
                    f"Results folder `{results.name}`{filters}. No baseline trial of the thesis's 22 models: nothing "
                    "here compares with the thesis's chapter 5; the effects below compare the run's own trials."
                ),
                *_unstable_section(everything, all_trials),
                *_effects_section(everything),
                Heading(2, "All trials"),
                trials_table(all_trials),
                Heading(2, "Method"),
                Bullets(METHOD_NOTES),
            ],
        )
    comparison = compare_with_thesis(configurations(trials), thesis)
    curves = map_curves(results.predictions, results.classes)
    ran_tiers = set(trials.tier)
    tiers_not_run = [
        t
        for t in catalog.TIER_SPLITS
        if t not in ran_tiers and not tiers and results.plan is None and len(thesis.results[thesis.results.tier == t])
    ]
    has_plan = results.plan is not None
    notes = settings_notes(comparison)
    setup = (
        "**Not the thesis's setup**, so differences are expected: " + "; ".join(notes) + "."
        if notes
        else "Setup: the thesis's (image size, epochs, precision, learning rate, early stopping and tier sizes)."
    )
    if redone:
        setup += (
            f" {len(redone)} trial(s) stored no logits (written by an earlier raybench): their mAP is recomputed "
            "here the thesis's way but ranked by softmax score, close to, not exactly, the thesis's ranking."
        )
    blocks: list[Block] = [
        Paragraph(
            f"Results folder `{results.name}`{filters}. Every number of ours stands beside the thesis's "
            f"(Foix Romero 2022, chapter 5) and the difference; tables are numbered as in the thesis and are "
            f"also in tables/ as CSV."
        ),
        Paragraph(setup),
        Heading(2, "Summary"),
        Bullets(tuple(summary(all_trials, comparison, has_plan=has_plan, tiers_not_run=tiers_not_run))),
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
    blocks += _unstable_section(everything, all_trials)
    ratios = pretrained_ratios(comparison, thesis)
    for (tier, pretrained), _ in groups(comparison):
        blocks += _group_section(results, thesis, comparison, curves, ratios, tier=tier, pretrained=pretrained)
    blocks.append(Heading(2, "By architecture"))
    ordered = [*ARCHITECTURE_TABLES, *(a for a in catalog.ARCHITECTURES if a not in ARCHITECTURE_TABLES)]
    for arch in ordered:
        scratch = comparison[(comparison.architecture == arch) & ~comparison.pretrained]
        if scratch.empty:
            continue
        blocks += [Heading(3, arch), architecture_table(comparison, arch)]
        if (scratch.seeds_ok > 0).any():
            slug = arch.lower()
            caption = (
                f"{arch}: test accuracy against the number of training images (cf. thesis figs. 5.17-5.26); "
                "ours solid with 95% t-interval bars, the thesis's dashed."
            )
            blocks.append(Plot(f"training_size_{slug}", caption, size_figure(comparison, thesis, arch)))
            caption = (
                f"{arch}: seconds per epoch against the number of training images (the times of table "
                f"{ARCHITECTURE_TABLES.get(arch, '5.9-5.14')}); ours solid, the thesis's dashed "
                f"({catalog.THESIS_DEVICE}); log axis."
            )
            figure = size_figure(comparison, thesis, arch, value="seconds_per_epoch")
            blocks.append(Plot(f"epoch_time_{slug}", caption, figure))
    blocks += _effects_section(everything)
    blocks += [Heading(2, "All trials"), trials_table(all_trials), Heading(2, "Method"), Bullets(METHOD_NOTES)]
    return Report(f"raybench report: {results.name}", blocks)


def _effects_section(results: Results) -> list[Block]:
    """The effect of every change a grid makes beyond its baseline (chapter 7): an overview, then a table and a
    figure per change. Nothing when the run changes nothing."""
    plan = results.plan
    order = list(dict.fromkeys(plan.variant.fillna(""))) if plan is not None and "variant" in plan else []
    rows = effects(results.trials, order=order)
    if rows.empty:
        return []
    overview = effect_summary(rows)
    blocks: list[Block] = [
        Heading(2, "Effects"),
        Paragraph(
            "What the run changes beyond its baseline (the thesis's future work, chapter 7): each labelled sweep "
            "against the unlabelled trials of the same model and tier, ImageNet fine-tunes against the same model "
            "from scratch, and models beyond the thesis's 22 against the best thesis model of their tier. Test "
            "accuracy, mean over finished seeds with its 95% Student-t interval; the intervals separate when they "
            "do not overlap."
        ),
        summary_table(overview),
    ]
    for effect in overview.effect:
        table = effect_table(rows, effect)
        blocks += [
            Heading(3, f"Effect of {effect}"),
            table,
            Plot(
                f"effect_{slug(effect)}",
                f"Effect of {effect}: test accuracy per configuration, the baseline hollow and grey, the change "
                "filled; bars: 95% t-intervals over seeds (none with one seed); dotted: chance (1/8).",
                effect_figure(rows, effect),
            ),
        ]
    return blocks


MAX_PANELS = 12  # confusion matrices of unstable trials drawn at most


def _unstable_section(results: Results, trials: pd.DataFrame) -> list[Block]:
    """The trials that collapsed or diverged: a table, their confusion matrices and validation losses."""
    collapsed, diverged = unstable_trials(trials)
    blocks: list[Block] = [Heading(2, "Unstable trials")]
    if collapsed.empty and diverged.empty:
        return [*blocks, Paragraph("No trial collapsed to 2 or fewer predicted classes, and none diverged.")]
    blocks.append(instability_table(trials, results.classes))
    unstable = pd.concat([collapsed, diverged[~diverged.trial_id.isin(collapsed.trial_id)]], ignore_index=True)
    rows = pd.DataFrame(
        {
            "trial_ids": [(t,) for t in unstable.trial_id],
            "label": [f"{t} ({s})" for t, s in zip(unstable.trial_id, unstable.status, strict=True)],
            "architecture": unstable.architecture,
            "model": unstable.model,
            "pretrained": unstable.pretrained,
            "seeds_ok": 1,
            "accuracy": unstable.test_accuracy,
        }
    )
    has_matrix = unstable.confusion_matrix.map(lambda m: m is not None and not isinstance(m, float) and len(m) > 0)
    with_matrix = rows[has_matrix.to_numpy(dtype=bool)]
    if len(with_matrix):
        more = f" (the first {MAX_PANELS} of {len(with_matrix)})" if len(with_matrix) > MAX_PANELS else ""
        blocks.append(
            Plot(
                "confusion_unstable",
                f"Confusion matrices of the unstable trials{more}: a collapsed model puts (nearly) every test "
                "image in one or two columns.",
                confusion_figure(
                    with_matrix.head(MAX_PANELS), results.trials, results.classes, title="Unstable trials"
                ),
            )
        )
    epochs = results.epochs[results.epochs.trial_id.isin(unstable.trial_id)]
    if len(epochs):
        blocks.append(
            Plot(
                "val_loss_unstable",
                "Validation loss per epoch of the unstable trials (one line each; dots: the tested epoch); "
                "cut-off values are written on the top edge.",
                curve_figure(
                    epochs,
                    rows.head(MAX_PANELS),
                    value="val_loss",
                    title="Validation loss, unstable trials",
                    ylabel="validation loss",
                ),
                epochs,
            )
        )
    return blocks


def _group_section(
    results: Results,
    thesis: Thesis,
    comparison: pd.DataFrame,
    curves: pd.DataFrame,
    ratios: pd.DataFrame,
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
        ratio = change_table(ratios, tier=tier)
        blocks.append(ratio)
        if len(ratio.data) and ratio.data[["accuracy_ratio", "thesis_accuracy_ratio"]].notna().any(axis=None):
            blocks.append(
                Plot(
                    f"pretrained_ratio_{tier}",
                    f"{ratio.title.split(':')[0]} drawn: each pretrained number divided "
                    "by the same model's from scratch, ours (solid) beside the thesis's (hatched); log axis, ×1 = "
                    "no change.",
                    ratio_figure(ratio.data, title=f"Pretrained / from scratch, tier {tier}"),
                    ratio.data,
                )
            )
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
            "(cf. thesis figs. 5.1, 5.4, 5.6); dots mark the tested epoch (last improvement, fig. 4.5); a first-epoch "
            "spike is cut off at the top edge, its value written (linear axis, see Method).",
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
            f"mAP@N for every N from 1 to the test size, {where} (cf. thesis fig. 5.14), the thesis's way from the "
            "stored logits (see Method); crosses: the thesis's mAP@5 and mAP@100 of its best configurations of the "
            "architecture.",
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
