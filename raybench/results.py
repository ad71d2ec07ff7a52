"""The result files and their schemas: trials, epochs, predictions, manifest (and plan), all Parquet.

Each finished trial is written at once as its own part files under `parts/`; the consolidated files at
the top of the results folder are rebuilt from the parts and replaced atomically (write, then rename),
so a killed process loses nothing that finished and a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raybench import files
from raybench.catalog import CLASSES

SCORE_COLUMNS = tuple(f"score_{name}" for name in CLASSES)
LOGIT_COLUMNS = tuple(f"logit_{name}" for name in CLASSES)  # the raw outputs, which mAP@N ranks by (§5.1.1)

TRIALS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("model", pa.string()),
        ("architecture", pa.string()),  # the catalog record's (a grid's own model's as its grid declares it)
        ("tier", pa.string()),
        ("pretrained", pa.bool_()),
        ("seed", pa.int64()),
        ("variant", pa.string()),  # the grid sweep's label; "" for the baseline (spec.Trial)
        ("init_from", pa.string()),  # the weights file the trial started from; "" for none
        ("split_seed", pa.int64()),
        ("image_size", pa.int64()),
        ("precision", pa.string()),
        ("channels_last", pa.bool_()),
        ("device", pa.string()),
        ("node", pa.string()),
        ("host", pa.string()),  # the name of the machine that tested it (node: Ray's id of it)
        ("started_at", pa.string()),  # UTC, ISO 8601: its first epoch's start (a resumed trial keeps it)
        ("ended_at", pa.string()),  # when it was tested
        ("step", pa.string()),  # the steps that ran: "compiled" (torch.compile; CUDA graphs on a GPU) or "eager"
        ("step_fallback", pa.string()),  # why they ran eager although compiled was asked; "" when they did not
        ("compile_seconds", pa.float64()),  # the compiling calls' seconds, not in train_seconds (0 for eager)
        ("gpu_fraction", pa.float64()),  # the share of a GPU Ray gave the trial (0 on the CPU)
        ("gpu_sharing", pa.string()),  # "mps": packed with others under MPS; "time-sliced": packed without; "" alone
        ("estimated_gpu_memory_gb", pa.float64()),  # the resource rule's estimate (resources.py)
        ("peak_gpu_memory_gb", pa.float64()),  # torch.cuda.max_memory_allocated of the attempt that finished
        # max_memory_reserved: what the caching allocator (and CUDA graph pools) held, what the GPU must have
        ("peak_gpu_reserved_gb", pa.float64()),
        ("parameters", pa.int64()),
        ("trainable_parameters", pa.int64()),
        ("batch_size", pa.int64()),  # the global batch: with workers > 1, each worker trains a part of it
        ("workers", pa.int64()),  # the processes that trained it (data-parallel, spec.TrainConfig.workers)
        ("max_epochs", pa.int64()),
        ("epochs", pa.int64()),
        ("tested_epoch", pa.int64()),  # 1-based: the epoch whose weights were tested (fig. 4.5, config.tested)
        ("stopped_early", pa.bool_()),
        ("tested_val_loss", pa.float64()),
        ("train_seconds", pa.float64()),
        ("seconds_per_epoch", pa.float64()),
        ("test_accuracy", pa.float64()),
        ("map_at_5", pa.float64()),
        ("map_at_100", pa.float64()),
        ("confusion_matrix", pa.list_(pa.list_(pa.int64()))),
        ("classes_predicted", pa.int64()),  # how many classes the tested model predicts on the test set
        ("collapsed", pa.bool_()),  # it predicts at most metrics.COLLAPSE_CLASSES of them
        ("n_train", pa.int64()),
        ("n_val", pa.int64()),
        ("n_test", pa.int64()),
        ("duplicate_pairs_train_test", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("options", pa.string()),
    ]
)

EPOCHS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("epoch", pa.int64()),
        ("train_loss", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("lr", pa.float64()),
        ("improved", pa.bool_()),
        ("epoch_seconds", pa.float64()),  # the epoch's steps, without compiling (compile_seconds)
        ("compile_seconds", pa.float64()),
        ("node", pa.string()),
        ("started_at", pa.string()),  # UTC, ISO 8601
        ("ended_at", pa.string()),
        ("host", pa.string()),  # the machine's name (node: Ray's id of it)
    ]
)

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("image", pa.string()),
        ("label", pa.int64()),
        ("class_name", pa.string()),
        ("predicted", pa.int64()),
    ]
    + [(name, pa.float32()) for name in SCORE_COLUMNS]
    + [(name, pa.float32()) for name in LOGIT_COLUMNS]
)

MANIFEST_SCHEMA = pa.schema(
    [
        ("image", pa.string()),
        ("sha256", pa.string()),
        ("label", pa.int64()),
        ("class_name", pa.string()),
        ("tier", pa.string()),
        ("split", pa.string()),
    ]
)

# what a trial reports when it ends: to Tune, to TensorBoard's HParams (the metrics) and in the run's final table
METRIC_COLUMNS = ("test_accuracy", "map_at_5", "map_at_100", "epochs", "tested_epoch")
SUMMARY_COLUMNS = ("status", "error", *METRIC_COLUMNS, "train_seconds", "batch_size")

FILES = {"trials": TRIALS_SCHEMA, "epochs": EPOCHS_SCHEMA, "predictions": PREDICTIONS_SCHEMA}
CLASS_METADATA = {b"raybench.classes": json.dumps(list(CLASSES)).encode()}


@dataclasses.dataclass
class TrialResult:
    """The rows one trial adds to trials, epochs and predictions, and its tested weights when it keeps them."""

    trial: dict
    epochs: list[dict]
    predictions: list[dict]
    weights: dict[str, np.ndarray] | None = None  # state_dict as arrays: weights/TRIAL_ID.npz (spec.Trial.save_weights)


WEIGHTS_DIR = "weights"


def weights_path(out: str | Path, trial_id: str) -> Path:
    """Where a results folder keeps a trial's tested weights (what a grid's `init_from` points at)."""
    return Path(out) / WEIGHTS_DIR / f"{trial_id}.npz"


def prediction_rows(
    trial_id: str, images: list[str], labels: np.ndarray, scores: np.ndarray, *, logits: np.ndarray | None = None
) -> list[dict]:
    """One row per test image with its label, the predicted class, the softmax score and the logit of every class."""
    scores = np.asarray(scores, dtype=np.float32)
    raw = np.full_like(scores, np.nan) if logits is None else np.asarray(logits, dtype=np.float32)
    rows = []
    for image, label, row, logit in zip(images, np.asarray(labels), scores, raw, strict=True):
        rows.append(
            {
                "trial_id": trial_id,
                "image": image,
                "label": int(label),
                "class_name": CLASSES[int(label)],
                "predicted": int(row.argmax()),
                **dict(zip(SCORE_COLUMNS, row.tolist(), strict=True)),
                **({} if logits is None else dict(zip(LOGIT_COLUMNS, logit.tolist(), strict=True))),
            }
        )
    return rows


def failed_result(trial: dict, error: str, epochs: list[dict] | None = None) -> TrialResult:
    """A trial that failed for good: its identifying columns, status "failed" and the error."""
    return TrialResult(trial={**trial, "status": "failed", "error": error}, epochs=list(epochs or []), predictions=[])


def to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows to an Arrow table with the declared schema (missing columns are null, extra ones are an error)."""
    extra = sorted({key for row in rows for key in row} - set(schema.names))
    if extra:
        raise ValueError(f"columns {extra} are not in the schema ({', '.join(schema.names)})")
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.table(columns, schema=schema).replace_schema_metadata(CLASS_METADATA)


