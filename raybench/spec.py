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
PRECISIONS = ("fp32", "tf32", "bf16")  # loop.PRECISIONS says what each sets on a GPU; all are fp32 on the CPU
STEPS = ("auto", "eager", "compiled")
VAL_LOSSES = ("batches", "images")
DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")  # the device types torch runs this loop on


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training options; every field can be overridden with `--set key=value` or a grid's `options`."""

    batch_size: int = 0  # 0: the thesis's batch size for the model (catalog)
    max_epochs: int = _THESIS["max_epochs"]
    image_size: int = _THESIS["image_size"]  # §4.2: 352x352 centre crop; smaller sizes crop 352 then resize
    lr: float = _THESIS["lr"]
    precision: str = _THESIS["precision"]  # "fp32": PyTorch's defaults, the thesis's; "tf32", "bf16" (autocast)
    channels_last: bool = False
    split_seed: int = 0  # the draw of tiers and splits, the same for every trial by default
    split_rule: str = "thesis"  # "thesis": each class split int(t/2) / int(t/5) / int(3t/10); "exact": table 4.1
    dedupe: bool = False  # drop byte-identical images before drawing (the thesis kept all 17,092)
    es_start: int = _THESIS["es_start"]
    es_patience: int = _THESIS["es_patience"]
    es_min_delta: float = _THESIS["es_min_delta"]
    eval_batch_size: int = 0  # 0: the training batch size on the CPU, 4x it (at most 256) on a GPU
    val_loss: str = "batches"  # fig. 4.4: the mean of per-batch means (thesis) or "images": the mean over images
    step: str = "auto"  # "compiled" (torch.compile; CUDA graphs on a GPU), "eager", or "auto": compiled on CUDA
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), _TYPES[field.name]
            # an int is a fine float; a bool is not an int here (True would be a batch size of 1)
            ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
            if not ok and not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
                raise ValueError(f"training option {field.name} must be of type {kind.__name__}, got {value!r}")
        if self.split_rule not in catalog.SPLIT_RULES:
            raise ValueError(f"split_rule must be one of {', '.join(catalog.SPLIT_RULES)}, got {self.split_rule!r}")
        for name, valid in (("precision", PRECISIONS), ("step", STEPS), ("val_loss", VAL_LOSSES)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}")
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
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N', 'mps' or 'xpu[:N]', got {self.device!r}")


_TYPES: dict[str, type] = typing.get_type_hints(TrainConfig)


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


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
        out[key] = _convert(key, text.strip(), _TYPES[key])
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
    """What one training run is: the model, the tier, pretrained or not, the seed and the options."""

    model: str
    tier: str
    pretrained: bool = False
    seed: int = 0
    config: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        catalog.configuration(self.model, pretrained=self.pretrained)
        catalog.check_image_size(self.model, self.config.image_size)

    @property
    def trial_id(self) -> str:
        return f"{self.model}-{self.tier}{'-pretrained' if self.pretrained else ''}-seed{self.seed}"

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or catalog.batch_size(self.model, pretrained=self.pretrained)

    def columns(self) -> dict:
        """The columns that identify this trial in trials.parquet and plan.parquet; `options` holds every option."""
        config = self.config
        return {
            "trial_id": self.trial_id,
            "model": self.model,
            "tier": self.tier,
            "pretrained": self.pretrained,
            "seed": self.seed,
            "split_seed": config.split_seed,
            "image_size": config.image_size,
            "precision": config.precision,
            "channels_last": config.channels_last,
            "batch_size": self.batch_size,
            "max_epochs": config.max_epochs,
            "options": json.dumps(dataclasses.asdict(config), sort_keys=True),
        }
