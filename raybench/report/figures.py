"""The report's figures (cf. thesis chapter 5): matplotlib Figures drawn from DataFrames, not yet saved."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator
from matplotlib.transforms import Bbox

from raybench import catalog
from raybench.report.formatting import config_label, is_missing
from raybench.report.inputs import Thesis, model_rank, sort_rows, tier_rank
from raybench.report.statistics import seed_band, wilson_interval

ARCHITECTURE_COLOR = {
    "LeNet-5": "#7f7f7f",
    "ResNet": "#1f77b4",
    "MobileNetV3": "#2ca02c",
    "ConvNeXt": "#d62728",
    "ViT": "#9467bd",
    "MLP-Mixer": "#ff7f0e",
}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer, to measure labels before the figure is saved
    return fig


# where a label may go around its point (offset in points, horizontal alignment), tried in this order: beside it,
# then further out (with a leader line) where its neighbours leave no room
AROUND = (
    (5, 3, "left"), (5, -10, "left"), (-5, 3, "right"), (-5, -10, "right"), (0, 7, "center"), (0, -15, "center"),
    *((round(d * dx), round(d * dy), "left" if dx > 0 else "right")
      for d in (24, 40, 60, 85) for dx, dy in ((-1, -0.6), (1, -0.6), (-1, 0.3), (1, 0.3), (-0.4, -1), (0.4, -1)))
)  # fmt: skip
LEADER = 10  # points: a label further from its point than this gets a line to it


def place_labels(ax, items, *, candidates=AROUND, fontsize: float = 7, avoid=(), leader: float | None = LEADER) -> list:
    """Write each (x, y, text, colour) at the first candidate offset where it overlaps no label written before,
    none of the `avoid` points (x, y in data) and stays inside the axes; a label with no free place is left
    out (the figure's data says which it is); one further than `leader` points gets a line to its point. Returns
    the labels written. The figure's layout is settled first,
    and labels take no part in it, so that what was measured is what is saved."""
    fig = ax.figure
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    r = 3.5 * fig.dpi / 72  # a marker's half width in pixels
    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in ax.transData.transform(list(avoid))]
    frame = ax.get_window_extent(renderer)
    placed = []
    for x, y, text, color in items:
        own = ax.transData.transform((x, y))
        for dx, dy, ha in candidates:
            far = leader is not None and math.hypot(dx, dy) > leader
            line = {"arrowstyle": "-", "color": color, "lw": 0.6, "alpha": 0.7} if far else None
            label = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=fontsize,
                color=color,
                ha=ha,
                va="center" if far else "baseline",
                arrowprops=line,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.75},
            )
            label.set_in_layout(False)
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)  # the words, without the leader line
            mine = [b for b in taken if not b.contains(*own)]  # its own point's box may touch it
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(b) for b in mine):
                taken.append(box)
                placed.append(label)
                break
            label.remove()
    return placed


def _color(architecture: str) -> str:
    return ARCHITECTURE_COLOR.get(architecture, "black")


# Tukey's far-out fence: drawn values above Q3 + 3 IQR are spikes (a first epoch, a diverging one), not a curve's shape.
FENCE = 3.0


def _clip_spikes(ax) -> list[tuple]:
    """Cut a linear y axis above the far-out fence when the spikes would squash the other values into less than
    half of its height; each cut-off point is drawn on the top edge. Returns the labels to write beside them
    (x, y, value, colour; none when nothing was cut).

    Linear rather than log: early stopping asks for an absolute drop of 0.1 (§4.4), which a linear axis shows
    at the same height everywhere, and the rest of the axis then goes to the epochs that decide the tested one.
    """
    lines = [(line, np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)) for line in ax.lines]
    if not lines:
        return []
    values = np.concatenate([y for _, _, y in lines])
    finite = values[np.isfinite(values)]
    if len(finite) < 4:
        return []
    q1, q3 = np.percentile(finite, [25, 75])
    fence = q3 + FENCE * max(q3 - q1, 0.05 * abs(q3))
    kept = finite[finite <= fence]
    spread = kept.max() - kept.min()
    if np.isfinite(values).all() and finite.max() - kept.max() <= max(spread, 1e-12):
        return []  # no spike, or one that leaves the other values most of the height
    pad = 0.08 * (spread or abs(kept.max()) or 1.0)
    edge = kept.max() + pad
    ax.set_ylim(kept.min() - pad, edge)
    cuts = []
    for line, x, y in lines:
        cut = np.isinf(y) | (y > fence)
        for xi, yi in zip(x[cut], y[cut], strict=True):
            ax.plot([xi], [edge], marker="^", color=line.get_color(), markersize=7, linestyle="none", clip_on=False)
            cuts.append((xi, edge, f"{yi:.3g}", line.get_color()))
    ax.plot([], [], marker="^", color="black", linestyle="none", label="beyond the axis (value written)")
    return cuts


# below a cut-off point on the top edge, stacked downwards where several share an epoch
BELOW = tuple((4, -10 - 9 * k, "left") for k in range(6)) + tuple((-4, -10 - 9 * k, "right") for k in range(6))


def _legend(ax, *, outside: bool = False, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles and outside:
        ax.figure.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    elif handles:
        ax.legend(fontsize=8, frameon=False, **kw)


def curve_figure(
    epochs: pd.DataFrame,
    best: pd.DataFrame,
    *,
    value: str,
    title: str,
    ylabel: str,
    log: bool = False,
    steps: bool = False,
) -> Figure:
    """One line per configuration over epochs, tested epochs marked.

    Several seeds: their mean with a shaded 95% t-interval, or with `steps` (a schedule, where a mean of
    step functions would invent steps) one line per seed. Rows may carry their own `label`. Without `log`
    the axis is linear and cut above spikes (`_clip_spikes`).
    """
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    styles = ("-", "--", "-.", ":")
    for i, row in enumerate(best.itertuples()):
        own = epochs[epochs.trial_id.isin(list(row.trial_ids))]
        if own.empty:
            continue
        color = _color(row.architecture)
        seeds = f" ({row.seeds_ok} seeds)" if row.seeds_ok > 1 else ""
        label = getattr(row, "label", None) or f"{row.architecture}: {config_label(row.model, row.pretrained)}{seeds}"
        if steps:
            for k, (_, seed) in enumerate(own.groupby("trial_id", sort=False)):
                ax.plot(
                    seed.epoch,
                    seed[value],
                    color=color,
                    label=None if k else label,
                    linestyle=styles[i % 4],
                    drawstyle="steps-post",
                    linewidth=1.6,
                )
            continue
        band = seed_band(own, by="epoch", value=value)
        same = int((best.architecture.iloc[:i] == row.architecture).sum())  # ties and trials share a colour
        ax.plot(band.epoch, band["mean"], color=color, label=label, linewidth=1.6, linestyle=styles[same % 4])
        if (band["count"] > 1).any():
            ax.fill_between(band.epoch, band.low, band.high, color=color, alpha=0.18, linewidth=0)
        # fig. 4.5: the tested checkpoint is the last improvement
        tested = own[own.improved.astype(bool)].groupby("trial_id").epoch.max()
        points = own.set_index(["trial_id", "epoch"])[value]
        ys = [points.get((t, e), math.nan) for t, e in tested.items()]
        ax.scatter(tested.to_numpy(), ys, color=color, marker="o", s=28, zorder=3, edgecolor="white")
    cuts = []
    if log:
        ax.set_yscale("log")
    else:
        cuts = _clip_spikes(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    _legend(ax, loc="best")
    if cuts:  # highest first: each value below its triangle, the next one lower where they would overlap
        place_labels(ax, sorted(cuts, key=lambda c: (c[0], -float(c[2]))), candidates=BELOW, leader=None)
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
        matrix = sum(np.asarray([list(r) for r in by_id.confusion_matrix[t]], dtype=np.int64) for t in row.trial_ids)
        share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (y, x), count in np.ndenumerate(matrix):
            if count:
                color = "white" if share[y, x] > 0.6 else "black"
                ax.text(x, y, str(count), ha="center", va="center", fontsize=7, color=color)
        ticks = range(len(classes))
        ax.set_xticks(ticks, classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(ticks, classes, fontsize=7)
        seeds = f", {row.seeds_ok} seeds summed" if row.seeds_ok > 1 else ""
        label = getattr(row, "label", None) or f"{row.architecture}: {config_label(row.model, row.pretrained)}"
        ax.set_title(f"{label}\naccuracy {row.accuracy:.3f}{seeds}", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    return fig


def map_figure(curves: pd.DataFrame, best: pd.DataFrame, maps: pd.DataFrame, *, title: str) -> Figure:
    """mAP@N for N = 1..test size of each architecture's best configurations; the thesis's mAP@5/@100 as crosses.

    `maps` is the mAP table's data: the crosses are its thesis's best configurations of the architectures drawn.
    """
    fig = _figure(7.5, 4.2)
    ax = fig.add_subplot()
    for row in best.itertuples():
        band = seed_band(curves[curves.trial_id.isin(list(row.trial_ids))], by="n", value="map")
        if band.empty:
            continue
        color = _color(row.architecture)
        label = f"{row.architecture}: {config_label(row.model, row.pretrained)}"
        ax.plot(band.n, band["mean"], color=color, linewidth=1.5, label=label)
        if (band["count"] > 1).any():
            ax.fill_between(band.n, band.low, band.high, color=color, alpha=0.18, linewidth=0)
    theirs = maps[maps.architecture.isin(set(best.architecture)) & maps.thesis_best.astype(bool)] if len(maps) else maps
    for r in theirs.itertuples():
        if not is_missing(r.thesis_map_at_5):
            ax.scatter(
                [5, 100], [r.thesis_map_at_5, r.thesis_map_at_100], marker="x", color=_color(r.architecture), s=45
            )
    ax.scatter([], [], marker="x", color="black", label="thesis: mAP@5, mAP@100 of its best")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("N (images retrieved per class)")
    ax.set_ylabel("mAP@N")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, loc="lower left")
    return fig


SIZE_MEASURES = {  # what size_figure can draw: ours, the thesis's column, axis label, log axis
    "accuracy": ("accuracy", "test_accuracy", "test accuracy", False),
    "seconds_per_epoch": ("seconds_per_epoch", "seconds_per_epoch", "seconds per epoch", True),
}


def size_figure(comparison: pd.DataFrame, thesis: Thesis, architecture: str, *, value: str = "accuracy") -> Figure:
    """Test accuracy (or seconds per epoch) against training-set size per configuration: ours solid, the thesis's
    dashed; accuracy with 95% t-interval bars over seeds."""
    ours_column, thesis_column, ylabel, log = SIZE_MEASURES[value]
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    rows = comparison[(comparison.architecture == architecture) & ~comparison.pretrained]
    ours = rows[rows.seeds_ok > 0]
    # the thesis's lines of this run's configurations (with --all-configurations, of every one)
    published = thesis.results[~thesis.results.pretrained & thesis.results.model.isin(set(rows.model))]
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]
    markers = ["o", "s", "D", "^", "v", "P", "X"]
    dashes = [(5, 2), (2, 2), (6, 2, 1, 2), (1, 1), (8, 3), (4, 1, 1, 1, 1, 1), (3, 3)]
    names = sorted(set(ours.model) | set(published.model), key=model_rank)
    for i, model in enumerate(names):
        color, marker = palette[i % len(palette)], markers[i % len(markers)]
        dodge = 1 + 0.04 * (i - (len(names) - 1) / 2)  # side by side, so that bars and equal numbers stay apart
        mine = ours[ours.model == model].assign(n=lambda f: pd.to_numeric(f.n_train)).sort_values("n")
        if len(mine):
            err = None
            if value == "accuracy":
                err = np.vstack([mine.accuracy - mine.accuracy_low, mine.accuracy_high - mine.accuracy]).astype(float)
                err = np.nan_to_num(err)
            ax.errorbar(
                mine.n * dodge,
                pd.to_numeric(mine[ours_column]),
                yerr=err,
                color=color,
                marker=marker,
                capsize=2,
                label=model,
                elinewidth=0.8,
                ecolor=(*to_rgb(color), 0.5),
            )
        theirs = published[published.model == model]
        theirs = theirs.assign(n=theirs.tier.map(lambda t: catalog.TIER_SPLITS[t][0])).sort_values("n")
        if len(theirs):
            # each model its own dash pattern and hollow marker: the thesis's MobileNets nearly coincide
            ax.plot(
                theirs.n * dodge,
                theirs[thesis_column],
                color=color,
                dashes=dashes[i % len(dashes)],
                marker=marker,
                markersize=4,
                markerfacecolor="white",
                alpha=0.7,
                label=None if len(mine) else f"{model} (thesis only)",
            )
    ax.plot([], [], color="black", linestyle="--", marker="o", markerfacecolor="white", label="thesis (dashed, hollow)")
    ax.set_xscale("log")
    ticks = {n: f"{n}\n{t}" for t, (n, _, _) in catalog.TIER_SPLITS.items()}
    for r in ours.itertuples():  # our own tier sizes, where they differ from the thesis's
        ticks.setdefault(int(r.n_train), f"{int(r.n_train)}\n{r.tier} (ours)")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
    if log:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0, 1)
    ax.set_xlabel("training images")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{architecture}: {ylabel} against training-set size", fontsize=11)
    ax.grid(alpha=0.3, which="both" if log else "major")
    _legend(ax, loc="best" if log else "lower right")
    return fig


def heatmap_figure(comparison: pd.DataFrame) -> Figure:
    """The whole grid at a glance: accuracy per configuration x tier, and its difference from the thesis."""
    ordered = sort_rows(comparison.assign(tier="", seed=0))[["model", "pretrained"]]
    labels = list(dict.fromkeys(config_label(m, p) for m, p in ordered.itertuples(index=False)))
    tiers = sorted(set(comparison.tier), key=tier_rank)
    acc = np.full((len(labels), len(tiers)), np.nan)
    diff = acc.copy()
    text = [["" for _ in tiers] for _ in labels]
    for r in comparison.itertuples():
        i, j = labels.index(config_label(r.model, r.pretrained)), tiers.index(r.tier)
        if r.seeds_ok > 0:
            acc[i, j], diff[i, j] = r.accuracy, r.accuracy_diff
            text[i][j] = f"{r.accuracy:.2f}" + ("*" if r.status == "partial" else "")
        else:
            text[i][j] = r.status
    fig = _figure(2.6 + 2 * (0.9 * len(tiers) + 0.6), 2.0 + 0.28 * len(labels))
    panels = ((acc, "viridis", 0, 1, "test accuracy"), (diff, "RdBu", -0.5, 0.5, "ours − thesis"))
    for k, (values, cmap, vmin, vmax, name) in enumerate(panels):
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
        fraction = 0.04 if len(labels) > 10 else 0.1
        bar = fig.colorbar(image, ax=ax, orientation="horizontal", fraction=fraction, pad=0.02, aspect=15)
        bar.set_ticks([vmin, (vmin + vmax) / 2, vmax])
    fig.suptitle("Accuracy, configuration × tier\n(grey: no result; *: some seeds failed or missing)", fontsize=10)
    return fig


SCATTER_LABELS = 18  # labels tried on the accuracy scatter; more would not be read


def scatter_points(comparison: pd.DataFrame) -> pd.DataFrame:
    """The accuracy scatter's points with a short label each, in the order they are labelled: the best of each tier,
    then those outside the thesis's interval, then the rest, each furthest from the thesis's number first."""
    both = comparison[(comparison.seeds_ok > 0) & comparison.thesis_accuracy.notna()].copy()
    if both.empty:
        return both.assign(label=pd.Series(dtype=str), priority=pd.Series(dtype=int))
    best = both.accuracy == both.groupby(["tier", "pretrained"]).accuracy.transform("max")
    outside = ~both.inside_thesis_interval.fillna(True).astype(bool)
    both["label"] = [
        f"{m} {t}{' pretr.' if p else ''}" for m, t, p in zip(both.model, both.tier, both.pretrained, strict=True)
    ]
    order = pd.DataFrame({"best": ~best, "outside": ~outside, "far": -both.accuracy_diff.abs()}, index=both.index)
    ranked = both.loc[order.sort_values(["best", "outside", "far"], kind="stable").index]
    return ranked.assign(priority=range(1, len(ranked) + 1)).reset_index(drop=True)


def accuracy_scatter(comparison: pd.DataFrame) -> Figure:
    """Our accuracy against the thesis's, with the 95% Wilson band of the thesis's number at our test size; the
    best of each tier and the points furthest from the thesis's are labelled, as many as can be read (a larger
    figure for a larger grid, so that more can)."""
    crowded = int((comparison.seeds_ok > 0).sum()) > 25
    fig = _figure(11.0, 7.6) if crowded else _figure(7.6, 5.2)
    ax = fig.add_subplot()
    both = scatter_points(comparison)
    p = np.linspace(0, 1, 201)
    for n in sorted(set(both.interval_n.dropna())):
        low, high = zip(*(wilson_interval(x, n) for x in p), strict=True)
        ax.fill_between(p, low, high, color="grey", alpha=0.15, linewidth=0)
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8)
    markers = {"large": "o", "medium": "s", "small": "^", "tiny": "D"}
    for r in both.itertuples():
        err = None if is_missing(r.accuracy_low) else [[r.accuracy - r.accuracy_low], [r.accuracy_high - r.accuracy]]
        color = _color(r.architecture)
        ax.errorbar(
            r.thesis_accuracy,
            r.accuracy,
            yerr=err,
            marker=markers.get(r.tier, "o"),
            linestyle="none",
            markerfacecolor="white" if r.pretrained else color,
            color=color,
            capsize=2,
            markersize=6,
            elinewidth=0.8,
            ecolor=(*to_rgb(color), 0.45),
        )
    for arch, color in ARCHITECTURE_COLOR.items():
        if arch in set(both.architecture):
            ax.scatter([], [], color=color, label=arch)
    for tier, marker in markers.items():
        if tier in set(both.tier):
            ax.scatter([], [], color="black", marker=marker, facecolor="none", label=f"tier {tier}")
    ax.fill_between([], [], [], color="grey", alpha=0.15, label="95% Wilson band\nof the thesis's accuracy")
    values = pd.concat([both.thesis_accuracy, both.accuracy_low.fillna(both.accuracy)]).astype(float)
    low = max(0.0, math.floor((values.min() - 0.05) * 10) / 10) if len(values) else 0.0  # room for the points
    ax.set_xlim(low, 1)
    ax.set_ylim(low, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("thesis's test accuracy")
    ax.set_ylabel("our test accuracy")
    ax.set_title(
        "Test accuracy: ours against the thesis's\n(open markers: pretrained; bars: 95% t-interval over seeds)",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    _legend(ax, outside=True)
    points = list(zip(both.thesis_accuracy, both.accuracy, strict=True))
    wanted = both.head(SCATTER_LABELS)
    items = zip(wanted.thesis_accuracy, wanted.accuracy, wanted.label, wanted.architecture.map(_color), strict=True)
    place_labels(ax, list(items), avoid=points)
    return fig


def speed_scatter(comparison: pd.DataFrame) -> Figure:
    """Our seconds per epoch against the thesis's on its RTX 3080, log-log."""
    fig = _figure(7.2, 5.2)
    ax = fig.add_subplot()
    timed = (comparison.seeds_ok > 0) & comparison.thesis_seconds_per_epoch.notna() & (comparison.seconds_per_epoch > 0)
    both = comparison[timed]
    for arch, rows in both.groupby("architecture", sort=False):
        ax.scatter(rows.thesis_seconds_per_epoch, rows.seconds_per_epoch, color=_color(arch), label=arch, s=22)
        if len(both) <= 25:
            for r in rows.itertuples():
                ax.annotate(
                    f"{config_label(r.model, r.pretrained)} {r.tier}",
                    (r.thesis_seconds_per_epoch, r.seconds_per_epoch),
                    fontsize=7,
                    xytext=(4, 2),
                    textcoords="offset points",
                )
    values = pd.concat([both.thesis_seconds_per_epoch, both.seconds_per_epoch]).astype(float)
    if len(values):
        lo, hi = values.min() / 2, values.max() * 2
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="same speed")
    ax.set_xscale("log")
    ax.set_yscale("log")
    devices = ", ".join(sorted({d for ds in both.device for d in str(ds).split(", ") if d}))
    ax.set_xlabel(f"thesis: s/epoch on one {catalog.THESIS_DEVICE}")
    ax.set_ylabel(f"ours: s/epoch on {devices}")
    ax.set_title("Seconds per epoch, ours against the thesis's", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, outside=True)
    return fig