def is_disk_full(error: BaseException) -> bool:
    """An OSError of a full disk (pyarrow's carry the message, not always the errno)."""
    return isinstance(error, OSError) and (error.errno == errno.ENOSPC or "No space left" in str(error))


def write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file atomically: to a temporary name, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    files.replace(tmp, path)


def write_trial(out: str | Path, result: TrialResult) -> None:
    """Persist one ended trial's rows as its part files (overwriting an earlier attempt's).

    A failure never replaces a trial's ok rows: what failed after them (a copy, Tune's bookkeeping) did not
    undo its training.
    """
    trial_id = result.trial["trial_id"]
    parts = Path(out) / "parts"
    if result.trial["status"] == "failed" and finished_trials(out).get(trial_id) == "ok":
        return
    if result.weights is not None:  # before the rows: a trial that reads as finished has its weights in place
        path = weights_path(out, trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **result.weights)
        files.replace(tmp, path)
    for name, rows in (("epochs", result.epochs), ("predictions", result.predictions), ("trials", [result.trial])):
        write_table(to_table(rows, FILES[name]), parts / f"{trial_id}.{name}.parquet")


def read_trial(out: str | Path) -> TrialResult | None:
    """The one trial whose part files `out` holds (as write_trial left them), or None without one."""
    found = sorted((Path(out) / "parts").glob("*.trials.parquet"))
    if len(found) != 1:
        return None
    stem = str(found[0]).removesuffix(".trials.parquet")
    rows = {name: pq.read_table(f"{stem}.{name}.parquet").to_pylist() for name in FILES}
    weights = None
    path = weights_path(out, rows["trials"][0]["trial_id"])
    if path.is_file():
        with np.load(path, allow_pickle=False) as arrays:
            weights = {key: arrays[key] for key in arrays.files}
    return TrialResult(trial=rows["trials"][0], epochs=rows["epochs"], predictions=rows["predictions"], weights=weights)


