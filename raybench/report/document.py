"""The report as a document: its blocks (headings, text, tables, figures), and its sections (`SECTIONS`), each a
function from the same context to the blocks the results call for."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from raybench import catalog
from raybench.data.cache import DEFAULT_CACHE_DIR, cached_images
from raybench.report import confusions, curves
from raybench.report.comparison import (
    best_per_architecture,
    compare_with_thesis,
    configurations,
    configurations_not_run,
    groups,
    map_curves,
    maps_without_logits,
    pretrained_ratios,
    trial_status,
)
from raybench.report.conclusions import CLAIMS, conclusions_section
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
    class_distribution_figure,
    confusion_figure,
    curve_figure,
    heatmap_figure,
    map_figure,
    original_figure,
    preprocessed_figure,
    ratio_figure,
    scatter_points,
    size_figure,
    speed_scatter,
)
from raybench.report.inputs import Results, Thesis
from raybench.report.raw_images import data_sources, original_images
from raybench.report.summary import METHOD_NOTES, not_run_line, settings_notes, summary, unstable_trials
from raybench.report.tables import (
    ARCHITECTURE_TABLES,
    Table,
    architecture_table,
    change_table,
    instability_table,
    leaderboard_table,
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
SCATTER_COLUMNS = ["priority", "label", "model", "tier", "pretrained", "thesis_accuracy", "accuracy", "accuracy_diff",
                   "inside_thesis_interval"]  # fmt: skip


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


# --------------------------------------------------------------------------------------------- the blocks


@dataclasses.dataclass(frozen=True)
class Context:
    """What every section reads: the thesis's baseline trials (`results`, `trials`) beside the whole run's
    (`everything`, `all_trials`), the comparison with the thesis, and how the report was asked for."""

    results: Results
    everything: Results
    thesis: Thesis
    trials: pd.DataFrame
    all_trials: pd.DataFrame
    comparison: pd.DataFrame
    tiers: Sequence[str]
    filters: str
    redone: Sequence[str]
    all_configurations: bool = False  # the thesis's configurations this run did not run or plan, listed as missing
    claims: tuple = CLAIMS  # the conclusions tested: the thesis's, and any a grid or --claims file adds
    cache_dir: Path = DEFAULT_CACHE_DIR  # where figure 4.3 looks for the decoded images the trials read


def context(
    results: Results,
    thesis: Thesis,
    *,
    tiers: Sequence[str] = (),
    filters: str = "",
    all_configurations: bool = False,
    claims: tuple = CLAIMS,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
) -> Context:
    redone: list[str] = []
    if len(results.predictions):
        remapped, redone = maps_without_logits(results.trials, results.predictions, results.classes)
        results = dataclasses.replace(results, trials=remapped)
    # the thesis's chapter 5 reads the baseline trials of its 22 models; the rest are "Effects" (and every trial is
    # in the unstable trials and the list of all trials)
    everything, results = results, split_baseline(results)
    trials = trial_status(results, thesis, all_configurations=all_configurations)
    comparison = compare_with_thesis(configurations(trials), thesis) if len(trials) else pd.DataFrame()
    return Context(
        results=results,
        everything=everything,
        thesis=thesis,
        trials=trials,
        all_trials=trial_status(everything, thesis, all_configurations=all_configurations),
        comparison=comparison,
        tiers=tiers,
        filters=filters,
        redone=redone,
        all_configurations=all_configurations,
        claims=claims,
        cache_dir=Path(cache_dir).expanduser(),
    )


def _opening(ctx: Context) -> list[Block]:
    """What the folder is, how its setup differs from the thesis's, and the summary bullets."""
    results, thesis, comparison = ctx.results, ctx.thesis, ctx.comparison
    notes = settings_notes(comparison)
    setup = (
        "**Not the thesis's setup**, so differences are expected: " + "; ".join(notes) + "."
        if notes
        else "Setup: the thesis's (image size, epochs, precision, learning rate, early stopping and tier sizes)."
    )
    if ctx.redone:
        setup += (
            f" {len(ctx.redone)} trial(s) stored no logits: their mAP is recomputed here the thesis's way but ranked "
            "by softmax score, close to, not exactly, the thesis's ranking."
        )
    bullets = summary(ctx.all_trials, comparison, has_plan=results.plan is not None)
    not_run = configurations_not_run(ctx.everything, thesis)
    if len(not_run):
        bullets.append(
            not_run_line(not_run, thesis, ran_tiers=set(ctx.everything.trials.tier), listed=ctx.all_configurations)
        )
    return [
        Paragraph(
            f"Results folder `{results.name}`{ctx.filters}. Every number of ours stands beside the thesis's "
            f"(Foix Romero 2022, chapter 5) and the difference; tables are numbered as in the thesis and are "
            f"also in tables/ as CSV."
        ),
        Paragraph(setup),
        Heading(2, "Summary"),
        Bullets(tuple(bullets)),
    ]


