"""What one training run is, as data: the loop's options (`TrainConfig`, `--set` parsing) and the `Trial`.

Torch-free and Ray-free, so a grid file loads and validates without starting anything. The thesis's values
are the defaults (catalog.LOOP_DEFAULTS).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Iterable

from raybench import catalog

_THESIS = catalog.LOOP_DEFAULTS
PRECISIONS = ("tf32", "fp32", "bf16")  # loop.PRECISIONS says what each sets on a GPU; all are fp32 on the CPU
STEPS = ("auto", "eager", "compiled")
VAL_LOSSES = ("batches", "images")
VAL_ORDERS = ("shuffled", "class")
NONFINITE_STOPS = ("weights", "loss")
DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")  # the device types torch runs this loop on
# Chapter 7's future work, each an option whose first value is the thesis's setting (loop.py says what each does)
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adamw")
LR_SCALINGS = ("none", "sqrt", "linear")
ES_MODES = ("absolute", "relative")
TESTED = ("last_improvement", "lowest_val_loss")
AUGMENTATIONS = ("flip", "rot90", "jitter", "shift", "noise")  # applied in this order, whatever order is given
IMAGES = ("grey3", "grey1", "colour")
# §7.2's mask of the cell at the centre (data.masks): "IMAGE_mask" adds it as a last channel, "IMAGE_masked"
# multiplies the image by it (the background black)
MASK_USES = {"mask": "channel", "masked": "multiply"}
INPUTS = (*IMAGES, *(f"{image}_{suffix}" for image in IMAGES for suffix in MASK_USES))
NORMALISATIONS = ("thesis", "measured")
FINETUNES = ("head", "all")
MAX_WORKERS = 64
# names that become folder and file names (trial ids, RESULTS/NAME) and text in the report's tables: nothing that
# leaves the folder ("..", "/"), no control characters, nothing markdown or HTML reads as markup
NAME = re.compile(r"[A-Za-z0-9_]+")  # model names, tiers and labels: parts of trial ids ("-" separates the parts)
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # a run's folder: RESULTS/NAME
SEED_MAX = 2**32 - 1  # numpy's seeds (np.random.seed) take at most 32 bits
INT_MAX = catalog.INT_MAX  # every other whole number: an int64 in Parquet, a C long in torch


def check_name(what: str, value, *, pattern: re.Pattern = NAME) -> str:
    """`value` if it is a name `pattern` allows, else a ValueError naming it and the characters allowed."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        allowed = (
            "letters, digits and '_'"
            if pattern is NAME
            else "at most 100 letters, digits, '_', '-' and '.', not starting with '.' or '-'"
        )
        raise ValueError(f"{what} {value!r} is not a valid name: it becomes a folder name, so use {allowed}")
    return value


