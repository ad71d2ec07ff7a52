"""One trial from start to end: build its model and splits, fit (halving the batch on CUDA out-of-memory),
test the tested checkpoint, and assemble its result rows. `train_trial` does all of it in this process; the
Ray trainable (service.trainable) does the same steps with checkpoints and reports in between.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import socket
import typing
from pathlib import Path

import numpy as np
import torch

from raybench import catalog, distributed, metrics, models, resources, results
from raybench import data as pbc
from raybench.batches import DeviceSplit, channel_statistics
from raybench.compiled import is_out_of_memory
from raybench.loop import Trainer, fit, resolve_device, seed_everything, set_precision, utc_now
from raybench.spec import Trial, input_parts


@dataclasses.dataclass(frozen=True)
class TrialData:
    """What a trial reads: the prepared data (manifest, tiers, splits) and this node's decode-once image cache."""

    prepared: pbc.Prepared
    cache_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())

    def split(self, trial: Trial, split: str, *, device: torch.device, like: DeviceSplit | None = None) -> DeviceSplit:
        """A split of the trial's tier on `device`, grey or colour (config.input), with the central cell's mask as a
        channel or multiplied in (§7.2), normalised as `like` (the training split) is, else with the thesis's mean
        and std."""
        config = trial.config
        image, use_mask = input_parts(config.input)
        where = {"image_size": config.image_size, "cache_dir": self.cache_dir}
        x, y = pbc.load_split(self.prepared, trial.tier, split, colour=image == "colour", **where)
        mask = pbc.load_masks(self.prepared, trial.tier, split, **where)[0] if use_mask else None
        if use_mask == "multiply":  # the background black, the cell as it was
            x, mask = x * (mask[:, None] if x.ndim == 4 else mask), None
        if split == "val" and config.val_order == "shuffled":
            order = val_order(len(y), split_seed=config.split_seed)
            x, y = x[order], y[order]
            mask = None if mask is None else mask[order]
        norm = {"mean": like.mean, "std": like.std} if like is not None else {}
        return DeviceSplit(
            x, y, channels=trial.channels, device=device, channels_last=config.channels_last, mask=mask, **norm
        )


def val_order(n: int, *, split_seed: int) -> np.ndarray:
    """The validation split's shuffled order (val_order="shuffled"): a stratified split drawn the usual way (e.g.
    scikit-learn's shuffled train_test_split) is in random order, the same for every trial of a split seed."""
    return np.random.default_rng([split_seed, n]).permutation(n)


def fit_halving_on_oom(
    build: typing.Callable[..., Trainer],
    *,
    batch_size: int,
    state: dict | None = None,
    on_epoch_end: typing.Callable[[dict, Trainer, int], None] | None = None,
    min_batch_size: int = 1,
    label: str = "trial",
) -> Trainer:
    """`fit` a trainer from `build(batch_size)`, restored from `state` if given; on CUDA out-of-memory,
    halve the batch size and start again from scratch, down to `min_batch_size`.

    The thesis did this by hand for the models that did not fit its 10 GB card. Compiled steps out of memory are
    first tried again eager at the same batch (`build(batch_size, step="eager")`): a CUDA graph's capture
    cannot release cached blocks, so it can run out where eager steps fit. `on_epoch_end` also gets the epoch this
    attempt started from.
    """
    step, note = None, ""
    while True:
        trainer = None
        try:
            trainer = build(batch_size) if step is None else build(batch_size, step=step)
            trainer.step_note = note
            if state is not None:
                trainer.load_state_dict(state)
            start = trainer.epoch
            fit(
                trainer,
                on_epoch_end=None if on_epoch_end is None else lambda row, t, start=start: on_epoch_end(row, t, start),
            )
            return trainer
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            # a crowded shared GPU can also fail with "CUDA error: out of memory" (context or cuBLAS handle)
            if not is_out_of_memory(error):
                raise
            if trainer is not None and trainer.compiled:
                step, note = "eager", f"CUDA out of memory under compiled steps at batch size {batch_size}"
                print(f"{label}: {note}, starting again with eager steps", flush=True)
            elif batch_size // 2 < min_batch_size:
                raise
            else:
                print(f"{label}: CUDA out of memory, starting again with batch size {batch_size // 2}", flush=True)
                batch_size = batch_size // 2
        state, trainer = None, None
        gc.collect()  # the failed attempt's tensors are free only once its traceback is gone
        torch._dynamo.reset()  # and its compiled graphs and CUDA graph pools once the compiler lets them go
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def build_trainer(
    trial: Trial,
    data: TrialData,
    *,
    weights_file: str | Path | None = None,
    batch_size: int | None = None,
    step: str | None = None,
    group: distributed.Group | None = None,
    device: torch.device | None = None,
) -> Trainer:
    """Seed, build the model and put the trial's train and validation splits on the device (`step` overrides
    the config's; `device`, config.device's). `group`: this worker's place in a data-parallel trial (its
    BatchNorm then uses the global batch's statistics)."""
    config = trial.config
    device = device or resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    seed_everything(trial.seed)
    if device.type == "cuda":  # the peak recorded in the results is this attempt's
        torch.cuda.reset_peak_memory_stats(device)
    set_precision(config.precision, device)
    # compiled steps (step="compiled") keep their kernels beside the image cache, so a model's
    # later trials on this node (its other tiers, seeds) reuse them instead of compiling again
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(data.cache_dir / "inductor"))
    model = models.build_model(
        trial.model,
        image_size=config.image_size,
        pretrained=trial.pretrained,
        weights_file=weights_file,
        channels=trial.channels,
        finetune=config.finetune,
        mask_channel=input_parts(config.input)[1] == "channel",
    )
    if trial.init_from:  # an earlier trial's tested weights (§7.2, pretraining on the PBC data itself)
        models.load_weights(model, trial.init_from, name=trial.trial_id)
    if group is not None:
        model = distributed.global_batchnorm(model)
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    train = data.split(trial, "train", device=device)
    if config.normalise == "measured":  # the training split's own statistics normalise every split
        train.mean, train.std = channel_statistics(train.x)
    val = data.split(trial, "val", device=device, like=train)
    return Trainer(
        model,
        train,
        val,
        config,
        seed=trial.seed,
        batch_size=batch_size or trial.batch_size,
        base_batch_size=catalog.batch_size(trial.model, pretrained=trial.pretrained),  # the rate 0.1 is for (§6)
        step=step,
        group=group,
    )


