"""The effect of each thing a grid varies beyond its baseline (the thesis's future work, chapter 7): pure functions of
the trials table.

A grid's unlabelled sweeps are its baseline; each labelled sweep (`label`, a trial's `variant`) changes options or
the start (init_from) and is compared with the baseline trials of the same model, tier and pretrained-ness. ImageNet
fine-tunes are compared with the same model from scratch, and every model beyond the thesis's 22 with the best of
the thesis's models in the same tier. Per configuration: mean test accuracy over the finished seeds with its 95%
Student-t interval, beside the baseline's, the difference, and whether the two intervals separate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from raybench import catalog, spec
from raybench.report.formatting import fmt, fmt_interval, is_missing
from raybench.report.inputs import Results
from raybench.report.statistics import mean_interval
from raybench.report.tables import Table

BASELINE = ""  # the variant of a grid's unlabelled sweeps
PRETRAINING = "ImageNet pretraining"  # effect names other than labels have a space: no label can take them
KEYS = ["model", "tier", "pretrained", "variant"]
KINDS = ("option", "pretrained", "architecture")
EFFECT_COLUMNS = [
    "effect", "kind", "change", "model", "baseline_model", "tier", "pretrained", "n_train",
    "accuracy", "accuracy_low", "accuracy_high", "seeds",
    "baseline_accuracy", "baseline_low", "baseline_high", "baseline_seeds", "diff", "separated",
]  # fmt: skip


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """The finished trials with `variant` and `init_from` filled in ("" where results predate them)."""
    ok = trials[trials.status == "ok"] if "status" in trials else trials
    fill = {c: ok[c].fillna("").astype(str) if c in ok else "" for c in ("variant", "init_from")}
    return ok.assign(pretrained=ok.pretrained.astype(bool), **fill).reset_index(drop=True)


def is_baseline(trials: pd.DataFrame) -> pd.Series:
    """True for the trials of a grid's unlabelled sweeps (all trials of results without variants)."""
    if "variant" not in trials:
        return pd.Series(True, index=trials.index)
    return trials.variant.fillna(BASELINE).astype(str) == BASELINE