def _leaderboard(ctx: Context) -> list[Block]:
    """The best configurations of each tier, beside the thesis's numbers for them."""
    if not (ctx.comparison.seeds_ok > 0).any():
        return []
    return [Heading(2, "Leaderboard"), leaderboard_table(ctx.comparison, ctx.thesis)]


def _environment(ctx: Context) -> list[Block]:
    """Where the numbers came from (run.json): the software, the code's commit, the command and the machine."""
    runs = ctx.everything.runs
    if not runs:
        return []
    last = runs[-1]
    versions = ", ".join(f"{name} {v}" for name, v in last.get("versions", {}).items() if v)
    git = last.get("git") or {}
    commit = git.get("commit")
    code = (
        f"{commit[:12]}{' (with uncommitted changes)' if git.get('dirty') else ''}" if commit else "not a git checkout"
    )
    gpus = "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in last.get("gpus", [])) or "none"
    ended = last.get("ended_at") or "did not end (interrupted, or still running)"
    items = (
        f"Software: {versions}; Python {last.get('python')}.",
        f"Code: {code}.",
        f"Command: `{' '.join(last.get('argv', []))}` in `{last.get('cwd')}`; grid file `{last.get('grid_file')}` "
        f"(sha256 {str(last.get('grid_sha256'))[:16]}…).",
        f"Machine: {last.get('host')}, {last.get('cpu')} ({last.get('cpu_count')} CPUs), GPUs: {gpus}.",
        f"Time (UTC): started {last.get('started_at')}, ended {ended}"
        + (f"; {len(runs)} invocations (the first started {runs[0].get('started_at')})." if len(runs) > 1 else "."),
    )
    return [Heading(2, "Run environment"), Bullets(items)]


def _overview(ctx: Context) -> list[Block]:
    """The grid at a glance: accuracy heat map, ours against the thesis's, speed against the thesis's."""
    comparison = ctx.comparison
    if not comparison.seeds_ok.sum():
        return []
    return [
        Plot(
            "heatmap_accuracy",
            "The grid at a glance: test accuracy per configuration and tier (left) and its "
            "difference from the thesis's (right); grey cells have no result.",
            heatmap_figure(comparison),
        ),
        Plot(
            "accuracy_vs_thesis",
            "Our test accuracy against the thesis's; the grey band is the 95% Wilson interval "
            "of the thesis's accuracy at our test-set size (inside it = agreement up to test sampling). Labelled, "
            "where there is room: the best configuration of each tier, then those furthest from the thesis's "
            "number; every point is in the data (CSV).",
            accuracy_scatter(comparison),
            scatter_points(comparison)[SCATTER_COLUMNS],
        ),
        Plot(
            "speed_vs_thesis",
            f"Seconds per epoch, ours against the thesis's ({catalog.THESIS_DEVICE}).",
            speed_scatter(comparison),
        ),
    ]


def _tiers(ctx: Context) -> list[Block]:
    """A section per tier, from scratch and pretrained."""
    curves = map_curves(ctx.results.predictions, ctx.results.classes)
    ratios = pretrained_ratios(ctx.comparison, ctx.thesis)
    blocks: list[Block] = []
    for (tier, pretrained), _ in groups(ctx.comparison):
        blocks += _group_section(
            ctx.results, ctx.thesis, ctx.comparison, curves, ratios, tier=tier, pretrained=pretrained
        )
    return blocks


