"""The thesis's per-architecture curves (chapter 5): validation accuracy per epoch of every trial and train and
validation loss per epoch of every configuration, a panel per tier, drawn from the run's epochs table.

The thesis publishes these curves as pictures only (its CSVs hold one row per configuration), so only ours are
drawn; the captions say so.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from raybench.report.figures import _figure
from raybench.report.formatting import config_label
from raybench.report.inputs import model_rank, tier_rank
from raybench.report.statistics import seed_band

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
CHANCE = 1 / 8
# a panel whose losses span more than this factor is drawn on a log axis (cf. thesis fig. 5.13): a linear one would
# squash every epoch after a first-epoch spike or a divergence into its bottom tenth
LOG_SPAN = 20.0


def panels(comparison: pd.DataFrame, architecture: str) -> list[tuple[str, bool, pd.DataFrame]]:
    """(tier, pretrained, its configurations with a finished trial) of one architecture, from scratch per tier
    first (largest tier first), then pretrained."""
    rows = comparison[(comparison.architecture == architecture) & (comparison.seeds_ok > 0)]
    keys = sorted({(t, bool(p)) for t, p in zip(rows.tier, rows.pretrained, strict=True)})
    keys.sort(key=lambda k: (k[1], tier_rank(k[0])))
    out = []
    for tier, pretrained in keys:
        own = rows[(rows.tier == tier) & (rows.pretrained == pretrained)]
        out.append((tier, pretrained, own.iloc[np.argsort([model_rank(m) for m in own.model], kind="stable")]))
    return out


def _grid(n: int) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(max(4.6 * cols, 6.4), 3.5 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return fig, list(axes[:n])


def _panel_title(tier: str, pretrained: bool) -> str:
    return f"tier {tier}{', pretrained' if pretrained else ''}"


def _colours(configs: pd.DataFrame) -> dict[str, str]:
    return {
        config_label(m, p): PALETTE[i % len(PALETTE)]
        for i, (m, p) in enumerate(dict.fromkeys(zip(configs.model, configs.pretrained, strict=True)))
    }


def accuracy_curves(epochs: pd.DataFrame, comparison: pd.DataFrame, architecture: str) -> tuple[Figure, pd.DataFrame]:
    """Validation accuracy per epoch of every finished trial of `architecture`, a panel per tier (one line per
    trial, a colour per configuration, dots on the tested epoch); dotted: chance. Returns the figure and the
    epochs it draws."""
    groups = panels(comparison, architecture)
    fig, axes = _grid(len(groups))
    fig.suptitle(f"{architecture}: validation accuracy per epoch, every trial", fontsize=11)
    drawn = []
    for ax, (tier, pretrained, configs) in zip(axes, groups, strict=True):
        colours = _colours(configs)
        for row in configs.itertuples():
            label = config_label(row.model, row.pretrained)
            for k, trial in enumerate(row.trial_ids):
                own = epochs[epochs.trial_id == trial].sort_values("epoch")
                if own.empty:
                    continue
                drawn.append(own)
                seeds = f" ({row.seeds_ok} seeds)" if row.seeds_ok > 1 else ""
                ax.plot(own.epoch, own.val_accuracy, color=colours[label], linewidth=1.2, alpha=0.85,
                        label=None if k else f"{label}{seeds}")  # fmt: skip
                tested = own[own.improved.astype(bool)]
                if len(tested):
                    last = tested.iloc[-1]
                    ax.scatter([last.epoch], [last.val_accuracy], color=colours[label], s=18, zorder=3,
                               edgecolor="white")  # fmt: skip
        ax.axhline(CHANCE, color="black", linestyle=":", linewidth=0.8)
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(_panel_title(tier, pretrained), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("validation accuracy", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False, loc="best")
    data = pd.concat(drawn, ignore_index=True) if drawn else epochs.iloc[:0]
    return fig, data[["trial_id", "epoch", "val_accuracy", "improved"]]


def loss_curves(epochs: pd.DataFrame, comparison: pd.DataFrame, architecture: str) -> tuple[Figure, pd.DataFrame]:
    """Train (solid) and validation (dashed) loss per epoch of every configuration of `architecture`, a panel per
    tier, the mean over its finished seeds; a panel whose losses span more than LOG_SPAN is on a log axis, the others
    linear (a smooth first descent is the curve's shape, not a spike to cut off). Returns the figure and, per panel,
    its axis ("log" or "linear")."""
    groups = panels(comparison, architecture)
    fig, axes = _grid(len(groups))
    fig.suptitle(f"{architecture}: train (solid) and validation (dashed) loss per epoch", fontsize=11)
    scales = []
    for ax, (tier, pretrained, configs) in zip(axes, groups, strict=True):
        colours = _colours(configs)
        values = []
        for row in configs.itertuples():
            label = config_label(row.model, row.pretrained)
            own = epochs[epochs.trial_id.isin(list(row.trial_ids))]
            if own.empty:
                continue
            seeds = f", mean of {row.seeds_ok} seeds" if row.seeds_ok > 1 else ""
            for value, style in (("train_loss", "-"), ("val_loss", "--")):
                band = seed_band(own, by="epoch", value=value)
                ax.plot(band.epoch, band["mean"], color=colours[label], linestyle=style, linewidth=1.3,
                        label=f"{label}{seeds}" if value == "train_loss" else None)  # fmt: skip
                values.append(band["mean"].to_numpy(float))
        finite = np.concatenate(values) if values else np.array([])
        finite = finite[np.isfinite(finite) & (finite > 0)]
        log = len(finite) > 1 and finite.max() / finite.min() > LOG_SPAN
        if log:
            ax.set_yscale("log")
        scales.append({"tier": tier, "pretrained": pretrained, "axis": "log" if log else "linear"})
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(_panel_title(tier, pretrained) + (" (log axis)" if log else ""), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.grid(alpha=0.3, which="both" if log else "major")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False, loc="best")
    return fig, pd.DataFrame(scales, columns=["tier", "pretrained", "axis"])


def loss_data(epochs: pd.DataFrame, comparison: pd.DataFrame, architecture: str) -> pd.DataFrame:
    """The epochs the loss figure of `architecture` reads: train and validation loss of its finished trials."""
    ids = [t for _, _, configs in panels(comparison, architecture) for ts in configs.trial_ids for t in ts]
    return epochs[epochs.trial_id.isin(ids)][["trial_id", "epoch", "train_loss", "val_loss"]].reset_index(drop=True)