def ratio_figure(ratios: pd.DataFrame, *, title: str) -> Figure:
    """Table 5.16 drawn: pretrained / from scratch of accuracy, epochs and times per model, ours beside the thesis's."""
    measures = (
        ("accuracy", "accuracy"),
        ("epochs", "epochs"),
        ("seconds_per_epoch", "seconds per epoch"),
        ("train_seconds", "training time"),
    )
    models = list(ratios.model)
    fig = _figure(11.0, 1.6 + 0.32 * max(len(models), 1))
    fig.suptitle(title, fontsize=11)
    y = np.arange(len(models))
    for k, (measure, name) in enumerate(measures):
        ax = fig.add_subplot(1, len(measures), k + 1)
        ours = pd.to_numeric(ratios[f"{measure}_ratio"], errors="coerce").to_numpy(float)
        theirs = pd.to_numeric(ratios[f"thesis_{measure}_ratio"], errors="coerce").to_numpy(float)
        colors = [_color(a) for a in ratios.architecture]
        # bars start at ×1 (no change), leftwards for less, on a log axis where ×2 and ×0.5 are as long
        ax.barh(y - 0.2, np.nan_to_num(ours - 1), left=1, height=0.38, color=colors, label="ours")
        ax.barh(y + 0.2, np.nan_to_num(theirs - 1), left=1, height=0.38, color="none", edgecolor=colors, hatch="///")
        ax.barh([], [], color="none", edgecolor="black", hatch="///", label="thesis")
        ax.axvline(1, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"×{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
        ax.set_yticks(y, models if k == 0 else [""] * len(models), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{name}\npretrained / from scratch", fontsize=9)
        ax.grid(alpha=0.3, axis="x", which="both")
        if k == 0:
            _legend(ax, loc="lower right")
    return fig


SPLIT_COLOR = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}


def class_distribution_figure(manifest: pd.DataFrame, classes: Sequence[str]) -> tuple[Figure, pd.DataFrame]:
    """Fig. 4.1: images per class, of the PBC dataset (Acevedo et al.) and of each tier this run drew, split by split
    (its own scale per panel: the tiers span 400 to 17,092 images)."""
    counts = manifest.groupby(["tier", "split", "class_name"]).size().rename("images").reset_index()
    dataset = pd.DataFrame(
        {"tier": "PBC dataset", "split": "all", "class_name": list(catalog.CLASSES), "images": catalog.PBC_CLASS_COUNTS}
    )
    data = pd.concat([dataset, counts], ignore_index=True)
    tiers = ["PBC dataset", *sorted(counts.tier.unique(), key=tier_rank)]
    fig = _figure(3.3 * len(tiers), 3.6)
    axes = fig.subplots(1, len(tiers), squeeze=False)[0]
    x = np.arange(len(classes))
    for ax, tier in zip(axes, tiers, strict=True):
        rows = data[data.tier == tier]
        bottom = np.zeros(len(classes))
        for split in [s for s in (*catalog.SPLITS, "all") if s in set(rows.split)]:  # train, val, test from below
            n = rows[rows.split == split].set_index("class_name").images.reindex(classes).fillna(0).to_numpy()
            ax.bar(x, n, bottom=bottom, color=SPLIT_COLOR.get(split, "#7f7f7f"), label=split)
            bottom += n
        ax.set_xticks(x, classes, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{tier} ({int(bottom.sum())} images)", fontsize=9)
        ax.set_ylabel("images")
    _legend(axes[-1])
    return fig, data


def preprocessed_figure(images: Sequence[np.ndarray], labels: Sequence[str], *, image_size: int) -> Figure:
    """Fig. 4.3: one image per class as the networks saw it (greyscale, 352x352 centre crop, resized to the run's
    size), drawn from the decode-once cache; normalisation is a linear map of these grey levels."""
    cols = min(4, len(images))
    rows = math.ceil(len(images) / cols)
    fig = _figure(2.2 * cols, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, label in zip(axes, images, labels, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{label} ({image_size} px)", fontsize=9)
    return fig


def original_figure(images: Sequence[np.ndarray], labels: Sequence[str]) -> Figure:
    """Fig. 4.2: one image per class as the dataset stores it (RGB, full size), the 352x352 centre crop that
    preprocessing keeps outlined (dashed)."""
    cols = min(4, len(images))
    rows = math.ceil(len(images) / cols)
    fig = _figure(2.3 * cols, 2.5 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, label in zip(axes, images, labels, strict=False):
        height, width = image.shape[:2]
        ax.imshow(image, interpolation="nearest")
        top, left = round((height - catalog.CROP) / 2.0), round((width - catalog.CROP) / 2.0)  # as centre_crop
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), catalog.CROP, catalog.CROP, fill=False, edgecolor="white",
                               linestyle="--", linewidth=0.8))  # fmt: skip
        ax.set_title(f"{label} ({width}x{height})", fontsize=9)
    return fig
