"""The report's inputs: a run's results and the thesis's published numbers as DataFrames, in the thesis's order."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raybench import catalog, metrics, provenance
from raybench.results import decode_classes, read_manifest, read_plan, read_table

KEYS = ["model", "tier", "pretrained"]  # what makes a configuration
ARCHITECTURE_OF = {name: config.architecture for name, config in catalog.CONFIGURATIONS.items()}


@dataclasses.dataclass(frozen=True)
class Results:
    """The Parquet files of one results folder as DataFrames (plan is None when the folder has none)."""

    name: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    predictions: pd.DataFrame
    plan: pd.DataFrame | None
    classes: tuple[str, ...]
    runs: tuple[dict, ...] = ()  # provenance: each invocation's versions, commit, command, machine and times
    manifest: pd.DataFrame | None = None  # every image used: its sha256, class, tier and split (None without one)


@dataclasses.dataclass(frozen=True)
class Thesis:
    """The thesis's published numbers: one row per configuration (results) and the best ones' mAP."""

    results: pd.DataFrame
    maps: pd.DataFrame


def read_results(folder: str | Path) -> Results:
    """Read trials, epochs, predictions and plan of a results folder (the only reading the report does)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"results folder {str(folder)!r} does not exist; pass a folder written by "
            "`python -m raybench.run` (results/<name>) or `python -m raybench.train --out`"
        )
    trials, meta = read_table(folder, "trials")
    epochs, _ = read_table(folder, "epochs")
    predictions, pred_meta = read_table(folder, "predictions")
    plan = read_plan(folder)
    if trials.empty and plan is None:
        raise ValueError(f"{folder} holds neither trials.parquet nor plan.parquet: nothing to report")
    classes = decode_classes(pred_meta or meta, predictions.columns)
    trials = trials.drop_duplicates("trial_id", keep="last").reset_index(drop=True)
    trials["pretrained"] = trials["pretrained"].astype(bool)
    trials = with_collapse(trials)
    if plan is not None:
        plan = plan.assign(pretrained=plan["pretrained"].astype(bool))
    manifest = read_manifest(folder)  # None when damaged: a run writes it again, and figure 4.1 does without it
    return Results(
        folder.name,
        *(trials, epochs, predictions, plan, classes),
        tuple(provenance.read_runs(folder)),
        manifest,
    )


def _classes_in(matrix) -> float:
    """How many classes a stored confusion matrix has predictions in (NaN without one)."""
    if matrix is None or isinstance(matrix, float) or len(matrix) == 0:
        return math.nan
    return float((np.asarray([list(row) for row in matrix]).sum(0) > 0).sum())


def with_collapse(trials: pd.DataFrame) -> pd.DataFrame:
    """classes_predicted and collapsed for every trial with a confusion matrix, also in results written before
    they were columns (then counted from the confusion matrix: its columns are the predicted classes)."""
    stored = pd.to_numeric(trials.get("classes_predicted", pd.Series(math.nan, index=trials.index)), errors="coerce")
    counted = trials.get("confusion_matrix", pd.Series(None, index=trials.index, dtype=object)).map(_classes_in)
    predicted = stored.fillna(counted).astype("Int64")
    collapsed = (predicted <= metrics.COLLAPSE_CLASSES).astype("boolean")
    return trials.assign(classes_predicted=predicted, collapsed=collapsed)


def read_thesis() -> Thesis:
    """The published numbers of the catalog (tables 5.1-5.8, 5.15, 5.17), with the report's column names."""
    results = pd.DataFrame(list(catalog.published_results())).rename(
        columns={"dataset": "tier", "accuracy": "test_accuracy", "total_training_s": "train_seconds"}
    )
    maps = pd.DataFrame(list(catalog.published_maps())).rename(columns={"dataset": "tier"})
    return Thesis(results, maps)


def select(
    results: Results, thesis: Thesis, *, models: Sequence[str] = (), tiers: Sequence[str] = ()
) -> tuple[Results, Thesis]:
    """Keep only the given models (names or architectures) and tiers; unknown names are a ValueError."""
    chosen_models = expand_models(models) if models else None
    known_tiers = set(catalog.TIER_SPLITS) | set(results.trials.tier.dropna())
    if results.plan is not None:
        known_tiers |= set(results.plan.tier)
    unknown = [t for t in tiers if t not in known_tiers]
    if unknown:
        raise ValueError(f"unknown tier(s) {unknown}; valid tiers: {', '.join(sorted(known_tiers, key=tier_rank))}")

    def keep(frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None:
            return None
        mask = pd.Series(True, index=frame.index)
        if chosen_models is not None:
            mask &= frame.model.isin(chosen_models)
        if tiers:
            mask &= frame.tier.isin(tiers)
        return frame[mask].reset_index(drop=True)

    trials = keep(results.trials)
    ids = set(trials.trial_id)
    picked = dataclasses.replace(
        results,
        trials=trials,
        plan=keep(results.plan),
        epochs=results.epochs[results.epochs.trial_id.isin(ids)].reset_index(drop=True),
        predictions=results.predictions[results.predictions.trial_id.isin(ids)].reset_index(drop=True),
    )
    return picked, Thesis(keep(thesis.results), keep(thesis.maps))


def expand_models(names: Sequence[str]) -> list[str]:
    """Model names, with an architecture name (any case, e.g. 'resnet', 'MLP-Mixer') standing for its models."""
    by_arch: dict[str, tuple[str, ...]] = {}
    for model, config in catalog.BUILT_IN.items():  # the thesis's and the future work's (chapter 7)
        by_arch[config.architecture.lower()] = (*by_arch.get(config.architecture.lower(), ()), model)
    chosen: list[str] = []
    for name in names:
        found = (name,) if name in catalog.BUILT_IN else by_arch.get(name.lower())
        if found is None:
            architectures = dict.fromkeys(c.architecture for c in catalog.BUILT_IN.values())
            raise ValueError(
                f"unknown model {name!r}; valid: the architectures {', '.join(architectures)} "
                f"or the models {', '.join(catalog.BUILT_IN)}"
            )
        chosen += [m for m in found if m not in chosen]
    return chosen


# ------------------------------------------------------------------------------------- the thesis's order


def tier_rank(tier: str) -> tuple[int, str]:
    """Sort key of a tier: the thesis's tiers largest first (table 4.1), then others by name."""
    order = list(catalog.TIER_SPLITS)
    return (order.index(tier), "") if tier in order else (len(order), tier)


def model_rank(model: str) -> int:
    """Sort key of a model: the catalog's order, unknown names last."""
    return catalog.MODEL_NAMES.index(model) if model in catalog.MODEL_NAMES else len(catalog.MODEL_NAMES)


def sort_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by tier, from scratch before pretrained, model and seed, as the thesis lists them."""
    if frame.empty:
        return frame.reset_index(drop=True)
    key = frame.apply(
        lambda r: (
            tier_rank(r.tier),
            bool(r.pretrained),
            model_rank(r.model),
            str(r.model),
            -1 if pd.isna(r.get("seed")) else r.get("seed"),
        ),
        axis=1,
    )
    return frame.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)