def _architectures(ctx: Context) -> list[Block]:
    """Tables 5.9-5.14, each architecture's accuracy and epoch time against the training-set size, its validation
    accuracy and loss curves per tier, and the confusion-matrix sets of ViT (fig. 5.24) and ConvNeXt (fig. 5.29)."""
    comparison, thesis = ctx.comparison, ctx.thesis
    blocks: list[Block] = [Heading(2, "By architecture")]
    ordered = [*ARCHITECTURE_TABLES, *(a for a in catalog.ARCHITECTURES if a not in ARCHITECTURE_TABLES)]
    one_size = []
    for arch in ordered:
        scratch = comparison[(comparison.architecture == arch) & ~comparison.pretrained]
        if scratch.empty:
            continue
        blocks += [Heading(3, arch), architecture_table(comparison, arch)]
        sizes = pd.to_numeric(scratch[scratch.seeds_ok > 0].n_train, errors="coerce").nunique()
        name = arch.lower()
        if sizes < 2:  # one training-set size of ours: nothing to draw against the size
            one_size.append(arch)
        else:
            caption = (
                f"{arch}: test accuracy against the number of training images (cf. thesis figs. 5.17-5.26); "
                "ours solid with 95% t-interval bars, the thesis's dashed with hollow markers."
            )
            blocks.append(Plot(f"training_size_{name}", caption, size_figure(comparison, thesis, arch)))
            caption = (
                f"{arch}: seconds per epoch against the number of training images (the times of table "
                f"{ARCHITECTURE_TABLES.get(arch, '5.9-5.14')}); ours solid, the thesis's dashed "
                f"({catalog.THESIS_DEVICE}); log axis."
            )
            figure = size_figure(comparison, thesis, arch, value="seconds_per_epoch")
            blocks.append(Plot(f"epoch_time_{name}", caption, figure))
        blocks += _architecture_curves(ctx, arch)
        blocks += _architecture_matrices(ctx, arch)
    if one_size:
        blocks.insert(
            1,
            Paragraph(
                f"No figures of accuracy and time per epoch against the training-set size for {', '.join(one_size)}: "
                "they finished trials on one tier only (the tables give the numbers)."
            ),
        )
    return blocks


NO_THESIS_CURVES = "the thesis publishes its curves as pictures only, so only ours are drawn"


def _architecture_curves(ctx: Context, arch: str) -> list[Block]:
    """Validation accuracy of every trial and loss of every configuration per epoch, a panel per tier (cf. thesis
    figs. 5.7, 5.15, 5.19, 5.20, 5.22, 5.27 and 5.10, 5.11, 5.13, 5.16, 5.18, 5.28)."""
    epochs = ctx.results.epochs
    if not curves.panels(ctx.comparison, arch):
        return []
    name = arch.lower()
    figure, data = curves.accuracy_curves(epochs, ctx.comparison, arch)
    blocks: list[Block] = [
        Plot(
            f"val_accuracy_{name}",
            f"{arch}: validation accuracy per epoch of every finished trial, a panel per tier (cf. thesis figs. 5.7, "
            "5.15, 5.19, 5.20, 5.22, 5.27); a colour per configuration, a line per seed, dots on the tested epoch, "
            f"dotted: chance (1/8); {NO_THESIS_CURVES}.",
            figure,
            data,
        )
    ]
    figure, scales = curves.loss_curves(epochs, ctx.comparison, arch)
    logs = [f"{r.tier}{' pretrained' if r.pretrained else ''}" for r in scales.itertuples() if r.axis == "log"]
    axis = (
        f"log axis where the losses span more than ×{curves.LOG_SPAN:g} (as fig. 5.13: {', '.join(logs)}), the others "
        "linear"
        if logs
        else f"linear axes (no panel's losses span more than ×{curves.LOG_SPAN:g})"
    )
    blocks.append(
        Plot(
            f"loss_{name}",
            f"{arch}: train (solid) and validation (dashed) loss per epoch of every configuration, a panel per tier "
            f"(cf. thesis figs. 5.10, 5.11, 5.13, 5.16, 5.18, 5.28), the mean over finished seeds; {axis}; "
            f"{NO_THESIS_CURVES}.",
            figure,
            curves.loss_data(epochs, ctx.comparison, arch),
        )
    )
    return blocks