def check_seed(what: str, value: int) -> None:
    if not 0 <= value <= SEED_MAX:
        raise ValueError(f"{what} must be a whole number from 0 to {SEED_MAX} (2**32-1, numpy's seeds), got {value}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training options; every field can be overridden with `--set key=value` or a grid's `options`."""

    batch_size: int = 0  # 0: the thesis's batch size for the model (catalog)
    max_epochs: int = _THESIS["max_epochs"]
    image_size: int = _THESIS["image_size"]  # §4.2: 352x352 centre crop; smaller sizes crop 352 then resize
    lr: float = _THESIS["lr"]
    precision: str = _THESIS["precision"]  # "tf32": PyTorch 1.11's defaults, the thesis's; "fp32", "bf16" (autocast)
    channels_last: bool = False
    split_seed: int = 0  # the draw of tiers and splits, the same for every trial by default
    split_rule: str = "thesis"  # "thesis": each class split int(t/2) / int(t/5) / int(3t/10); "exact": table 4.1
    dedupe: bool = False  # drop byte-identical images before drawing (the thesis kept all 17,092)
    es_start: int = _THESIS["es_start"]
    es_patience: int = _THESIS["es_patience"]
    es_min_delta: float = _THESIS["es_min_delta"]
    eval_batch_size: int = 0  # 0: the training batch size on the CPU, 4x it (at most 256) on a GPU
    val_loss: str = "batches"  # fig. 4.4: the mean of per-batch means (thesis) or "images": the mean over images
    # the validation split's order, which sets which images share the short last batch of val_loss="batches": the
    # thesis states none; "shuffled" (seeded by split_seed) is a stratified split drawn the usual way, "class" sorted
    val_order: str = "shuffled"
    # a non-finite loss never improves and training goes on, as in the thesis's loop, until the weights themselves
    # are non-finite ("weights"); "loss": stop at the first non-finite training or validation loss
    nonfinite_stop: str = "weights"
    step: str = "auto"  # "compiled" (torch.compile; CUDA graphs on a GPU), "eager", or "auto": compiled on CUDA
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    # §4.3 plain SGD; "momentum" (0.9), "nesterov" (0.9), "adamw" (weight decay 0.01, PyTorch's default; set lr)
    optimizer: str = "sgd"
    plateau_factor: float = 0.1  # ReduceLROnPlateau; PyTorch's defaults are the thesis's (§4.3)
    plateau_patience: int = 10
    plateau_threshold: float = 1e-4
    lr_scaling: str = "none"  # §6: "sqrt" / "linear": lr x sqrt(k) / x k when the batch is k times the thesis's
    es_mode: str = "absolute"  # fig. 4.5: below best - es_min_delta; "relative": below best x (1 - es_min_delta)
    tested: str = "last_improvement"  # fig. 4.5; "lowest_val_loss": the lowest validation loss from es_start on
    augment: str = ""  # §7.2: "" (none) or a "+"-joined set of AUGMENTATIONS, on training batches only
    # §4.2: grey replicated to 3 channels (LeNet-5: 1); "grey1": 1 for all; "colour": RGB; each also "_mask" (the
    # central cell's mask as one more channel) or "_masked" (the image times the mask), §7.2
    input: str = "grey3"
    normalise: str = "thesis"  # §4.2: mean 0.5, std 0.225; "measured": the training split's, per channel
    finetune: str = "head"  # §4.6: pretrained trials train their new head only; "all": every parameter
    # §7.2: data-parallel training in this many processes (one GPU each on GPUs; gloo on the CPU), each a part of
    # every global batch of batch_size, through Ray Train (service.data_parallel); 1: the thesis's single process
    workers: int = 1

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), _TYPES[field.name]
            # an int is a fine float; a bool is not an int here (True would be a batch size of 1)
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            if not ok and not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"training option {field.name} must be of type {kind.__name__}, got {value!r}")
        if self.split_rule not in catalog.SPLIT_RULES:
            raise ValueError(f"split_rule must be one of {', '.join(catalog.SPLIT_RULES)}, got {self.split_rule!r}")
        for name, valid in CHOICES.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
        parts = self.augment.split("+") if self.augment else []
        if any(part not in AUGMENTATIONS for part in parts) or len(set(parts)) < len(parts):
            raise ValueError(
                f"augment must be '' (none) or a '+'-joined set of {', '.join(AUGMENTATIONS)} "
                f"(e.g. 'flip+rot90'), got {self.augment!r}"
            )
        # one spelling per set (it is recorded in the options): the order they are applied in
        object.__setattr__(self, "augment", "+".join(a for a in AUGMENTATIONS if a in parts))
        if not (math.isfinite(self.plateau_factor) and 0 < self.plateau_factor < 1):
            raise ValueError(f"plateau_factor must be above 0 and below 1 (PyTorch's: 0.1), got {self.plateau_factor}")
        if self.plateau_patience < 0 or not (math.isfinite(self.plateau_threshold) and self.plateau_threshold >= 0):
            raise ValueError(
                "plateau_patience and plateau_threshold must be at least 0 (PyTorch's: 10 and 1e-4), "
                f"got {self.plateau_patience} and {self.plateau_threshold}"
            )
        if self.es_mode == "relative" and not self.es_min_delta < 1:
            raise ValueError(
                f"es_min_delta must be a fraction below 1 with es_mode='relative' (e.g. 0.05), got {self.es_min_delta}"
            )
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be at least 1, got {self.max_epochs}")
        if not catalog.MIN_IMAGE_SIZE <= self.image_size <= catalog.CROP:
            raise ValueError(
                f"image_size must be between {catalog.MIN_IMAGE_SIZE} and {catalog.CROP} (the thesis's "
                f"centre crop, resized down for smaller sizes), got {self.image_size}"
            )
        if self.batch_size < 0 or self.eval_batch_size < 0:
            raise ValueError("batch_size and eval_batch_size must be >= 0 (0 = the thesis's batch size)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number above 0 (the thesis: 0.1), got {self.lr}")
        for name in ("es_start", "es_patience", "es_min_delta", "split_seed"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of at least 0, got {value}")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, got {self.workers}")
        if self.workers > 1 and self.step == "compiled":
            raise ValueError("workers > 1 trains with eager steps: set step=eager (or auto) with it")
        if self.workers > 1 and 0 < self.batch_size < self.workers:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be at least workers ({self.workers}): each worker takes a "
                "part of every global batch"
            )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if _TYPES[field.name] is int and value > INT_MAX:
                raise ValueError(f"{field.name} must be at most {INT_MAX} (2**63-1, an int64), got {value}")
        check_seed("split_seed", self.split_seed)
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu[:N]', got {self.device!r}")