def finished_trials(out: str | Path) -> dict[str, str]:
    """trial_id -> status of every trial with persisted rows in the results folder."""
    parts = Path(out) / "parts"
    done = {}
    for path in sorted(parts.glob("*.trials.parquet")) if parts.is_dir() else []:
        if not readable(path):  # a part cut short by a crash: the trial reads as not saved (--resume recovers it)
            continue
        table = pq.read_table(path, columns=["trial_id", "status"])
        for trial_id, status in zip(table["trial_id"].to_pylist(), table["status"].to_pylist(), strict=True):
            done[trial_id] = status
    return done


def consolidate(out: str | Path, *, manifest: pd.DataFrame | None = None) -> None:
    """Rebuild trials/epochs/predictions.parquet from the part files (and write the manifest if given)."""
    out = Path(out)
    for name, schema in FILES.items():
        paths = sorted((out / "parts").glob(f"*.{name}.parquet"))
        tables = [pq.read_table(p, schema=schema) for p in paths if readable(p)]
        # one part per trial, written from its checkpointed history: retries and resumes leave each epoch once
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        write_table(table.replace_schema_metadata(CLASS_METADATA), out / f"{name}.parquet")
    if manifest is not None:
        write_manifest(out, manifest)


def write_manifest(out: str | Path, manifest: pd.DataFrame) -> None:
    write_table(
        to_table(manifest[MANIFEST_SCHEMA.names].to_dict("records"), MANIFEST_SCHEMA), Path(out) / "manifest.parquet"
    )


def data_fingerprint(manifest: pd.DataFrame) -> str:
    """A hash of the prepared data: every image's content hash, class, tier and split (not where it is stored)."""
    rows = manifest[["sha256", "label", "tier", "split"]].astype(str).agg(":".join, axis=1).sort_values()
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


PLAN_FILE = "plan.parquet"
DRY_RUN_PLAN_FILE = "plan.dry-run.parquet"  # a dry run's: never the run's own plan, which --resume compares with


def write_plan(out: str | Path, plan: pd.DataFrame, *, name: str = PLAN_FILE) -> Path:
    """The plan of a run (one row per trial, as `--dry-run` prints it); where it was written."""
    path = Path(out) / name
    write_table(pa.Table.from_pandas(plan, preserve_index=False), path)
    return path


def write_results(out: str | Path, trial_results: list[TrialResult], *, manifest: pd.DataFrame | None = None) -> None:
    """Persist trials and rebuild the consolidated files."""
    for result in trial_results:
        write_trial(out, result)
    consolidate(out, manifest=manifest)


def _mirror_filesystem(uri: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))


def read_mirror(uri: str, name: str) -> pa.Table | None:
    """A result file of the copy at `uri` (as `mirror` wrote it), None when there is none."""
    from pyarrow import fs

    filesystem, base = _mirror_filesystem(uri)
    path = f"{base}/{name}.parquet"
    if filesystem.get_file_info(path).type != fs.FileType.File:
        return None
    return pq.read_table(path, filesystem=filesystem)


