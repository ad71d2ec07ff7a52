"""The thesis's sets of confusion matrices (chapter 5), ours for the same configurations and tiers:

- fig. 5.9: the configurations its tables give the same test accuracy in one tier (found in its published results),
  side by side, a row per such group: the same accuracy need not be the same predictions;
- fig. 5.24: ViT's mean normalised matrix, the mean over every ViT trial of a tier of its row-normalised matrix;
- fig. 5.29: ConvNeXt across the tiers, the best ConvNeXt configuration of each tier.

The thesis publishes these matrices as pictures only (its CSVs hold accuracies and mAP), so only ours are drawn,
and a configuration this run did not train is named "not in this run", never drawn empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from raybench.report.figures import _figure
from raybench.report.formatting import config_label
from raybench.report.inputs import ARCHITECTURE_OF, Thesis, model_rank, tier_rank


@dataclasses.dataclass(frozen=True)
class Panel:
    """One matrix of a set: rows true, columns predicted; `values` counts (summed over seeds) or shares."""

    title: str
    values: np.ndarray
    shares: bool = False  # values are already shares of the true class (a mean of normalised matrices)
    row: int = 0  # the row of the figure it goes in (a group of fig. 5.9)


@dataclasses.dataclass(frozen=True)
class MatrixSet:
    panels: list[Panel]
    not_in_run: list[str]  # the set's configurations this run has no finished trial of
    data: pd.DataFrame  # every cell drawn: panel, true, predicted, value


def summed(trials: pd.DataFrame, ids: Sequence[str]) -> np.ndarray:
    """The confusion matrices of `ids` summed (rows true, columns predicted)."""
    by_id = trials.set_index("trial_id").confusion_matrix
    return sum(np.asarray([list(r) for r in by_id[t]], dtype=np.int64) for t in ids)


def normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its true class's images (a class without test images stays 0)."""
    return matrix / np.maximum(matrix.sum(1, keepdims=True), 1)


def _cells(panels: list[Panel], classes: Sequence[str]) -> pd.DataFrame:
    rows = [
        {"panel": p.title.replace("\n", " "), "true": classes[i], "predicted": classes[j], "value": float(v)}
        for p in panels
        for (i, j), v in np.ndenumerate(p.values)
    ]
    return pd.DataFrame(rows, columns=["panel", "true", "predicted", "value"])


def _finished(comparison: pd.DataFrame) -> pd.DataFrame:
    return comparison[comparison.seeds_ok > 0]


def _ours(row) -> str:
    seeds = f", {row.seeds_ok} seeds" if row.seeds_ok > 1 else ""
    return f"ours {row.accuracy:.3f}{seeds}"


def tie_groups(thesis: Thesis) -> list[tuple[str, bool, float, list[str]]]:
    """(tier, pretrained, accuracy, models) of every group of configurations the thesis's tables give the same test
    accuracy in one tier, in its order (largest tier first, from scratch before pretrained)."""
    published = thesis.results
    out = []
    for (tier, pretrained, accuracy), rows in published.groupby(["tier", "pretrained", "test_accuracy"]):
        if len(rows) > 1:
            out.append((tier, bool(pretrained), float(accuracy), sorted(rows.model, key=model_rank)))
    return sorted(out, key=lambda g: (g[1], tier_rank(g[0]), -g[2]))


def identical_accuracy_set(comparison: pd.DataFrame, trials: pd.DataFrame, thesis: Thesis, classes) -> MatrixSet:
    """Fig. 5.9: ours for every configuration of each group the thesis gives one accuracy, a row per group."""
    done = _finished(comparison)
    panels, missing, row = [], [], 0
    for tier, pretrained, accuracy, models in tie_groups(thesis):
        drew = False
        for model in models:
            label = f"{config_label(model, pretrained)} {tier}"
            ours = done[(done.model == model) & (done.tier == tier) & (done.pretrained == pretrained)]
            if ours.empty:
                missing.append(f"{label} (thesis {accuracy:.3f})")
                continue
            r = next(ours.itertuples())
            title = f"{label}\n{_ours(r)}; thesis {accuracy:.3f}"
            panels.append(Panel(title, summed(trials, r.trial_ids), row=row))
            drew = True
        row += drew
    return MatrixSet(panels, missing, _cells(panels, classes))