def _architecture_matrices(ctx: Context, arch: str) -> list[Block]:
    """Fig. 5.24 (ViT's mean normalised confusion matrix per tier) and fig. 5.29 (ConvNeXt's across the tiers)."""
    trials, classes = ctx.results.trials, ctx.results.classes
    if arch == "ViT":
        found = confusions.mean_normalised_set(ctx.comparison, trials, arch, classes)
        key, caption = (
            "figure_5.24_confusion_vit_mean",
            "Figure 5.24: ViT's mean normalised confusion matrix, per tier the mean over every finished ViT trial "
            "(all its configurations and seeds) of the matrix divided by each true class's images; numbers = "
            "shares",
        )
        title = "ViT: mean normalised confusion matrix per tier"
    elif arch == "ConvNeXt":
        found = confusions.across_tiers_set(ctx.comparison, trials, ctx.thesis, arch, classes)
        key, caption = (
            "figure_5.29_confusion_convnext_tiers",
            "Figure 5.29: ConvNeXt across the tiers, the confusion matrix of each tier's best ConvNeXt configuration "
            "from scratch (seeds summed; colour = share of the true class, numbers = images), the thesis's best of "
            "the tier named",
        )
        title = "ConvNeXt across the tiers"
    else:
        return []
    missing = confusions.not_in_run_text(found.not_in_run)
    if not found.panels:
        return [Paragraph(f"{caption.split(':')[0]} not drawn: no finished trial for it.{missing}")]
    caption += f"; the thesis publishes no matrices as data, so only ours are drawn.{missing}"
    return [Plot(key, caption, confusions.matrix_figure(found.panels, classes, title=title), found.data)]


def _identical_accuracy(ctx: Context) -> list[Block]:
    """Fig. 5.9: the configurations the thesis gives the same accuracy in one tier, ours side by side."""
    found = confusions.identical_accuracy_set(ctx.comparison, ctx.results.trials, ctx.thesis, ctx.results.classes)
    groups = confusions.tie_groups(ctx.thesis)
    listed = "; ".join(
        f"{tier}{' pretrained' if p else ''} {acc:.3f}: {', '.join(models)}" for tier, p, acc, models in groups
    )
    text = (
        f"The thesis's tables give the same test accuracy to several configurations of one tier ({listed}); the "
        "same accuracy need not be the same predictions. The thesis publishes no matrices as data: only ours are "
        f"drawn.{confusions.not_in_run_text(found.not_in_run)}"
    )
    blocks: list[Block] = [Heading(2, "Configurations with the same accuracy in the thesis (figure 5.9)")]
    if not found.panels:
        return [*blocks, Paragraph(text + " None of them is in this run: no figure.")]
    figure = confusions.matrix_figure(found.panels, ctx.results.classes, title="Same accuracy in the thesis")
    caption = (
        "Figure 5.9: our confusion matrices of the configurations the thesis gives one accuracy, a row per group "
        "(seeds summed; colour = share of the true class, numbers = images)"
    )
    return [*blocks, Paragraph(text), Plot("figure_5.9_identical_accuracy", caption, figure, found.data)]


def _no_baseline(ctx: Context) -> list[Block]:
    return [
        Paragraph(
            f"Results folder `{ctx.results.name}`{ctx.filters}. No baseline trial of the thesis's 22 models: nothing "
            "here compares with the thesis's chapter 5; the effects below compare the run's own trials."
        )
    ]


def _unstable(ctx: Context) -> list[Block]:
    return _unstable_section(ctx.everything, ctx.all_trials)


def _conclusions(ctx: Context) -> list[Block]:
    everything = ctx.everything
    return conclusions_section(everything.trials, everything.predictions, ctx.claims, everything.classes)


def _effects(ctx: Context) -> list[Block]:
    return _effects_section(ctx.everything)


def _all_trials(ctx: Context) -> list[Block]:
    return [Heading(2, "All trials"), trials_table(ctx.all_trials)]


