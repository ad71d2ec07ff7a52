"""The live view of a grid on the console: how far it has come, how long it will take, what each running trial does.

Ray-free: the Ray edge (service.callbacks) feeds it trial events; it returns the lines to print. The ETA is a
range, from what was measured: each unfinished trial's remaining epochs (at least until its early stopping could first
stop it, at most its epoch cap) times its seconds per epoch (measured on the trial itself, else on the same
model, else on any trial scaled by training images and parameters), spread over the trials running at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import typing
from pathlib import Path

import pandas as pd

from raybench import spec
from raybench.stopping import EarlyStopping


def duration(seconds: float) -> str:
    """7s, 4m05s, 3h12m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclasses.dataclass
class TrialState:
    """What the console knows of one trial."""

    trial_id: str
    model: str
    work: float  # training images x parameters: scales a measured epoch time to another trial (roughly)
    min_epochs: int  # the first epoch at which early stopping can end it
    max_epochs: int
    status: str = "pending"  # pending, running, ok, failed, diverged
    epoch: int = 0
    seconds_per_epoch: float | None = None
    last: dict = dataclasses.field(default_factory=dict)


class GridProgress:
    """Counts, ETA and per-trial lines of a running grid, built from plan.parquet's rows."""

    def __init__(self, plan: pd.DataFrame, *, train_images: dict[str, int], clock=time.monotonic) -> None:
        self.clock, self.started = clock, clock()
        self.trials: dict[str, TrialState] = {}
        for row in plan.itertuples():
            first_stop = EarlyStopping.from_config(spec.make_config(_options(row))).earliest_stop
            self.trials[row.trial_id] = TrialState(
                row.trial_id,
                row.model,
                work=train_images.get(row.tier, 1) * max(row.parameters, 1),
                min_epochs=min(first_stop, row.max_epochs),
                max_epochs=row.max_epochs,
            )

    def started_trial(self, trial_id: str) -> None:
        self.trials[trial_id].status = "running"

    def epoch_ended(self, trial_id: str, metrics: dict) -> None:
        state = self.trials[trial_id]
        state.status, state.epoch, state.last = "running", int(metrics.get("epoch", state.epoch)), metrics
        if metrics.get("epoch_seconds"):  # a running mean: the first epoch also compiles and warms caches
            n = state.epoch
            old = state.seconds_per_epoch or metrics["epoch_seconds"]
            state.seconds_per_epoch = old + (metrics["epoch_seconds"] - old) / max(n, 1)

    def trial_ended(self, trial_id: str, status: str, row: dict | None = None) -> str:
        """Mark it ended; the one line that says so."""
        state = self.trials[trial_id]
        state.status = status
        if status == "ok" and row:
            return (
                f"done {trial_id}: {row['epochs']} epochs (tested epoch {row['tested_epoch']}), "
                f"test accuracy {row['test_accuracy']:.3f}, {duration(row['train_seconds'])}"
            )
        message = (row or {}).get("error") or ""
        return f"{status.upper()} {trial_id}" + (f": {message.strip().splitlines()[-1]}" if message.strip() else "")

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "running": 0, "pending": 0, "failed": 0}
        for state in self.trials.values():
            key = {"ok": "done", "diverged": "failed"}.get(state.status, state.status)
            out[key] += 1
        return out

    def _epoch_seconds(self, state: TrialState) -> float | None:
        if state.seconds_per_epoch:
            return state.seconds_per_epoch
        measured = [s for s in self.trials.values() if s.seconds_per_epoch]
        same = [s for s in measured if s.model == state.model] or measured
        if not same:
            return None
        return sum(s.seconds_per_epoch / s.work for s in same) / len(same) * state.work

    def eta(self) -> tuple[float, float] | None:
        """(soonest, latest) seconds until the grid ends, or None before any epoch was measured."""
        low = high = 0.0
        for state in self.trials.values():
            if state.status not in ("pending", "running"):
                continue
            per_epoch = self._epoch_seconds(state)
            if per_epoch is None:
                return None
            low += max(state.min_epochs - state.epoch, 1) * per_epoch
            high += max(state.max_epochs - state.epoch, 0) * per_epoch
        parallel = max(self.counts()["running"], 1)
        return low / parallel, high / parallel

    def render(self) -> list[str]:
        """The status block: one summary line, then one line per running trial."""
        c = self.counts()
        eta = self.eta()
        if all(s.status not in ("pending", "running") for s in self.trials.values()):
            eta_text = "ETA 0s"
        else:
            eta_text = "ETA after the first epoch" if eta is None else f"ETA {duration(eta[0])}-{duration(eta[1])}"
        elapsed = duration(self.clock() - self.started)
        lines = [
            f"[{elapsed}] {c['done']}/{len(self.trials)} done, {c['running']} running, {c['pending']} pending, "
            f"{c['failed']} failed; {eta_text}"
        ]
        for state in self.trials.values():
            if state.status != "running":
                continue
            m = state.last
            if not m:
                lines.append(f"  {state.trial_id:<34} starting")
                continue
            lines.append(
                f"  {state.trial_id:<34} epoch {state.epoch:3d}/{state.max_epochs}  val_loss "
                f"{m.get('val_loss', math.nan):.4f}  val_acc {m.get('val_accuracy', math.nan):.3f}  "
                f"lr {m.get('lr', math.nan):.0e}"
            )
        return lines


