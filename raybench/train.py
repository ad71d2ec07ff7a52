"""The shared training loop of thesis §4.3-4.4 (figures 4.4 and 4.5), for every model.

`python -m raybench.train --model NAME --tier TIER --out DIR` runs one trial in-process, no Ray.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import random
import sys
import time
import typing
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raybench import data as pbc
from raybench import metrics, models, results


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training options; every field can be overridden with `--set key=value`."""

    batch_size: int = 0  # 0: the thesis's batch size for the model (results.csv)
    max_epochs: int = 100  # §4.4: at most 100 epochs
    image_size: int = 352  # §4.2: 352x352 centre crop; smaller sizes crop 352 then resize
    lr: float = 0.1  # §4.3: SGD, no momentum, no dampening, no weight decay
    precision: str = "fp32"  # "fp32" (the thesis) or "bf16" (autocast)
    channels_last: bool = False
    split_seed: int = 0  # the draw of tiers and splits, the same for every trial by default
    es_start: int = 10  # §4.4 fig. 4.5: early stopping considers epochs from 0-based index 10 on
    es_patience: int = 20  # ... stops after 20 epochs without improvement
    es_min_delta: float = 0.1  # ... an improvement is a loss below the best minus 0.1
    eval_batch_size: int = 0  # 0: the training batch size
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    inject_failure: str = ""  # fault-tolerance drills in the service: "once:N" or "always:N" (fail after epoch N)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        for name in ("max_epochs", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        kind, _, at = self.inject_failure.partition(":")
        if self.inject_failure and (kind not in ("once", "always") or not at.isdigit()):
            raise ValueError(f"inject_failure must be '', 'once:N' or 'always:N', got {self.inject_failure!r}")
        if self.batch_size < 0 or self.eval_batch_size < 0:
            raise ValueError("batch_size and eval_batch_size must be >= 0 (0 = the thesis's batch size)")


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def parse_overrides(items: typing.Iterable[str]) -> dict[str, typing.Any]:
    """Turn ["max_epochs=5", "precision=bf16"] into typed TrainConfig overrides; unknown keys are errors."""
    types = typing.get_type_hints(TrainConfig)
    out: dict[str, typing.Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key not in types:
            raise ValueError(f"unknown training option {key!r}; valid keys: {', '.join(config_keys())}")
        out[key] = _convert(key, text.strip(), types[key])
    return out


def _convert(key: str, text: str, kind: type) -> typing.Any:
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} expects true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{key} expects a value of type {kind.__name__}, got {text!r}") from None


def make_config(overrides: dict[str, typing.Any] | None = None) -> TrainConfig:
    unknown = sorted(set(overrides or {}) - set(config_keys()))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; valid keys: {', '.join(config_keys())}")
    return TrainConfig(**(overrides or {}))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class EarlyStopping:
    """Thesis figure 4.5: the rule that both picks the tested checkpoint and stops training.

    From 0-based epoch `start` on, an epoch improves when it is the first one considered or when its
    mean validation loss is strictly below best - min_delta; `patience` epochs without improvement stop.
    """

    def __init__(self, *, start: int = 10, patience: int = 20, min_delta: float = 0.1) -> None:
        self.start, self.patience, self.min_delta = start, patience, min_delta
        self.epochs_seen = 0
        self.best: float | None = None
        self.best_epoch: int | None = None  # 0-based
        self.bad_epochs = 0

    def step(self, val_loss: float) -> bool:
        """Record one epoch's validation loss; True when it is an improvement (to be checkpointed)."""
        epoch = self.epochs_seen
        self.epochs_seen += 1
        if epoch < self.start:
            return False
        if self.best is None or val_loss < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("start", "patience", "min_delta", "epochs_seen", "best", "best_epoch", "bad_epochs")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class DeviceSplit:
    """One split kept on the training device as uint8; batches are normalised there (§4.2)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, *, channels: int, device: torch.device, channels_last: bool = False) -> None:
        self.x = torch.from_numpy(np.array(x, dtype=np.uint8)).to(device)  # a copy: the cache is a read-only memmap
        self.y = torch.from_numpy(np.array(y, dtype=np.int64)).to(device)
        self.channels, self.channels_last = channels, channels_last

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> typing.Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(inputs, labels) in `order` (indices) or in split order; the last batch may be short."""
        for start in range(0, len(self), batch_size):
            index = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
            x = pbc.to_input(self.x[index], self.channels)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.y[index]


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_one_epoch(model: nn.Module, batches: typing.Iterable, optimizer: torch.optim.Optimizer, *, precision: str = "fp32") -> float:
    """One pass of SGD; returns the mean of the per-batch mean losses (fig. 4.4)."""
    model.train()
    total, count = None, 0
    for x, y in batches:
        with _autocast(x.device, precision):
            loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total = loss.detach().float() if total is None else total + loss.detach().float()
        count += 1
    return float(total) / count  # one host synchronisation per epoch


