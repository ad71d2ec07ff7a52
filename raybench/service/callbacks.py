"""What the driver does with Tune's trial events: save results, show progress, write the curves.

Part of the Ray edge. A callback never fails a trial: its own errors are printed and kept, and whatever a
trial computed is written locally before anything is copied elsewhere.
"""

from __future__ import annotations

import functools
import math
import shutil
import sys
import time
import traceback
import typing
from pathlib import Path

from ray import tune

from raybench import console, results
from raybench.service import trainable
from raybench.spec import Trial

TENSORBOARD_DIR = "tensorboard"
LOGS_DIR = "logs"  # RESULTS/NAME/logs/TRIAL_ID/{stdout,stderr}: each trial's own output, copied when it ends


def copy_trial_logs(trial, out: Path) -> Path | None:
    """Copy a trial's stdout and stderr (Ray writes them in its working directory on the node it ran on) and Tune's
    error.txt (its failures' tracebacks) into OUT/logs/TRIAL_ID/; that folder, or None where none of them is on
    this machine (a trial on another node of a cluster)."""
    files = []
    try:
        folder = Path(trial.storage.trial_working_directory)
        files += [folder / name for name in ("stdout", "stderr")]
    except Exception:  # no storage context: the trial never started
        pass
    error_file = getattr(trial, "error_file", None)
    if error_file:
        files.append(Path(error_file))
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    target = out / LOGS_DIR / trial.config["trial_id"]
    target.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copyfile(file, target / file.name)
    return target


