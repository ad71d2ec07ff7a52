"""The shared training loop of thesis §4.3-4.4 (figures 4.4 and 4.5), for every model.

Two functions and a loop: `train_one_epoch`, `evaluate`, and `fit` over a `Trainer` that holds one trial's
whole training state (model, optimiser, plateau schedule, early stopping, RNGs, history). The splits live on the
training device as uint8 and are normalised (and training batches augmented) there. Runs on the CPU without Ray;
knows nothing of results, grids or reports. The thesis's loop is the default; chapter 7's future work are options
(spec.TrainConfig): the optimiser, the plateau schedule, rate scaling, the early-stopping rule and the tested
checkpoint, augmentation and the normalisation.
"""

from __future__ import annotations

import datetime
import math
import random
import socket
import time
import typing
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raybench import distributed, files
from raybench.batches import Augmentation, DeviceSplit
from raybench.compiled import CompiledStep, Compiler, reset_compiler, torch_compiler
from raybench.spec import TrainConfig
from raybench.stopping import EarlyStopping


def resolve_device(name: str) -> torch.device:
    """ "auto" is CUDA when present, else the CPU; any other name is torch's."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


PRECISIONS = {  # precision -> (TF32 convolutions, TF32 matrix products, bf16 autocast), on CUDA
    # PyTorch 1.11's defaults, and so the thesis's RTX 3080 runs (catalog.LOOP_DEFAULTS): TF32 convolutions and matrix
    # products (pytorch/pytorch#67384). PyTorch 1.12 (June 2022) made matrix products IEEE fp32: that is "fp32".
    "tf32": (True, True, False),
    "fp32": (True, False, False),
    "bf16": (True, True, True),
}


def set_precision(precision: str, device: torch.device) -> None:
    """Set cuDNN's and cuBLAS's float32 modes for `precision` (they are process-wide; the CPU has none)."""
    if device.type != "cuda":
        return
    conv, matmul, _ = PRECISIONS[precision]
    torch.backends.cudnn.allow_tf32 = conv
    torch.backends.cuda.matmul.allow_tf32 = matmul


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=PRECISIONS[precision][2])


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, precision: str):
    """Forward, backward and one SGD update on a batch; its mean loss, on the device."""
    with _autocast(x.device, precision):
        loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach().float()


def eval_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str):
    """(per-image losses, logits) of a batch, in float32."""
    with _autocast(x.device, precision):
        logits = model(x).float()
    return nn.functional.cross_entropy(logits, y, reduction="none"), logits


def train_one_epoch(
    model: nn.Module,
    batches: typing.Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    precision: str = "fp32",
    step: typing.Callable = train_step,
) -> float:
    """One pass of SGD; returns the mean of the per-batch mean losses (fig. 4.4)."""
    model.train()
    total, count = None, 0
    for x, y in batches:
        loss = step(model, optimizer, x, y, precision)
        # a CUDA graph's replay reuses its output's memory: what is kept past the next step is a copy
        total = loss.clone() if total is None else total + loss
        count += 1
    return float(total) / count  # one host synchronisation per epoch


def train_one_epoch_parted(
    model: nn.Module,
    batches: typing.Iterable[tuple[torch.Tensor, torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    *,
    group: distributed.Group,
    precision: str = "fp32",
) -> float:
    """One pass of SGD over (this worker's part, its labels, the global batch's size); the mean of the global
    batches' mean losses (fig. 4.4), as train_one_epoch returns it.

    Each worker's loss is its part's summed loss over the global batch's size, times the number of workers:
    DistributedDataParallel's average of the gradients is then the global batch's mean gradient.
    """
    model.train()
    total, count = None, 0
    for x, y, n in batches:
        with _autocast(x.device, precision):
            part_sum = nn.functional.cross_entropy(model(x), y, reduction="sum") / n
        optimizer.zero_grad(set_to_none=True)
        (part_sum * group.world).backward()
        optimizer.step()
        loss = part_sum.detach().float()
        total = loss if total is None else total + loss
        count += 1
    return float(group.sum(total)) / count  # one collective per epoch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: typing.Iterable,
    *,
    precision: str = "fp32",
    loss_batch_size: int | None = None,
    keep_scores: bool = False,
    keep_logits: bool = False,
    step: typing.Callable = eval_step,
    gather: typing.Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float, torch.Tensor | None]:
    """(loss, accuracy, softmax scores if `keep_scores` or raw outputs if `keep_logits`, on the CPU).

    The loss is the thesis's (fig. 4.4) with `loss_batch_size`: the mean of the per-batch mean losses over
    consecutive batches of that many images in split order, the last one short (its images weigh more), as its
    code evaluated in training-size batches; without it, the mean over images. Either way it is computed from
    per-image losses, so the evaluation batches can be as large as memory allows without changing it. With
    `gather` (distributed.Group.gather), `batches` are this worker's part of the split and every worker's
    per-image losses, hits and outputs are gathered first: the numbers are the whole split's.
    """
    model.eval()
    losses, outputs, hits = [], [], []
    for x, y in batches:
        per_image, logits = step(model, x, y, precision)
        losses.append(per_image.clone())  # copies: a CUDA graph's next replay overwrites its outputs
        hits.append(logits.argmax(1) == y)
        if keep_scores or keep_logits:
            outputs.append(logits.clone() if keep_logits else torch.softmax(logits, 1))
    losses, hits = torch.cat(losses), torch.cat(hits)
    kept = torch.cat(outputs) if outputs else None
    if gather is not None:
        losses, hits = gather(losses), gather(hits.to(torch.uint8))
        kept = None if kept is None else gather(kept)
    if loss_batch_size:
        means = torch.stack([chunk.mean() for chunk in losses.split(loss_batch_size)])
        loss = float(means.sum()) / len(means)
    else:
        loss = float(losses.mean())
    return loss, int(hits.sum()) / len(losses), None if kept is None else kept.cpu()


MOMENTUM = 0.9  # optimizer="momentum" and "nesterov"
ADAMW_WEIGHT_DECAY = 0.01  # optimizer="adamw": PyTorch's default (decoupled from the gradient, so it is no L2 loss)


def build_optimizer(
    name: str, params: typing.Iterable[nn.Parameter], *, lr: float | torch.Tensor
) -> torch.optim.Optimizer:
    """The optimiser `name` of spec.OPTIMIZERS; "sgd" is the thesis's: no momentum, dampening or weight decay (§4.3)."""
    if name == "adamw":
        # a tensor rate (compiled steps) needs the capturable form on a GPU, the single-tensor one elsewhere
        tensor_lr = isinstance(lr, torch.Tensor)
        capturable = tensor_lr and lr.device.type != "cpu"
        foreach = None if capturable or not tensor_lr else False
        return torch.optim.AdamW(params, lr=lr, weight_decay=ADAMW_WEIGHT_DECAY, capturable=capturable, foreach=foreach)
    if name not in ("sgd", "momentum", "nesterov"):
        raise ValueError(f"optimizer must be one of sgd, momentum, nesterov, adamw, got {name!r}")
    momentum = 0 if name == "sgd" else MOMENTUM
    return torch.optim.SGD(params, lr=lr, momentum=momentum, dampening=0, weight_decay=0, nesterov=name == "nesterov")