def score_test_split(trainer: Trainer, trial: Trial, data: TrialData) -> tuple[np.ndarray, np.ndarray]:
    """Reload the tested checkpoint (the last improvement, fig. 4.5, or config.tested's); its raw outputs (logits)
    on the test split."""
    if trainer.tested_model is not None:
        trainer.model.load_state_dict(trainer.tested_model)
    test = data.split(trial, "test", device=trainer.device, like=trainer.train)
    y = test.y.cpu()
    _, _, logits = trainer.evaluate(test, keep_logits=True)
    return logits.numpy(), np.asarray(y)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a trial ran, for its row: the Ray node, the GPU share Ray gave it and how it shared that GPU."""

    node: str | None = None  # None: trained in this process, without Ray
    gpu_fraction: float | None = None
    gpu_sharing: str | None = None  # "mps" or "time-sliced" for a share below a whole GPU, else ""


def test_trial(
    trainer: Trainer, trial: Trial, data: TrialData, *, placement: Placement = Placement()
) -> results.TrialResult:
    """Test the trained trial's tested checkpoint and assemble all of its result rows (the one place they are built)."""
    prepared = data.prepared
    logits, labels = score_test_split(trainer, trial, data)
    scores = torch.softmax(torch.from_numpy(logits), 1).numpy()
    classes_predicted = metrics.classes_predicted(scores)
    total, trainable = models.count_parameters(trainer.model)
    cuda = trainer.device.type == "cuda"
    history = trainer.history
    stopper = trainer.stopper
    tested_epoch = stopper.tested_epoch + 1 if stopper.tested_epoch is not None else len(history)
    train_seconds = float(sum(row["epoch_seconds"] for row in history))
    tier_rows = prepared.manifest[prepared.manifest.tier == trial.tier]
    test_rows = tier_rows[tier_rows.split == "test"]
    config = trial.config
    row = {
        **trial.columns(),
        "architecture": catalog.configuration(trial.model).architecture,  # a grid's own model's too, for the report
        "device": describe_device(trainer.device),
        "step": trainer.step_ran,
        "step_fallback": trainer.step_failure,
        "compile_seconds": trainer.compile_seconds,
        "estimated_gpu_memory_gb": resources.estimate_gpu_memory_gb(trial),
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(trainer.device) / 1e9 if cuda else None,
        "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved(trainer.device) / 1e9 if cuda else None,
        "parameters": total,
        "trainable_parameters": trainable,
        "batch_size": trainer.batch_size,
        "epochs": len(history),
        "tested_epoch": tested_epoch,
        "stopped_early": bool(stopper.should_stop and len(history) < config.max_epochs),
        "tested_val_loss": stopper.tested_loss,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(len(history), 1),
        "test_accuracy": metrics.accuracy(scores, labels),
        # §5.1.1: per class, the images predicted as it, ranked by the raw output
        "map_at_5": metrics.map_at_n(logits, labels, 5),
        "map_at_100": metrics.map_at_n(logits, labels, 100),
        "confusion_matrix": metrics.confusion_matrix(scores, labels, num_classes=len(catalog.CLASSES)).tolist(),
        "classes_predicted": classes_predicted,
        "collapsed": classes_predicted <= metrics.COLLAPSE_CLASSES,
        "n_train": int((tier_rows.split == "train").sum()),
        "n_val": int((tier_rows.split == "val").sum()),
        "n_test": len(test_rows),
        # identical images (kept, as the thesis kept them) with one copy in train and one in test: seen while training
        "duplicate_pairs_train_test": pbc.straddling_pairs(tier_rows)["train/test"],
        # a loss that is no longer finite ends the trial; its last improvement (if any) is still what is tested
        "status": "ok" if trainer.diverged is None else "diverged",
        "error": trainer.diverged,
        **dataclasses.asdict(placement),
        "host": socket.gethostname(),
        "started_at": history[0].get("started_at") if history else None,
        "ended_at": utc_now(),
    }
    return results.TrialResult(
        trial=row,
        epochs=[{"trial_id": trial.trial_id, **h} for h in history],
        predictions=results.prediction_rows(trial.trial_id, test_rows.image.tolist(), labels, scores, logits=logits),
        # the tested weights (score_test_split loaded them), for a later trial's init_from
        weights=models.weight_arrays(trainer.model) if trial.save_weights else None,
    )


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def train_trial(
    trial: Trial,
    data: TrialData,
    *,
    weights_file: str | Path | None = None,
    on_epoch_end: typing.Callable[[dict, Trainer], None] | None = None,
) -> results.TrialResult:
    """Train, early-stop and test one trial in this process (no Ray)."""
    trainer = build_trainer(trial, data, weights_file=weights_file)
    fit(trainer, on_epoch_end=on_epoch_end)
    return test_trial(trainer, trial, data)


def default_cache_dir() -> Path:
    return pbc.DEFAULT_CACHE_DIR.expanduser()