def _method(ctx: Context) -> list[Block]:
    """How the numbers are made, opening with the tier sizes: table 4.1 as printed beside the sizes used and run."""
    sizes = ("train", "val", "test")
    printed_tiny = catalog.TABLE_4_1["tiny"][2]
    used_tiny = catalog.TIER_SPLITS["tiny"][2]
    tiny = [r["accuracy"] for r in catalog.published_results() if r["dataset"] == "tiny"]

    def multiples(n: int) -> int:  # published accuracies that are k/n to the printed three digits
        return sum(any(abs(round(k / n, 3) - a) < 1e-9 for k in range(n + 1)) for a in tiny)

    rows = []
    for tier, printed in catalog.TABLE_4_1.items():
        ran = ctx.trials[ctx.trials.tier == tier]
        run = [pd.to_numeric(ran.get(f"n_{s}", pd.Series(dtype=float)), errors="coerce").dropna() for s in sizes]
        rows.append(
            {
                "tier": tier,
                "images": catalog.TIERS[tier] or catalog.PBC_IMAGES,
                **{f"table_4_1_{s}": n for s, n in zip(sizes, printed, strict=True)},
                **{f"used_{s}": n for s, n in zip(sizes, catalog.TIER_SPLITS[tier], strict=True)},
                **{f"run_{s}": ", ".join(str(int(v)) for v in sorted(set(r))) for s, r in zip(sizes, run, strict=True)},
            }
        )
    data = pd.DataFrame(rows)

    def triple(r: pd.Series, prefix: str) -> str:
        return (
            " / ".join(str(r[f"{prefix}_{s}"]) for s in sizes) if all(r[f"{prefix}_{s}"] != "" for s in sizes) else "–"
        )

    table = Table(
        "table_4.1_tiers",
        "Table 4.1: the tiers, as the thesis prints them and as used",
        data,
        ["tier", "images", "table 4.1 (train / val / test)", "used: the thesis's rule", "this run"],
        [
            [r.tier, str(r.images), triple(r, "table_4_1"), triple(r, "used"), triple(r, "run")]
            for _, r in data.iterrows()
        ],
        f"Table 4.1 prints each tier's exact 5:2:3 shares ({' / '.join(map(str, catalog.TABLE_4_1['tiny']))} on "
        f"tiny). The sizes used are not those: all {multiples(used_tiny)} of the thesis's {len(tiny)} tiny-tier "
        f"accuracies are multiples of 1/{used_tiny} to their printed three digits, only {multiples(printed_tiny)} "
        f"of 1/{printed_tiny}, so its tiny test split had {used_tiny} images; the one rule that gives that and its "
        f"large tier's {' / '.join(map(str, catalog.TIER_SPLITS['large']))} takes each class's share of the tier and "
        'splits it half / a fifth / three tenths, rounded down (split_rule="thesis", the default); '
        "`--set split_rule=exact` draws table 4.1 as printed.",
    )
    return [Heading(2, "Method"), table, *_data_figures(ctx), Bullets(METHOD_NOTES)]


def _data_figures(ctx: Context) -> list[Block]:
    """Figures 4.1 (images per class), 4.2 (one original image per class) and 4.3 (the same images as the networks
    saw them, from the cache)."""
    manifest = ctx.everything.manifest
    if manifest is None or manifest.empty:
        return [Paragraph("Figures 4.1, 4.2 and 4.3 not drawn: the folder has no manifest.parquet.")]
    classes = list(ctx.everything.classes) or list(catalog.CLASSES)
    figure, data = class_distribution_figure(manifest, classes)
    blocks: list[Block] = [
        Plot(
            "figure_4.1_class_distribution",
            "Figure 4.1: images per class, of the PBC dataset (Acevedo et al. 2020) and of each tier drawn here, by "
            "split",
            figure,
            data,
        )
    ]
    sizes = pd.to_numeric(ctx.everything.trials.get("image_size", pd.Series(dtype=float)), errors="coerce").dropna()
    size = int(sizes.mode().iloc[0]) if len(sizes) else catalog.CROP
    images, block, path = cached_images(manifest, split="train", image_size=size, cache_dir=ctx.cache_dir)
    # the first training image of each class (in the cache's order), for figures 4.2 and 4.3
    positions = block.reset_index(drop=True).groupby("class_name", sort=False).head(1)  # index: the cache row
    order = [c for c in classes if c in set(positions.class_name)]
    rows = positions.index[positions.set_index("class_name").index.get_indexer(order)]
    blocks += _original_figure(ctx, block.reset_index(drop=True).loc[rows], order)
    if images is None:
        blocks.append(
            Paragraph(
                f"Figure 4.3 not drawn: no decoded cache of these training images at {size} px in {ctx.cache_dir} "
                f"({path.name}); it is on the machine that trained them (`--cache` names another folder)."
            )
        )
        return blocks
    blocks.append(
        Plot(
            "figure_4.3_preprocessed",
            f"Figure 4.3: the first training image of each class as the networks saw it: greyscale (0.2989 R + "
            f"0.587 G + 0.114 B), centre crop 352x352{f', resized to {size}x{size}' if size < catalog.CROP else ''}, "
            "read from the decode-once cache the trials read (before the normalisation, a linear map of these grey "
            "levels)",
            preprocessed_figure([np.asarray(images[i]) for i in rows], order, image_size=size),
        )
    )
    return blocks