def _options(row) -> dict:
    return json.loads(row.options) if isinstance(getattr(row, "options", None), str) else {}


def final_table(trials: pd.DataFrame, *, tier_order: typing.Sequence[str] = ()) -> list[str]:
    """The end of a run: one row per trial, by tier (the grid's order) then test accuracy, best first; the tested
    epoch, accuracy and mAP to 3 decimals, the training time; a column only where it says something."""
    if trials.empty:
        return []
    frame = trials.copy()
    order = {t: i for i, t in enumerate(dict.fromkeys([*tier_order, *frame.tier]))}
    frame["_tier"] = frame.tier.map(order)
    frame = frame.sort_values(["_tier", "test_accuracy"], ascending=[True, False], na_position="last")
    columns: list[tuple[str, typing.Callable]] = [("tier", str), ("model", str)]
    if frame.pretrained.any():
        columns.append(("pretrained", lambda v: "yes" if v else ""))
    if (frame.variant.fillna("") != "").any():
        columns.append(("variant", str))
    if frame.seed.nunique() > 1:
        columns.append(("seed", str))
    if (frame.status != "ok").any():
        columns.append(("status", str))

    def number(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    def whole(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v)}"

    columns += [
        ("epochs", whole),
        ("tested_epoch", whole),
        ("test_accuracy", number),
        ("map_at_5", number),
        ("map_at_100", number),
        ("train_seconds", lambda v: "" if v is None or v != v else duration(v)),
    ]
    titles = {"tested_epoch": "tested epoch", "test_accuracy": "test accuracy", "map_at_5": "mAP@5",
              "map_at_100": "mAP@100", "train_seconds": "time"}  # fmt: skip
    cells = [[fmt(getattr(row, name)) for name, fmt in columns] for row in frame.itertuples()]
    heads = [titles.get(name, name) for name, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    left = 2 + ("pretrained" in dict(columns)) + ("variant" in dict(columns))  # text columns, left-aligned

    def line(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return [line(heads), *(line(c) for c in cells)]


def next_commands(out: Path, *, tensorboard_dir: str = "tensorboard", logs: str = "logs") -> list[str]:
    """What to look at next: the report (and the file it writes), the curves, the tables, each trial's output."""
    return [
        f"raybench report {out}   # writes {out / 'report' / 'report.html'}",
        f"tensorboard --logdir {out / tensorboard_dir}",
        f"python -c \"import pandas as pd; print(pd.read_parquet('{out / 'trials.parquet'}'))\"",
        f"each trial's stdout and stderr: {out / logs}/TRIAL_ID/",
    ]
