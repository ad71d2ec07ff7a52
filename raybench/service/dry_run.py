"""`--dry-run` on screen: the summary, the warnings and how long the grid will take first, then one short row per
trial, then each tier's splits per class. The full detail (every option of every trial) is in plan.parquet."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd

from raybench import console, projection, spec
from raybench import data as pbc

ROW_WIDTH = 119
TRIAL_WIDTH = 44


def option_differences(plan: pd.DataFrame) -> tuple[dict[str, object], dict[str, list]]:
    """(options every trial sets to the same non-thesis value, {option: its values} for those that vary)."""
    thesis = dataclasses.asdict(spec.TrainConfig())
    options = [json.loads(o) for o in plan.options]
    same, varying = {}, {}
    for key in thesis:
        values = list(dict.fromkeys(json.dumps(o[key]) for o in options))
        if len(values) > 1:
            varying[key] = [json.loads(v) for v in values]
        elif json.loads(values[0]) != thesis[key]:
            same[key] = json.loads(values[0])
    return same, varying


def same_tiers(manifest: pd.DataFrame, sizes: dict[str, int | None]) -> list[tuple[str, str]]:
    """(bigger tier, smaller tier) pairs that hold the same images on this data: a tier the data fills only by
    being all of it (the embedded sample's large tier is its 400 images, its tiny tier too)."""
    images = {t: frozenset(rows.image) for t, rows in manifest.groupby("tier")}
    order = sorted(images, key=lambda t: -(sizes.get(t) or float("inf")))
    pairs = []
    for i, big in enumerate(order):
        for small in order[i + 1 :]:
            if images[big] == images[small]:
                pairs.append((big, small))
                break
    return pairs


def same_tiers_warning(prepared: pbc.Prepared, sizes: dict[str, int | None]) -> str | None:
    pairs = same_tiers(prepared.manifest, sizes)
    if not pairs:
        return None
    said = ", ".join(f"{big} is the same {len(prepared.manifest[prepared.manifest.tier == big])} images as {small}"
                     for big, small in pairs)  # fmt: skip
    return f"on {prepared.root}, tier {said}: pass --data (the full dataset) for distinct tiers"


def summary(grid, plan: pd.DataFrame) -> str:
    """One line: trials, models, tiers, pretrained, seeds."""
    tiers = list(dict.fromkeys(plan.tier))
    pretrained = int(plan.pretrained.sum())
    seeds = sorted(set(plan.seed))
    return (
        f"{grid.name}: {len(plan)} trials, {plan.model.nunique()} models on tier(s) {', '.join(tiers)}"
        f"{f', {pretrained} pretrained' if pretrained else ''}, seed(s) {', '.join(map(str, seeds))}"
    )


def trial_rows(plan: pd.DataFrame, projected: projection.Projection | None) -> list[str]:
    """A header and one row per trial, each under ROW_WIDTH characters."""
    width = min(max(len(t) for t in plan.trial_id), TRIAL_WIDTH)
    header = f"{'trial':<{width}}  {'params':>7} {'batch':>5} {'epochs':>6} {'cpu':>4} {'gpu':>6} {'GPU GB':>6}"
    header += f"  {'time':>14}" if projected is not None else ""
    lines = [header]
    times = projected.trials.set_index("trial_id") if projected is not None else None
    for row in plan.itertuples():
        name = row.trial_id if len(row.trial_id) <= width else row.trial_id[: width - 1] + "~"
        params = row.trainable_parameters if row.pretrained else row.parameters
        line = f"{name:<{width}}  {params / 1e6:>6.1f}M {row.batch_size:>5}"
        gpu_gb = f"{row.gpu_memory_gb:.1f}" if row.gpu > 0 else "-"  # the estimate matters only on a GPU
        epochs = times.loc[row.trial_id].epochs if times is not None else row.max_epochs
        line += f" {epochs:>6} {row.cpu:>4g} {row.gpu:>6g} {gpu_gb:>6}"
        if times is not None:
            t = times.loc[row.trial_id]
            span = (
                f"{console.duration(t.seconds)} ({console.duration(t.seconds_low)}-{console.duration(t.seconds_high)})"
            )
            line += f"  {span:>14}"
        lines.append(line[:ROW_WIDTH])
    return lines


def show(
    grid,
    plan: pd.DataFrame,
    prepared: pbc.Prepared,
    *,
    projected: projection.Projection | None,
    plan_path,
) -> list[str]:
    """The dry run's lines, in the order a person reads them."""
    lines = [summary(grid, plan)]
    warnings = []
    report = prepared.report
    if report.omitted_tiers:
        warnings.append(
            f"a run would stop here: tier(s) {', '.join(report.omitted_tiers)} need more images than the "
            f"{report.usable} of {prepared.root}; pass --data (the full dataset: raybench data download DEST)"
        )
    same = same_tiers_warning(prepared, grid.tiers)
    if same:
        warnings.append(same)
    lines += [f"warning: {w}" for w in warnings]
    if projected is not None:
        lines += projected.lines()
        if report.omitted_tiers:
            lines.append("  (projected for the full dataset's tiers, as a run with --data would train them)")
    same_options, varying = option_differences(plan)
    if same_options:
        lines.append("options that differ from the thesis: " + ", ".join(f"{k}={v!r}" for k, v in same_options.items()))
    else:
        lines.append("options: the thesis's")
    if varying:
        lines.append(
            "options that vary between trials: "
            + "; ".join(f"{k} {', '.join(map(repr, v))}" for k, v in varying.items())
        )
    lines.append("")
    lines += trial_rows(plan, projected)
    lines.append("")
    lines.append(str(report))
    total = f"; projected {projection.hours(projected.total[0])}" if projected is not None else ""
    lines.append(f"{len(plan)} trials planned{total} -> {plan_path} (every option of every trial)")
    return lines


def project(trials, plan: pd.DataFrame, prepared: pbc.Prepared, *, tiers: dict, args) -> projection.Projection:
    """The grid's projected time on this machine (as a Ray started here would run it), measuring what the
    cost table does not yet hold; a line first when that takes a while."""
    if prepared.report.omitted_tiers:  # the run needs the full dataset: project its tiers
        sizes = projection.split_sizes(prepared.manifest.iloc[:0], tiers)
    else:
        sizes = projection.split_sizes(prepared.manifest, tiers)
    costs = projection.cost_table(args.cache)
    slots = projection.local_slots(num_cpus=args.num_cpus, max_concurrent=args.max_concurrent)
    return projection.project(
        list(trials),
        plan,
        split_sizes=sizes,
        slots=slots,
        costs=costs,
        cpus_per_trial=args.cpus_per_trial,
        announce=lambda line: print(line, flush=True),
    )


def with_projection(plan: pd.DataFrame, projected: projection.Projection) -> pd.DataFrame:
    """The plan with each trial's projected epochs and seconds (expected, low, high) as columns."""
    columns = ["epochs", "epochs_low", "epochs_high", "epochs_source", "cost_source", "seconds", "seconds_low"]
    columns.append("seconds_high")
    extra = projected.trials.set_index("trial_id")[columns].add_prefix("projected_")
    return plan.join(extra, on="trial_id")