def scaled_lr(lr: float, *, batch_size: int, base_batch_size: int, scaling: str) -> float:
    """The rate for a batch of k = batch_size / base_batch_size times the thesis's: lr x sqrt(k) or lr x k.

    §6 for smaller batches (k < 1, also a batch halved after CUDA out of memory); §7.2's larger batches across GPUs
    (k > 1, data-parallel trials) the same way up (the linear rule of Goyal et al., 2017). "none" (the thesis's)
    keeps `lr`.
    """
    k = batch_size / base_batch_size
    if scaling == "none" or k == 1:
        return lr
    return lr * (math.sqrt(k) if scaling == "sqrt" else k)


def utc_now() -> str:
    """The time now, UTC, to the second (ISO 8601)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class Trainer:
    """The training state of one trial: model, optimiser, plateau schedule, early stopping, RNGs, history.

    `state_dict()` / `load_state_dict()` capture all of it, so a restored trial continues with exactly
    the numbers of an uninterrupted one (the service's fault tolerance rests on this). `base_batch_size` is the
    batch the rate `config.lr` is for (the thesis's for the model; `batch_size` when not given): with
    `config.lr_scaling`, a smaller batch trains at a scaled rate.
    """

    def __init__(
        self,
        model: nn.Module,
        train: DeviceSplit,
        val: DeviceSplit,
        config: TrainConfig,
        *,
        seed: int,
        batch_size: int,
        base_batch_size: int | None = None,
        step: str | None = None,
        compiler: Compiler | None = None,
        group: distributed.Group | None = None,
    ) -> None:
        self.model, self.train, self.val, self.config = model, train, val, config
        # data-parallel (config.workers > 1): this process's distributed.Group; the model trains under
        # DistributedDataParallel (`self.ddp`), `self.model` stays the plain module (its checkpoints are one worker's)
        self.group = group
        self.ddp = None
        if group is not None:
            self.ddp = distributed.wrap(model, self.device)
        self.batch_size = batch_size
        cuda = self.device.type == "cuda"
        # evaluation batches do not change the numbers (see evaluate): on a GPU, larger ones take fewer launches
        self.eval_batch_size = config.eval_batch_size or (min(4 * batch_size, 256) if cuda else batch_size)
        # "auto" is eager everywhere: eager steps are what has run the thesis's trials on a GPU; compiled ones
        # only where asked (`step` overrides the config's, as the out-of-memory retry does)
        self.compiled = (step or config.step) == "compiled"
        self.step_note = ""  # why the steps that ran are not the ones asked for, for the trial's row
        # §4.3: plain SGD (config.optimizer); ReduceLROnPlateau with PyTorch's defaults (factor 0.1, patience 10,
        # threshold 1e-4: config.plateau_*). Compiled, the rate is a tensor, so that the plateau schedule lowering
        # it needs no new graph.
        lr = scaled_lr(
            config.lr, batch_size=batch_size, base_batch_size=base_batch_size or batch_size, scaling=config.lr_scaling
        )
        lr = torch.tensor(lr, dtype=torch.float64, device=self.device) if self.compiled else lr
        self.optimizer = build_optimizer(config.optimizer, model.parameters(), lr=lr)
        self.train_step, self.eval_step = train_step, eval_step
        if self.compiled:
            reset_compiler(compile_threads=torch.get_num_threads())
            compiler = compiler or torch_compiler(self.device)
            self.train_step = CompiledStep(train_step, batch_size=batch_size, compiler=compiler, name="training step")
            self.eval_step = CompiledStep(
                eval_step, batch_size=self.eval_batch_size, compiler=compiler, name="evaluation step"
            )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            threshold=config.plateau_threshold,
        )
        self.stopper = EarlyStopping.from_config(config)
        self.order_rng = torch.Generator().manual_seed(seed)  # data order, independent of model init
        # augmentation draws from its own stream, spawned from the same seed: augmenting leaves the data order as it is
        spawned = int(np.random.SeedSequence(seed % 2**64, spawn_key=(1,)).generate_state(1, np.uint64)[0]) >> 1
        self.augment_rng = torch.Generator().manual_seed(spawned)
        self.history: list[dict] = []
        self.tested_model: dict[str, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.train.y.device

    @property
    def step_ran(self) -> str:
        """The steps that actually ran: "compiled" (where asked and nothing fell back) or "eager"."""
        steps = (self.train_step, self.eval_step)
        return "compiled" if all(isinstance(s, CompiledStep) and s.failure is None for s in steps) else "eager"

    @property
    def step_failure(self) -> str:
        """Why a compiled step fell back to eager, or why the trial trains eager although compiled was asked."""
        failures = [f"{s.name}: {s.failure}" for s in (self.train_step, self.eval_step) if getattr(s, "failure", None)]
        return "; ".join([self.step_note, *failures] if self.step_note else failures)

    @property
    def compile_seconds(self) -> float:
        """Seconds the compiling calls of this trainer's steps took (0 for eager steps)."""
        return sum(getattr(s, "compile_seconds", 0.0) for s in (self.train_step, self.eval_step))

    @property
    def epoch(self) -> int:
        """Epochs trained so far."""
        return len(self.history)

    @property
    def diverged(self) -> str | None:
        """The first epoch whose training or validation loss was not finite (the trial is flagged), else None."""
        for row in self.history:
            for key in ("train_loss", "val_loss"):
                if key in row and not math.isfinite(row[key]):
                    ended = " (the weights are not finite: training ended)" if not self.weights_finite else ""
                    return f"the {key.replace('_', ' ')} is not finite ({row[key]}) in epoch {row['epoch']}{ended}"
        return None

    @property
    def weights_finite(self) -> bool:
        """Whether every parameter and buffer is finite; once not, no later epoch can change anything (NaN stays)."""
        return all(bool(torch.isfinite(t).all()) for t in self.model.state_dict().values() if t.is_floating_point())

    @property
    def done(self) -> bool:
        if self.epoch >= self.config.max_epochs or self.stopper.should_stop:
            return True
        # the thesis's loop had no check: a non-finite loss never improves and training goes on (nonfinite_stop)
        last = self.history[-1] if self.history else {}
        if not all(math.isfinite(last[k]) for k in ("train_loss", "val_loss") if k in last):
            return self.config.nonfinite_stop == "loss" or not self.weights_finite
        return False

    def run_epoch(self) -> dict:
        """Train and validate one epoch; returns its row of `epochs.parquet` (without trial_id)."""
        started, compiling, began = time.perf_counter(), self.compile_seconds, utc_now()
        lr = float(self.optimizer.param_groups[0]["lr"])
        order = torch.randperm(len(self.train), generator=self.order_rng).to(self.device)
        precision = self.config.precision
        if self.group is None:
            batches = self.train.batches(self.batch_size, order, augment=self._augmentation())
            train_loss = train_one_epoch(self.model, batches, self.optimizer, precision=precision, step=self.train_step)
        else:
            batches = self.train.batches(self.batch_size, order, augment=self._augmentation(), part=self.group.part)
            train_loss = train_one_epoch_parted(
                self.ddp, batches, self.optimizer, group=self.group, precision=precision
            )
        val_loss, val_accuracy, _ = self.evaluate(
            self.val, loss_batch_size=self.batch_size if self.config.val_loss == "batches" else None
        )
        self.scheduler.step(val_loss)
        improved = self.stopper.step(val_loss)
        if improved:  # fig. 4.5: an improvement is checkpointed and is what gets tested (or the lowest loss so far)
            self.tested_model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        row = {
            "epoch": self.epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": lr,
            "improved": improved,
        }
        # compiling is counted apart: the epoch's seconds are its steps', comparable with an eager trial's
        row["compile_seconds"] = self.compile_seconds - compiling
        row["epoch_seconds"] = time.perf_counter() - started - row["compile_seconds"]
        row |= {"started_at": began, "ended_at": utc_now(), "host": socket.gethostname()}  # when and where it ran
        self.history.append(row)
        return row

    def evaluate(self, split: DeviceSplit, **options) -> tuple[float, float, torch.Tensor | None]:
        """`evaluate` over `split` (split between the workers and gathered, when data-parallel)."""
        if self.group is not None:
            split, options["gather"] = split.subset(self.group.part(len(split))), self.group.gather
        batches = split.batches(self.eval_batch_size)
        return evaluate(self.model, batches, precision=self.config.precision, step=self.eval_step, **options)

    def _augmentation(self) -> Augmentation | None:
        """This epoch's augmentation (config.augment), on the device, from a seed drawn from `augment_rng`."""
        if not self.config.augment:
            return None
        seed = int(torch.randint(2**62, (), generator=self.augment_rng))
        generator = torch.Generator(self.device).manual_seed(seed)
        ops, mask_channel = self.config.augment.split("+"), self.train.mask is not None
        return Augmentation(ops, generator=generator, fill=self.train.mean, mask_channel=mask_channel)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "stopper": self.stopper.state_dict(),
            "order_rng": self.order_rng.get_state(),
            "augment_rng": self.augment_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "numpy_rng": _numpy_rng_state(),
            "python_rng": _python_rng_state(),
            "history": list(self.history),
            "tested_model": self.tested_model,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.compiled:  # loading replaced the device rate with the checkpoint's (on the CPU): a device one again
            for group in self.optimizer.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float64, device=self.device)
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["stopper"])
        self.order_rng.set_state(state["order_rng"])
        self.augment_rng.set_state(state["augment_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        _set_numpy_rng_state(state["numpy_rng"])
        _set_python_rng_state(state["python_rng"])
        self.history = list(state["history"])
        self.tested_model = state["tested_model"]
        self.batch_size = state["batch_size"]

    def save(self, path: str | Path) -> None:
        """Write the whole state to one file, atomically."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        files.replace(tmp, path)

    def load(self, path: str | Path) -> None:
        # weights_only: a checkpoint is tensors and plain values, never pickled objects that could run code
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def _numpy_rng_state() -> dict:
    """NumPy's global RNG state as tensors and numbers (a checkpoint holds no pickled objects)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_rng_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))


def _python_rng_state() -> dict:
    version, internal, gauss_next = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next}


def _set_python_rng_state(state: dict) -> None:
    random.setstate((state["version"], tuple(state["internal"].tolist()), state["gauss_next"]))


def fit(trainer: Trainer, *, on_epoch_end: typing.Callable[[dict, Trainer], None] | None = None) -> list[dict]:
    """Run epochs until the early-stopping rule or the epoch cap ends training; returns the history."""
    while not trainer.done:
        row = trainer.run_epoch()
        if on_epoch_end is not None:
            on_epoch_end(row, trainer)
    return trainer.history