_TYPES: dict[str, type] = typing.get_type_hints(TrainConfig)
CHOICES: dict[str, tuple[str, ...]] = {  # the options that take one of a few names; the first is the thesis's
    "precision": PRECISIONS,
    "step": STEPS,
    "val_loss": VAL_LOSSES,
    "val_order": VAL_ORDERS,
    "nonfinite_stop": NONFINITE_STOPS,
    "optimizer": OPTIMIZERS,
    "lr_scaling": LR_SCALINGS,
    "es_mode": ES_MODES,
    "tested": TESTED,
    "input": INPUTS,
    "normalise": NORMALISATIONS,
    "finetune": FINETUNES,
}


def input_parts(value: str) -> tuple[str, str]:
    """An `input` value as (its image: grey3, grey1 or colour; its use of the mask: "", "channel" or "multiply")."""
    image, _, suffix = value.partition("_")
    return image, MASK_USES.get(suffix, "")


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def describe_options() -> str:
    """Every training option with its default (the thesis's) and, where it takes one of a few names, the others:
    `--set`'s help."""
    parts = []
    for field in dataclasses.fields(TrainConfig):
        text = f"{field.name}={field.default!r}" if isinstance(field.default, str) else f"{field.name}={field.default}"
        if field.name in CHOICES:
            text += f" ({'|'.join(CHOICES[field.name])})"
        elif field.name == "split_rule":
            text += f" ({'|'.join(catalog.SPLIT_RULES)})"
        elif field.name == "device":
            text += " (auto|cpu|cuda|cuda:N|mps|xpu)"
        elif field.name == "augment":
            text += f" ('' or +-joined {'|'.join(AUGMENTATIONS)})"
        parts.append(text)
    return ", ".join(parts)


def parse_overrides(items: Iterable[str]) -> dict[str, typing.Any]:
    """Turn ["max_epochs=5", "precision=bf16"] into typed TrainConfig overrides; unknown keys are errors."""
    out: dict[str, typing.Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key not in _TYPES:
            raise ValueError(f"unknown training option {key!r}; valid keys: {', '.join(config_keys())}")
        value = _convert(key, text.strip(), _TYPES[key])
        if key in out:  # which one was meant cannot be known: the last would silently win
            raise ValueError(f"--set {key} is given twice ({out[key]!r} and {value!r}): give each option once")
        out[key] = value
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
    """A TrainConfig from option overrides; unknown keys are a ValueError listing the valid ones."""
    unknown = sorted(set(overrides or {}) - set(_TYPES))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; valid keys: {', '.join(config_keys())}")
    return TrainConfig(**(overrides or {}))


@dataclasses.dataclass(frozen=True)
class Trial:
    """What one training run is: the model, the tier, pretrained or not, the seed and the options.

    `variant` labels a grid sweep compared with the unlabelled baseline (other options, another start; it is part of
    the trial_id); `init_from` is an earlier trial's weights file to start from; `save_weights` keeps the tested
    weights with the results (weights/TRIAL_ID.npz).
    """

    model: str
    tier: str
    pretrained: bool = False
    seed: int = 0
    config: TrainConfig = TrainConfig()
    variant: str = ""
    init_from: str = ""
    save_weights: bool = False

    def __post_init__(self) -> None:
        catalog.configuration(self.model, pretrained=self.pretrained)
        check_name("tier", self.tier)
        check_seed("seed", self.seed)
        catalog.check_image_size(self.model, self.config.image_size)

    @property
    def trial_id(self) -> str:
        variant = f"-{self.variant}" if self.variant else ""
        return f"{self.model}-{self.tier}{'-pretrained' if self.pretrained else ''}{variant}-seed{self.seed}"

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or catalog.batch_size(self.model, pretrained=self.pretrained)

    @property
    def channels(self) -> int:
        """The model's input channels: the catalog's with input="grey3" (§4.2), else 1 (grey1) or 3 (colour); one more
        with a mask channel ("..._mask")."""
        image, mask = input_parts(self.config.input)
        native = catalog.configuration(self.model).channels if image == "grey3" else 1 if image == "grey1" else 3
        return native + (mask == "channel")

    def parameters(self) -> dict:
        """Its identity and every option as flat values (Tune's config keys, TensorBoard's HParams)."""
        return {
            "model": self.model,
            "tier": self.tier,
            "pretrained": self.pretrained,
            "seed": self.seed,
            **dataclasses.asdict(self.config),
            "batch_size": self.batch_size,
        }

    def columns(self) -> dict:
        """The columns that identify this trial in trials.parquet and plan.parquet; `options` holds every option."""
        config = self.config
        return {
            "trial_id": self.trial_id,
            "model": self.model,
            "tier": self.tier,
            "pretrained": self.pretrained,
            "seed": self.seed,
            "variant": self.variant,
            "init_from": self.init_from,
            "split_seed": config.split_seed,
            "image_size": config.image_size,
            "precision": config.precision,
            "channels_last": config.channels_last,
            "batch_size": self.batch_size,
            "workers": config.workers,
            "max_epochs": config.max_epochs,
            "options": json.dumps(dataclasses.asdict(config), sort_keys=True),
        }