@torch.no_grad()
def evaluate(model: nn.Module, batches: typing.Iterable, *, precision: str = "fp32",
             keep_scores: bool = False) -> tuple[float, float, torch.Tensor | None]:
    """(mean of per-batch mean losses as fig. 4.4, accuracy, softmax scores on the CPU if `keep_scores`)."""
    model.eval()
    total, count, scores, correct, seen = None, 0, [], None, 0
    for x, y in batches:
        with _autocast(x.device, precision):
            logits = model(x)
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, y)
        hits = (logits.argmax(1) == y).sum()
        total = loss if total is None else total + loss
        correct = hits if correct is None else correct + hits
        count += 1
        seen += len(y)
        if keep_scores:
            scores.append(torch.softmax(logits, 1))
    return float(total) / count, int(correct) / seen, torch.cat(scores).cpu() if keep_scores else None


class Trainer:
    """The training state of one trial: model, optimiser, plateau schedule, early stopping, RNGs, history.

    `state_dict()` / `load_state_dict()` capture all of it, so a restored trial continues with exactly
    the numbers of an uninterrupted one (the service's fault tolerance rests on this).
    """

    def __init__(self, model: nn.Module, train: DeviceSplit, val: DeviceSplit, config: TrainConfig, *, seed: int, batch_size: int) -> None:
        self.model, self.train, self.val, self.config = model, train, val, config
        self.batch_size = batch_size
        self.eval_batch_size = config.eval_batch_size or batch_size
        # §4.3: plain SGD; ReduceLROnPlateau with PyTorch's defaults (factor 0.1, patience 10, threshold 1e-4)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0, dampening=0, weight_decay=0)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer)
        self.stopper = EarlyStopping(start=config.es_start, patience=config.es_patience, min_delta=config.es_min_delta)
        self.order_rng = torch.Generator().manual_seed(seed)  # data order, independent of model init
        self.history: list[dict] = []
        self.best_model: dict[str, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.train.y.device

    @property
    def epoch(self) -> int:
        """Epochs trained so far."""
        return len(self.history)

    @property
    def done(self) -> bool:
        return self.epoch >= self.config.max_epochs or self.stopper.should_stop

    def run_epoch(self) -> dict:
        """Train and validate one epoch; returns its row of `epochs.parquet` (without trial_id)."""
        started = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        order = torch.randperm(len(self.train), generator=self.order_rng).to(self.device)
        train_loss = train_one_epoch(self.model, self.train.batches(self.batch_size, order), self.optimizer, precision=self.config.precision)
        val_loss, val_accuracy, _ = evaluate(self.model, self.val.batches(self.eval_batch_size), precision=self.config.precision)
        self.scheduler.step(val_loss)
        improved = self.stopper.step(val_loss)
        if improved:  # fig. 4.5: an improvement is checkpointed and is what gets tested
            self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        row = {
            "epoch": self.epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy,
            "lr": lr, "improved": improved, "epoch_seconds": time.perf_counter() - started,
        }
        self.history.append(row)
        return row

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "stopper": self.stopper.state_dict(),
            "order_rng": self.order_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "history": list(self.history),
            "best_model": self.best_model,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["stopper"])
        self.order_rng.set_state(state["order_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        self.history = list(state["history"])
        self.best_model = state["best_model"]
        self.batch_size = state["batch_size"]

    def save(self, path: str | Path) -> None:
        """Write the whole state to one file, atomically."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))


def fit(trainer: Trainer, *, on_epoch_end: typing.Callable[[dict, Trainer], None] | None = None) -> list[dict]:
    """Run epochs until the early-stopping rule or the epoch cap ends training; returns the history."""
    while not trainer.done:
        row = trainer.run_epoch()
        if on_epoch_end is not None:
            on_epoch_end(row, trainer)
    return trainer.history


def fit_halving_on_oom(build: typing.Callable[[int], Trainer], *, batch_size: int, state: dict | None = None,
                       on_epoch_end: typing.Callable[[dict, Trainer, int], None] | None = None,
                       min_batch_size: int = 1, label: str = "trial") -> Trainer:
    """`fit` a trainer from `build(batch_size)`, restored from `state` if given; on CUDA out-of-memory,
    halve the batch size and start again from scratch, down to `min_batch_size`.

    The thesis did this by hand for the models that did not fit its 10 GB card. `on_epoch_end` also gets
    the epoch this attempt started from.
    """
    while True:
        try:
            trainer = build(batch_size)
            if state is not None:
                trainer.load_state_dict(state)
            start = trainer.epoch
            fit(trainer, on_epoch_end=None if on_epoch_end is None else lambda row, t: on_epoch_end(row, t, start))
            return trainer
        except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
            # a crowded shared GPU can also fail with "CUDA error: out of memory" (context or cuBLAS handle)
            if "out of memory" not in str(error) or batch_size // 2 < min_batch_size:
                raise
            print(f"{label}: CUDA out of memory, starting again with batch size {batch_size // 2}", flush=True)
        batch_size, state, trainer = batch_size // 2, None, None
        gc.collect()  # the failed attempt's tensors are free only once its traceback is gone
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclasses.dataclass(frozen=True)
class Trial:
    """What one training run is: the model, the tier, pretrained or not, the seed and the options."""

    model: str
    tier: str
    pretrained: bool = False
    seed: int = 0
    config: TrainConfig = TrainConfig()

    @property
    def trial_id(self) -> str:
        return f"{self.model}-{self.tier}{'-pretrained' if self.pretrained else ''}-seed{self.seed}"

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or models.thesis_batch_size(self.model, pretrained=self.pretrained)

    def columns(self) -> dict:
        """The columns that identify this trial in trials.parquet and plan.parquet; `options` holds every option."""
        config = self.config
        return {"trial_id": self.trial_id, "model": self.model, "tier": self.tier, "pretrained": self.pretrained,
                "seed": self.seed, "split_seed": config.split_seed, "image_size": config.image_size,
                "precision": config.precision, "channels_last": config.channels_last, "batch_size": self.batch_size,
                "max_epochs": config.max_epochs, "options": json.dumps(dataclasses.asdict(config), sort_keys=True)}


def build_trainer(trial: Trial, prepared: pbc.Prepared, *, cache_dir: str | Path, weights_file: str | Path | None = None,
                  batch_size: int | None = None) -> Trainer:
    """Seed, build the model and put the trial's train and validation splits on the device."""
    config = trial.config
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    seed_everything(trial.seed)
    model = models.build_model(trial.model, image_size=config.image_size, pretrained=trial.pretrained, weights_file=weights_file)
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    channels = models.input_channels(trial.model)

    def split(name: str) -> DeviceSplit:
        x, y = pbc.load_split(prepared, trial.tier, name, image_size=config.image_size, cache_dir=cache_dir)
        return DeviceSplit(x, y, channels=channels, device=device, channels_last=config.channels_last)

    return Trainer(model, split("train"), split("val"), config, seed=trial.seed, batch_size=batch_size or trial.batch_size)


def test_trial(trainer: Trainer, trial: Trial, prepared: pbc.Prepared, *, cache_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reload the tested checkpoint (the last improvement, fig. 4.5) and score the test split."""
    if trainer.best_model is not None:
        trainer.model.load_state_dict(trainer.best_model)
    x, y = pbc.load_split(prepared, trial.tier, "test", image_size=trial.config.image_size, cache_dir=cache_dir)
    test = DeviceSplit(x, y, channels=trainer.train.channels, device=trainer.device, channels_last=trial.config.channels_last)
    _, _, scores = evaluate(trainer.model, test.batches(trainer.eval_batch_size), precision=trial.config.precision, keep_scores=True)
    return scores.numpy(), np.asarray(y)


def finish_trial(trainer: Trainer, trial: Trial, prepared: pbc.Prepared, *, cache_dir: str | Path) -> results.TrialResult:
    """Test the trained trial and assemble its result rows."""
    scores, labels = test_trial(trainer, trial, prepared, cache_dir=cache_dir)
    total, trainable = models.count_parameters(trainer.model)
    history = trainer.history
    stopper = trainer.stopper
    best_epoch = stopper.best_epoch + 1 if stopper.best_epoch is not None else len(history)
    train_seconds = float(sum(row["epoch_seconds"] for row in history))
    tier_rows = prepared.manifest[prepared.manifest.tier == trial.tier]
    test_rows = tier_rows[tier_rows.split == "test"]
    config = trial.config
    row = {
        **trial.columns(), "device": describe_device(trainer.device),
        "parameters": total, "trainable_parameters": trainable, "batch_size": trainer.batch_size,
        "epochs": len(history), "best_epoch": best_epoch,
        "stopped_early": bool(stopper.should_stop and len(history) < config.max_epochs),
        "best_val_loss": stopper.best, "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(len(history), 1),
        "test_accuracy": metrics.accuracy(scores, labels),
        "map_at_5": metrics.map_at_n(scores, labels, 5), "map_at_100": metrics.map_at_n(scores, labels, 100),
        "confusion_matrix": metrics.confusion_matrix(scores, labels, num_classes=len(pbc.CLASSES)).tolist(),
        "n_train": int((tier_rows.split == "train").sum()), "n_val": int((tier_rows.split == "val").sum()),
        "n_test": len(test_rows), "status": "ok", "error": None,
    }
    return results.TrialResult(
        trial=row,
        epochs=[{"trial_id": trial.trial_id, **h} for h in history],
        predictions=results.prediction_rows(trial.trial_id, test_rows.image.tolist(), labels, scores),
    )


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def run_trial(trial: Trial, prepared: pbc.Prepared, *, cache_dir: str | Path, weights_file: str | Path | None = None,
              on_epoch_end: typing.Callable[[dict, Trainer], None] | None = None) -> results.TrialResult:
    """Train, early-stop and test one trial in this process."""
    trainer = build_trainer(trial, prepared, cache_dir=cache_dir, weights_file=weights_file)
    fit(trainer, on_epoch_end=on_epoch_end)
    return finish_trial(trainer, trial, prepared, cache_dir=cache_dir)


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "raybench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raybench.train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(models.MODEL_NAMES)}")
    parser.add_argument("--tier", required=True, help="tiny, small, medium or large (thesis table 4.1)")
    parser.add_argument("--data", help="PBC_dataset_normal_DIB folder, its parent or the .zip (default: the embedded 400-image sample)")
    parser.add_argument("--pretrained", action="store_true", help="ImageNet weights, frozen backbone, new head (table 5.15)")
    parser.add_argument("--weights", help="explicit ImageNet weights file for --pretrained (default: torchvision's cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"training option; keys: {', '.join(config_keys())}")
    parser.add_argument("--cache", default=str(default_cache_dir()), help="decode-once image cache folder (default: %(default)s)")
    parser.add_argument("--out", required=True, help="folder for trials/epochs/predictions/manifest.parquet")
    args = parser.parse_args(argv)
    try:
        config = make_config(parse_overrides(args.set))
        models.check_model_name(args.model, pretrained=args.pretrained)
        trial = Trial(args.model, args.tier, pretrained=args.pretrained, seed=args.seed, config=config)
        prepared = pbc.prepare(args.data, seed=config.split_seed, tiers=pbc.tiers_for(args.tier))
    except ValueError as error:
        parser.error(str(error))
    print(prepared.report, flush=True)

    def show(row: dict, trainer: Trainer) -> None:
        mark = " *" if row["improved"] else ""
        print(f"epoch {row['epoch']:3d}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
              f"val_acc {row['val_accuracy']:.3f}  lr {row['lr']:.0e}  {row['epoch_seconds']:.1f}s{mark}", flush=True)

    result = run_trial(trial, prepared, cache_dir=args.cache, weights_file=args.weights, on_epoch_end=show)
    out = Path(args.out)
    results.write_results(out, [result], manifest=prepared.manifest[prepared.manifest.tier == trial.tier])
    t = result.trial
    print(f"{trial.trial_id}: {t['epochs']} epochs (tested epoch {t['best_epoch']}), test accuracy {t['test_accuracy']:.3f}, "
          f"mAP@5 {t['map_at_5']:.3f}, {t['train_seconds']:.1f}s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