def seed_stats(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per model, tier, pretrained and variant: the mean test accuracy over its finished seeds and its 95%
    t-interval (clipped to [0, 1]), the seeds, the training images, and the options and start of its first seed."""
    rows = []
    for (model, tier, pretrained, variant), group in finished(trials).groupby(KEYS, sort=False):
        mean, low, high = mean_interval(group.test_accuracy)
        n_train = pd.to_numeric(group.get("n_train", pd.Series(dtype=float)), errors="coerce").dropna()
        rows.append(
            {
                "model": model,
                "tier": tier,
                "pretrained": bool(pretrained),
                "variant": variant,
                "accuracy": mean,
                "accuracy_low": max(low, 0.0) if not math.isnan(low) else low,
                "accuracy_high": min(high, 1.0) if not math.isnan(high) else high,
                "seeds": len(group),
                "n_train": int(n_train.iloc[0]) if len(n_train) else math.nan,
                "options": group.options.iloc[0] if "options" in group else None,
                "init_from": group.init_from.iloc[0],
                "architecture": architecture_of(model, group.architecture.iloc[0] if "architecture" in group else None),
            }
        )
    return pd.DataFrame(rows, columns=[*KEYS, "accuracy", "accuracy_low", "accuracy_high", "seeds", "n_train",
                                       "options", "init_from", "architecture"])  # fmt: skip


def separation(low, high, baseline_low, baseline_high) -> str:
    """'higher' / 'lower' when the two 95% intervals do not overlap, 'no' when they do, '' when one is missing."""
    if any(is_missing(v) for v in (low, high, baseline_low, baseline_high)):
        return ""
    if low > baseline_high:
        return "higher"
    if high < baseline_low:
        return "lower"
    return "no"


def _options(text) -> dict:
    return json.loads(text) if isinstance(text, str) and text else {}


def describe_change(changed: pd.DataFrame, baseline: pd.DataFrame) -> str:
    """What a variant changes: its options that differ from the matching baseline's, and its start (init_from)."""
    pairs = changed.merge(baseline, on=["model", "tier", "pretrained"], suffixes=("", "_base"))
    if pairs.empty:
        start = _start(changed.init_from.iloc[0]) if len(changed) else ""
        return "; ".join(filter(None, [start, "no baseline trials to compare with"]))
    differences: dict[str, tuple] = {}
    for r in pairs.itertuples():
        options, base = _options(r.options), _options(r.options_base)
        for key in sorted(set(options) | set(base)):
            if options.get(key) != base.get(key) and key not in differences:
                differences[key] = (options.get(key), base.get(key))
    parts = [f"{k}={_value(v)} (baseline {_value(b)}){_gloss(k, v)}" for k, (v, b) in differences.items()]
    start = _start(pairs.init_from.iloc[0])
    return "; ".join([*parts, start] if start else parts) or "the same options and start as the baseline"


def _gloss(key: str, value) -> str:
    """What an option's value means where its name alone does not say (the mask inputs, §7.2)."""
    use = spec.input_parts(value)[1] if key == "input" and isinstance(value, str) else ""
    return {
        "channel": ": the mask of the cell at the centre as one more channel",
        "multiply": ": the image multiplied by the mask of the cell at the centre",
    }.get(use, "")


def _value(value) -> str:
    return '""' if value == "" else str(value)


def _start(init_from: str) -> str:
    return f"starts from an earlier trial's weights ({init_from.rsplit('/', 1)[-1]}, …)" if init_from else ""


def _pair(effect: str, kind: str, change: str, row, base, baseline_model: str | None = None) -> dict:
    found = base is not None
    get = (lambda name: getattr(base, name)) if found else (lambda name: math.nan)
    out = {
        "effect": effect,
        "kind": kind,
        "change": change,
        "model": row.model,
        "baseline_model": (baseline_model or row.model) if found else None,
        "tier": row.tier,
        "pretrained": bool(row.pretrained),
        "n_train": row.n_train,
        "accuracy": row.accuracy,
        "accuracy_low": row.accuracy_low,
        "accuracy_high": row.accuracy_high,
        "seeds": row.seeds,
        "baseline_accuracy": get("accuracy"),
        "baseline_low": get("accuracy_low"),
        "baseline_high": get("accuracy_high"),
        "baseline_seeds": get("seeds") if found else 0,
    }
    out["diff"] = out["accuracy"] - out["baseline_accuracy"]
    out["separated"] = separation(row.accuracy_low, row.accuracy_high, out["baseline_low"], out["baseline_high"])
    return out


def architecture_of(model: str, recorded=None) -> str:
    """A model's architecture: as its trials recorded it, else the catalog's, else (a grid's own model in results
    that predate the column) its name."""
    if isinstance(recorded, str) and recorded:
        return recorded
    config = catalog.BUILT_IN.get(model)
    return config.architecture if config else model


def _rank(model: str) -> int:
    names = list(catalog.BUILT_IN)
    return names.index(model) if model in names else len(names)


def effects(trials: pd.DataFrame, *, order: Sequence[str] = ()) -> pd.DataFrame:
    """Every effect a run's trials show, one row per configuration compared (columns EFFECT_COLUMNS).

    kind "option": a labelled sweep (effect = its label; `order` lists labels first, in the grid's order) against
    the baseline of the same model, tier and pretrained-ness; "pretrained": ImageNet fine-tunes against the same
    model from scratch; "architecture": a model beyond the thesis's 22 (effect = its architecture) against the
    best thesis model of its tier, from scratch. Baseline configurations only in all but the first.
    """
    stats = seed_stats(trials)
    if stats.empty:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    base = stats[stats.variant == BASELINE]
    by_key = {(r.model, r.tier, r.pretrained): r for r in base.itertuples()}
    rows = []
    labels = [v for v in dict.fromkeys([*order, *stats.variant]) if v != BASELINE and v in set(stats.variant)]
    for label in labels:
        changed = stats[stats.variant == label]
        change = describe_change(changed, base)
        for r in changed.itertuples():
            rows.append(_pair(label, "option", change, r, by_key.get((r.model, r.tier, r.pretrained))))
    for r in base[base.pretrained].itertuples():
        change = "ImageNet weights, new head (§4.6, §7.2) instead of random initialisation"
        rows.append(_pair(PRETRAINING, "pretrained", change, r, by_key.get((r.model, r.tier, False))))
    thesis = base[base.model.isin(catalog.MODEL_NAMES) & ~base.pretrained]
    scored = thesis[thesis.accuracy.notna()]
    best = {tier: group.loc[group.accuracy.idxmax()] for tier, group in scored.groupby("tier")}
    for r in base[~base.model.isin(catalog.MODEL_NAMES) & ~base.pretrained].itertuples():
        b = best.get(r.tier)
        change = "an architecture beyond the thesis's, against the best thesis model of the tier in this run"
        rows.append(_pair(f"{r.architecture} (architecture)", "architecture", change, r, b,
                          b.model if b is not None else None))  # fmt: skip
    out = pd.DataFrame(rows, columns=EFFECT_COLUMNS)
    if out.empty:
        return out
    # within an effect: the largest tier first (custom tiers by their training images), then the catalog's order
    key = out.apply(lambda r: (-(r.n_train if not is_missing(r.n_train) else -1), _rank(r.model), r.model), axis=1)
    # labels in the grid's order (`order`, else as found); architectures in the catalog's order, a grid's own last
    effect_rank = {e: i for i, e in enumerate(dict.fromkeys(out.effect))}
    for effect, group in out[out.kind == "architecture"].groupby("effect"):
        effect_rank[effect] = (min(_rank(m) for m in group.model), effect)
    order_key = [(KINDS.index(k), effect_rank[e], *r) for k, e, r in zip(out.kind, out.effect, key, strict=True)]
    return out.iloc[sorted(range(len(out)), key=lambda i: order_key[i])].reset_index(drop=True)


def effect_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per effect: what it changes, the configurations compared with a baseline, the mean difference, and
    in how many the intervals separate upwards or downwards."""
    out = []
    for effect, group in rows.groupby("effect", sort=False):
        paired = group[group.baseline_accuracy.notna()]
        out.append(
            {
                "effect": effect,
                "kind": group.kind.iloc[0],
                "change": group.change.iloc[0],
                "configurations": len(group),
                "compared": len(paired),
                "mean_diff": float(paired["diff"].mean()) if len(paired) else math.nan,
                "higher": int((paired.separated == "higher").sum()),
                "lower": int((paired.separated == "lower").sum()),
                "overlapping": int((paired.separated == "no").sum()),
            }
        )
    return pd.DataFrame(out)


def _signed(value):
    """A difference rounded as shown, so that -0.0000001 reads +0.000, not -0.000."""
    return value if is_missing(value) else round(float(value), 3) + 0.0


def slug(effect: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", effect).strip("-").lower() or "effect"


def summary_table(summary: pd.DataFrame) -> Table:
    headers = ["Effect", "Changes", "Compared", "Mean Δ accuracy", "Higher", "Lower", "Overlapping"]
    shown = [
        [
            r.effect,
            r.change,
            f"{r.compared} of {r.configurations}",
            fmt(_signed(r.mean_diff), "sacc"),
            str(r.higher),
            str(r.lower),
            str(r.overlapping),
        ]
        for r in summary.itertuples()
    ]
    note = (
        "Compared: configurations (model × tier) with baseline trials to compare with. Higher / lower: the 95% "
        "t-intervals over seeds do not overlap; overlapping: they do (or a side has one seed only, not counted)."
    )
    return Table(
        "table_effects", "Effects at a glance: each change against its baseline", summary, headers, shown, note
    )


def effect_table(rows: pd.DataFrame, effect: str) -> Table:
    """One effect, per configuration: the baseline's and the changed trials' mean accuracy [95% interval], seeds,
    the difference and whether the intervals separate."""
    data = rows[rows.effect == effect].reset_index(drop=True)
    kind = data.kind.iloc[0] if len(data) else "option"
    baseline = {"option": "Baseline", "pretrained": "From scratch", "architecture": "Best thesis model"}[kind]
    headers = ["Model", "Tier (train images)", baseline, "seeds", effect, "seeds", "Δ", "Intervals separate?"]
    shown = []
    for r in data.itertuples():
        base = fmt_interval(r.baseline_accuracy, r.baseline_low, r.baseline_high)
        if kind == "architecture" and isinstance(r.baseline_model, str):
            base = f"{r.baseline_model}: {base}"
        shown.append(
            [
                f"{r.model} (pretrained)" if r.pretrained and kind != "pretrained" else r.model,
                f"{r.tier} ({fmt(r.n_train, 'int')})",
                base,
                str(int(r.baseline_seeds)),
                fmt_interval(r.accuracy, r.accuracy_low, r.accuracy_high),
                str(int(r.seeds)),
                fmt(_signed(r.diff), "sacc"),
                {"higher": "**yes, higher**", "lower": "**yes, lower**", "no": "no"}.get(r.separated, "–"),
            ]
        )
    title = f"Effect of {effect}: test accuracy against the baseline"
    note = f"{data.change.iloc[0] if len(data) else ''}. Mean over finished seeds [95% Student-t interval]."
    return Table(f"table_effect_{slug(effect)}", title, data, headers, shown, note)


def effect_figure(rows: pd.DataFrame, effect: str) -> Figure:
    """One effect drawn: per configuration, the baseline's mean accuracy (grey, hollow) and the changed trials'
    (filled) with their 95% intervals, one line each."""
    data = rows[rows.effect == effect].reset_index(drop=True)
    labels = [
        f"{r.model}{' (pre)' if r.pretrained and r.kind != 'pretrained' else ''} · {r.tier}" for r in data.itertuples()
    ]
    figure = Figure(figsize=(7.5, 1.2 + 0.32 * max(len(data), 1)), layout="constrained")
    ax = figure.subplots()
    y = np.arange(len(data))[::-1]

    def draw(mean, low, high, offset, **style):
        mean = pd.to_numeric(mean, errors="coerce").to_numpy(dtype=float)
        err = np.vstack(
            [
                mean - pd.to_numeric(low, errors="coerce").to_numpy(dtype=float),
                pd.to_numeric(high, errors="coerce").to_numpy(dtype=float) - mean,
            ]
        )
        ax.errorbar(mean, y + offset, xerr=np.nan_to_num(err), fmt="o", capsize=3, **style)

    kind = data.kind.iloc[0] if len(data) else "option"
    baseline = {"option": "baseline", "pretrained": "from scratch", "architecture": "best thesis model"}[kind]
    draw(data.baseline_accuracy, data.baseline_low, data.baseline_high, 0.12, color="grey", mfc="white", label=baseline)
    draw(data.accuracy, data.accuracy_low, data.accuracy_high, -0.12, color="#1f77b4", label=effect)
    ax.set_yticks(y, labels)
    ax.set_ylim(-0.6, len(data) - 0.4)
    ax.set_xlabel("test accuracy (mean over seeds, 95% interval)")
    ax.set_xlim(0, 1)
    ax.axvline(1 / len(catalog.CLASSES), color="lightgrey", lw=1, ls=":")  # chance: 8 classes
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Effect of {effect}")
    return figure


def split_baseline(results: Results) -> Results:
    """The part of a run the thesis's chapter-5 comparison reads: the baseline trials of the thesis's 22 models (and
    their plan rows, epochs and predictions); variants and other models are this module's."""
    trials = results.trials
    chosen = trials[is_baseline(trials) & trials.model.isin(catalog.MODEL_NAMES)]
    ids = set(chosen.trial_id)
    plan = results.plan
    if plan is not None:
        plan = plan[is_baseline(plan) & plan.model.isin(catalog.MODEL_NAMES)].reset_index(drop=True)
    return dataclasses.replace(
        results,
        trials=chosen.reset_index(drop=True),
        plan=plan,
        epochs=results.epochs[results.epochs.trial_id.isin(ids)].reset_index(drop=True),
        predictions=results.predictions[results.predictions.trial_id.isin(ids)].reset_index(drop=True),
    )