def never_raises(method):
    """Tune turns a callback's exception into a failed trial or an aborted run: print it instead."""

    @functools.wraps(method)
    def safe(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception:
            print(
                f"raybench: {type(self).__name__}.{method.__name__} failed (the run goes on):\n"
                f"{traceback.format_exc()}",
                file=sys.stderr,
                flush=True,
            )

    return safe


class ResultsCallback(tune.Callback):
    """Writes each ended trial's rows into the results folder at once, and copies the folder to `mirror`.

    The copy is best-effort: a failed one is retried after the next trial and at the end of the run, and
    the run says what could not be copied. A failure row never replaces a trial's ok row.
    """

    def __init__(self, out: Path, specs: dict[str, Trial], *, mirror: str | None = None) -> None:
        self.out, self.specs, self.mirror = out, specs, mirror
        self.mirror_error: str | None = None

    def copy(self) -> None:
        """Mirror the results folder; remember (and say, once per new error) when it fails."""
        if not self.mirror:
            return
        try:
            results.mirror(self.out, self.mirror)
            self.mirror_error = None
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            if message != self.mirror_error:
                print(
                    f"raybench: could not copy the results to {self.mirror} ({message}); they are safe in "
                    f"{self.out}; the copy is retried after the next trial",
                    file=sys.stderr,
                    flush=True,
                )
            self.mirror_error = message

    def save(self, result: results.TrialResult) -> None:
        try:
            results.write_results(self.out, [result])
        except OSError as error:
            if not results.is_disk_full(error):
                raise
            print(
                f"raybench: no space left in {self.out} to save trial {result.trial['trial_id']}: free space and "
                "--resume (its rows are kept in its final checkpoint)",
                file=sys.stderr,
                flush=True,
            )
            return
        self.copy()

    @never_raises
    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trainable.result_from_checkpoint(trial.checkpoint)
        if result is None:
            self.save_failure(trial, "the trial ended without results in its last checkpoint")
        else:
            self.save(result)

    @never_raises
    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_error()
        self.save_failure(trial, str(error) if error is not None else "unknown error (see the trial's error.txt)")

    def save_failure(self, trial, message: str) -> None:
        """A failed row, with the epochs the trial had trained by its last checkpoint."""
        spec = trainable.trial_spec(trial.config, self.specs)
        if results.finished_trials(self.out).get(spec.trial_id) == "ok":
            return  # it trained and was saved; what failed came after (Tune's bookkeeping, a copy)
        history = trainable.history_from_checkpoint(trial.checkpoint)
        row = {**spec.columns(), "epochs": len(history)}
        epochs = [{"trial_id": spec.trial_id, **h} for h in history]
        self.save(results.failed_result(row, message[-4000:], epochs))


class ConsoleCallback(tune.Callback):
    """The grid's live view (console.GridProgress): a status block at most every `every` seconds, a line per end."""

    def __init__(self, progress: console.GridProgress, *, every: float = 30.0, out: Path | None = None) -> None:
        self.progress, self.every, self.shown, self.out = progress, every, -math.inf, out

    def logs(self, trial) -> str:
        """Where the trial's stdout and stderr are now (copied into the results folder where they are here)."""
        copied = copy_trial_logs(trial, self.out) if self.out is not None else None
        if copied is not None:
            return f"{copied}/"
        return f"the stdout and stderr of trial {trial.config['trial_id']} on the node it ran on (Ray's dashboard)"

    def show(self, *, force: bool = False) -> None:
        if force or time.monotonic() - self.shown >= self.every:
            print("\n".join(self.progress.render()), flush=True)
            self.shown = time.monotonic()

    @never_raises
    def on_trial_start(self, iteration, trials, trial, **info):
        self.progress.started_trial(trial.config["trial_id"])

    @never_raises
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("notice"):  # something the trial did about a problem (a damaged checkpoint), said once
            print(f"{trial.config['trial_id']}: {result['notice']}", flush=True)
        if not result.get("done") and "epoch" in result:  # a data-parallel trial's testing report is no epoch
            self.progress.epoch_ended(trial.config["trial_id"], result)

    @never_raises
    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        status = last.get("status", "ok") if last.get("done") else "failed"
        row = last if status == "ok" else {"error": last.get("error") or "ended without results"}
        line = self.progress.trial_ended(trial.config["trial_id"], status, row)
        log = self.logs(trial)
        print(line if status == "ok" else f"{line} (log: {log})", flush=True)

    @never_raises
    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_error()
        line = self.progress.trial_ended(trial.config["trial_id"], "failed", {"error": str(error or "")})
        print(f"{line} (log: {self.logs(trial)})", flush=True)

    @never_raises
    def on_step_end(self, iteration, trials, **info):
        self.show()

    @never_raises
    def on_experiment_end(self, trials, **info):
        self.show(force=True)


def varying_options(trials: typing.Iterable[Trial]) -> list[str]:
    """The options (and batch size) that differ between the grid's trials: the only ones worth a column in
    TensorBoard's HParams table, where constant ones would push the model and tier aside."""
    rows = [t.parameters() for t in trials]
    keys = [k for k in (rows[0] if rows else {}) if k not in CurvesCallback.IDENTITY]
    return [k for k in keys if len({repr(row[k]) for row in rows}) > 1]


class CurvesCallback(tune.Callback):
    """The thesis's curves per trial as TensorBoard event files under OUT/tensorboard/<trial>/, and the HParams view.

    Loss (train and validation on one chart), validation accuracy and learning rate, by epoch; at the end
    the trial's model, tier, pretrained, seed and options with its test metrics, for TensorBoard's HParams tab.
    """

    SCALARS: typing.ClassVar = {
        "train_loss": "loss/train",
        "val_loss": "loss/validation",
        "val_accuracy": "accuracy/validation",
        "lr": "learning_rate/lr",
    }

    IDENTITY = ("model", "tier", "pretrained", "seed")  # HParams' first columns, whatever the grid varies

    def __init__(self, out: Path, specs: dict[str, Trial]) -> None:
        self.root, self.specs, self.writers = out / TENSORBOARD_DIR, specs, {}
        self.hparam_keys = (*self.IDENTITY, *varying_options(specs.values()))

    def writer(self, trial_id: str):
        from tensorboardX import SummaryWriter

        if trial_id not in self.writers:
            # its own file name: add_hparams writes another file in the same folder, which within the same second
            # would otherwise get the same name and replace the curves
            writer = SummaryWriter(str(self.root / trial_id), filename_suffix=".curves")
            writer.add_custom_scalars(
                {
                    "thesis": {
                        "loss (figure 5.x: validation loss by epoch)": ["Multiline", ["loss/train", "loss/validation"]],
                        "validation accuracy": ["Multiline", ["accuracy/validation"]],
                        "learning rate": ["Multiline", ["learning_rate/lr"]],
                    }
                }
            )
            self.writers[trial_id] = writer
        return self.writers[trial_id]

    @never_raises
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("done") or "epoch" not in result:
            return
        writer = self.writer(trial.config["trial_id"])
        for key, tag in self.SCALARS.items():
            if key in result:
                writer.add_scalar(tag, result[key], global_step=int(result["epoch"]))
        writer.flush()

    @never_raises
    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        trial_id = trial.config["trial_id"]
        if last.get("done") and last.get("status", "ok") == "ok":
            hparams = {k: trial.config[k] for k in self.hparam_keys if k in trial.config}
            metrics = {f"test/{k}": float(last[k]) for k in results.METRIC_COLUMNS if k in last}
            self.writer(trial_id).add_hparams(hparams, metrics, name=".")
        self.close(trial_id)

    @never_raises
    def on_trial_error(self, iteration, trials, trial, **info):
        self.close(trial.config["trial_id"])

    def close(self, trial_id: str) -> None:
        writer = self.writers.pop(trial_id, None)
        if writer is not None:
            writer.close()

    @never_raises
    def on_experiment_end(self, trials, **info):
        for trial_id in list(self.writers):
            self.close(trial_id)