def mirror(out: str | Path, uri: str) -> None:
    """Copy the consolidated result files to `uri`: a path, or any pyarrow filesystem URI (s3://bucket/prefix).

    Refused when the copy there holds trials the local folder lacks: a smaller table never replaces a larger one.
    """
    from pyarrow import fs

    filesystem, base = _mirror_filesystem(uri)
    there = read_mirror(uri, "trials")
    local = Path(out) / "trials.parquet"
    if there is not None and there.num_rows:
        here = set(pq.read_table(local, columns=["trial_id"])["trial_id"].to_pylist()) if local.is_file() else set()
        lost = sorted(set(there["trial_id"].to_pylist()) - here)
        if lost:
            raise ValueError(
                f"{uri} holds {len(lost)} trial(s) {out} lacks ({', '.join(lost[:5])}); not replacing it with fewer: "
                f"--resume with this --storage restores them"
            )
    filesystem.create_dir(base, recursive=True)
    for name in ("trials", "epochs", "predictions", "manifest", "plan"):
        source = Path(out) / f"{name}.parquet"
        if source.exists():
            fs.copy_files(str(source), f"{base}/{name}.parquet", destination_filesystem=filesystem)


def restore_from_mirror(out: str | Path, uri: str) -> list[str]:
    """Write part files for every trial the copy at `uri` holds and `out` lacks (a lost local folder); their ids."""
    there = {name: read_mirror(uri, name) for name in FILES}
    if there["trials"] is None:
        return []
    have = finished_trials(out)
    restored = []
    for row in there["trials"].to_pylist():
        trial_id = row["trial_id"]
        if trial_id in have and not (have[trial_id] == "failed" and row["status"] == "ok"):
            continue
        rows = {}
        for name in ("epochs", "predictions"):
            table = there[name]
            rows[name] = [] if table is None else [r for r in table.to_pylist() if r["trial_id"] == trial_id]
        write_trial(out, TrialResult(trial=row, epochs=rows["epochs"], predictions=rows["predictions"]))
        restored.append(trial_id)
    return restored


def read_table(out: str | Path, name: str) -> tuple[pd.DataFrame, dict[bytes, bytes]]:
    """trials, epochs or predictions of a results folder as a DataFrame, with the file's Parquet metadata.

    The consolidated file, else the part files (a run killed before consolidating them); with neither, no rows
    and the schema's columns.
    """
    if name not in FILES:
        raise ValueError(f"unknown result file {name!r}; result files: {', '.join(FILES)}")
    out = Path(out)
    path = out / f"{name}.parquet"
    # a damaged consolidated file (zero bytes after a crash) is derived: the parts it was built from decide
    paths = [path] if readable(path) else [p for p in sorted((out / "parts").glob(f"*.{name}.parquet")) if readable(p)]
    if not paths:
        return FILES[name].empty_table().to_pandas(), {}
    frames = [pd.read_parquet(p).rename(columns=RENAMED) for p in paths]
    metadata = pq.read_schema(paths[0]).metadata or {}
    frames = [f for f in frames if len(f)] or frames[:1]  # a failed trial's empty parts would blur the column types
    return pd.concat(frames, ignore_index=True), metadata


RENAMED = {"best_epoch": "tested_epoch", "best_val_loss": "tested_val_loss"}  # their names in files before 2026-12


def read_plan(out: str | Path) -> pd.DataFrame | None:
    """The plan of a run (as `write_plan` wrote it), None when the results folder has none (or a damaged one: a run
    writes it again before it trains)."""
    path = Path(out) / PLAN_FILE
    return pd.read_parquet(path) if readable(path) else None


def read_manifest(out: str | Path) -> pd.DataFrame | None:
    """The manifest of a results folder, None without one or when it is damaged (a run writes it again)."""
    path = Path(out) / "manifest.parquet"
    return pd.read_parquet(path) if readable(path) else None


def readable(path: Path) -> bool:
    """Whether `path` is a Parquet file that can be read (not missing, not zero bytes, not cut short)."""
    try:
        pq.read_metadata(path)
        return True
    except (OSError, pa.ArrowInvalid):  # missing, truncated, zero bytes
        return False


def decode_classes(metadata: dict[bytes, bytes] | None, columns: Iterable[str]) -> tuple[str, ...]:
    """The class names in label order: stored in a result file's metadata, else named by its score columns."""
    stored = (metadata or {}).get(b"raybench.classes")
    if stored:
        return tuple(json.loads(stored))
    return tuple(c.removeprefix("score_") for c in columns if c.startswith("score_"))


def class_names(path: str | Path) -> list[str]:
    """The class names of a result file (label i is class_names[i])."""
    schema = pq.read_schema(path)
    return list(decode_classes(schema.metadata, schema.names))