def _original_figure(ctx: Context, rows: pd.DataFrame, order: list[str]) -> list[Block]:
    """Figure 4.2 from the original files, where this machine has them (the same content as the manifest's)."""
    originals, source = original_images(rows, ctx.everything.runs)
    found = [(image, name) for image, name in zip(originals, order, strict=True) if image is not None]
    if not found:
        places = ", ".join(f"`{p}`" for p in data_sources(ctx.everything.runs))
        return [
            Paragraph(
                f"Figure 4.2 not drawn: the original images of figure 4.3 are not in {places} (the data the run "
                "read, as run.json names it, and the embedded sample), or not with the content the manifest hashed."
            )
        ]
    lacking = [name for image, name in zip(originals, order, strict=True) if image is None]
    return [
        Plot(
            "figure_4.2_original",
            "Figure 4.2: the images of figure 4.3 as the dataset stores them (RGB, full size; read from "
            f"`{source}`, each checked against the manifest's sha256); dashed: the 352x352 centre crop that "
            "preprocessing keeps" + (f"; not found: {', '.join(lacking)}" if lacking else ""),
            original_figure([image for image, _ in found], [name for _, name in found]),
            rows.assign(found=[image is not None for image in originals])[["image", "sha256", "class_name", "found"]],
        )
    ]


Section = Callable[[Context], list[Block]]
# the document, in order; a run with no baseline trial of the thesis's models has nothing to compare with chapter 5
SECTIONS: tuple[Section, ...] = (
    _opening,
    _leaderboard,
    _environment,
    _overview,
    _unstable,
    _tiers,
    _identical_accuracy,
    _architectures,
    _conclusions,
    _effects,
    _all_trials,
    _method,
)
SECTIONS_WITHOUT_BASELINE: tuple[Section, ...] = (_no_baseline, _environment, _unstable, _effects, _all_trials, _method)


def build_report(results: Results, thesis: Thesis, **asked) -> Report:
    """The whole document: its sections in order, each a function of the same context (`asked`: how the report
    was asked for, `context`'s options). The thesis's configurations that this run neither ran nor planned are left
    out, unless `all_configurations` (then listed as missing)."""
    ctx = context(results, thesis, **asked)
    sections = SECTIONS if len(ctx.trials) else SECTIONS_WITHOUT_BASELINE
    return Report(f"raybench report: {ctx.results.name}", [block for section in sections for block in section(ctx)])


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
    if is_flat(epochs, "val_loss"):
        blocks.append(Paragraph(f"Validation loss, {where}: one epoch per trial, no curve to draw."))
    else:
        blocks.append(
            Plot(
                f"val_loss_{slug}",
                f"Validation loss per epoch of the best configuration of each architecture, {where} (cf. thesis "
                "figs. 5.1, 5.4, 5.6); dots mark the tested epoch (last improvement, fig. 4.5); a first-epoch spike "
                "is cut off at the top edge, its value written (linear axis, see Method).",
                curve_figure(
                    epochs, best, value="val_loss", title=f"Validation loss, {where}", ylabel="validation loss"
                ),
                epochs,
            )
        )
    blocks += [
        Plot(
            f"confusion_{slug}",
            f"Confusion matrices of the best configuration of each architecture, {where} "
            f"(cf. thesis figs. 5.2, 5.5, 5.8{TINY_CONFUSION if tier == 'tiny' else ''}); colour = share "
            "of the true class, numbers = images.",
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
    ]
    if is_flat(epochs, "lr"):
        rates = ", ".join(f"{v:g}" for v in sorted(set(epochs.lr.dropna())))
        blocks.append(
            Paragraph(
                f"Learning rate, {where}: {rates or '–'} in every epoch of these trials (ReduceLROnPlateau, §4.3, "
                "never lowered it): no figure."
            )
        )
    else:
        blocks.append(
            Plot(
                f"learning_rate_{slug}",
                f"Learning rate per epoch (ReduceLROnPlateau, §4.3; cf. thesis fig. 5.31), {where}.",
                curve_figure(
                    epochs,
                    best,
                    value="lr",
                    title=f"Learning rate, {where}",
                    ylabel="learning rate",
                    log=True,
                    steps=True,
                ),
            )
        )
    return blocks


TINY_CONFUSION = " and 5.12, the tiny tier's"


def is_flat(epochs: pd.DataFrame, value: str) -> bool:
    """True when no trial's `value` changes from epoch to epoch: a figure of it would be flat lines (or dots)."""
    if epochs.empty:
        return True
    return bool((epochs.groupby("trial_id")[value].nunique(dropna=True) <= 1).all())