def mean_normalised_set(comparison: pd.DataFrame, trials: pd.DataFrame, architecture: str, classes) -> MatrixSet:
    """Fig. 5.24 (for ViT): per tier, the mean of the row-normalised matrices of every finished trial of the
    architecture's configurations."""
    done = _finished(comparison[comparison.architecture == architecture])
    panels = []
    order = sorted(done.groupby(["tier", "pretrained"]), key=lambda kv: (kv[0][1], tier_rank(kv[0][0])))
    for (tier, pretrained), rows in order:
        ids = [t for ts in rows.trial_ids for t in ts]
        mean = np.mean([normalised(summed(trials, [t])) for t in ids], axis=0)
        configs = ", ".join(config_label(m, p) for m, p in zip(rows.model, rows.pretrained, strict=True))
        where = f"tier {tier}{', pretrained' if pretrained else ''}"
        panels.append(Panel(f"{where}: mean of {len(ids)} trial(s)\n({configs})", mean, shares=True))
    return MatrixSet(panels, [], _cells(panels, classes))


def across_tiers_set(comparison: pd.DataFrame, trials: pd.DataFrame, thesis: Thesis, architecture: str, classes):
    """Fig. 5.29 (for ConvNeXt): the best configuration of the architecture in each tier this run trained it on (from
    scratch), beside the name of the thesis's best there; the thesis's tiers the run lacks are "not in this run"."""
    done = _finished(comparison[(comparison.architecture == architecture) & ~comparison.pretrained.astype(bool)])
    theirs_all = thesis.results[~thesis.results.pretrained.astype(bool)]
    published = theirs_all[theirs_all.model.map(ARCHITECTURE_OF) == architecture]
    panels, missing = [], []
    tiers = sorted(set(done.tier) | set(published.tier), key=tier_rank)
    for tier in tiers:
        theirs = published[published.tier == tier].sort_values("test_accuracy", ascending=False, kind="stable")
        best_theirs = f"thesis's best: {theirs.model.iloc[0]} {theirs.test_accuracy.iloc[0]:.3f}" if len(theirs) else ""
        ours = done[done.tier == tier].sort_values("accuracy", ascending=False, kind="stable")
        if ours.empty:
            missing.append(f"tier {tier}" + (f" ({best_theirs})" if best_theirs else ""))
            continue
        r = next(ours.itertuples())
        title = f"tier {tier}: {config_label(r.model, False)}, {_ours(r)}" + (f"\n{best_theirs}" if best_theirs else "")
        panels.append(Panel(title, summed(trials, r.trial_ids)))
    return MatrixSet(panels, missing, _cells(panels, classes))


def matrix_figure(panels: list[Panel], classes: Sequence[str], *, title: str, cols: int = 3) -> Figure:
    """The panels in rows (each panel's `row`; a new row after `cols` panels), coloured by the share of each true
    class, written as images (counts) or shares."""
    rows_of = {}
    for p in panels:
        rows_of.setdefault(p.row, []).append(p)
    lines = [chunk[i : i + cols] for chunk in rows_of.values() for i in range(0, len(chunk), cols)]
    width = min(cols, max((len(line) for line in lines), default=1))
    fig = _figure(4.1 * width, 3.9 * max(len(lines), 1) + 0.4)
    fig.suptitle(title, fontsize=12)
    ticks = range(len(classes))
    for r, line in enumerate(lines):
        for c, panel in enumerate(line):
            ax = fig.add_subplot(len(lines), width, r * width + c + 1)
            share = panel.values if panel.shares else normalised(panel.values)
            ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
            for (y, x), v in np.ndenumerate(panel.values):
                if v and not (panel.shares and v < 0.005):
                    text = f"{v:.2f}" if panel.shares else str(int(v))
                    colour = "white" if share[y, x] > 0.6 else "black"
                    ax.text(x, y, text, ha="center", va="center", fontsize=6 if panel.shares else 7, color=colour)
            ax.set_xticks(ticks, classes, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(ticks, classes, fontsize=7)
            ax.set_title(panel.title, fontsize=8)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true", fontsize=8)
    return fig


def not_in_run_text(names: Sequence[str]) -> str:
    return f" Not in this run: {'; '.join(names)}." if names else ""
