"""The thesis's facts as data: one record per configuration, the tiers, the loop's defaults, the published results.

Torch-free and Ray-free: the grid loader, the trial spec and the report ask this module, and so does
`models.py`, which keeps only the builders. Batch sizes and parameter counts of the thesis's 22 are read from the
published tables (`thesis/results.csv`), so each number lives in one place; the configurations of its future work
(chapter 7) and a grid's own models carry theirs in the record, as the thesis publishes none.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import numbers
from collections.abc import Sequence

# ------------------------------------------------------------------------------------------------ the dataset

# Acevedo et al. (2020): the 8 class folders, in label order, and the official count of each (17,092 images).
CLASSES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
PBC_CLASS_COUNTS: tuple[int, ...] = (1218, 3117, 1551, 2895, 1214, 1420, 3329, 2348)
PBC_IMAGES = sum(PBC_CLASS_COUNTS)

# Table 4.1: the four nested tiers (images; None = the whole dataset), split 5:2:3 into train / val / test (§4.3).
TIERS: dict[str, int | None] = {"large": None, "medium": 8500, "small": 4200, "tiny": 400}
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_RATIO: tuple[int, int, int] = (5, 2, 3)

# §4.3 as the thesis ran it, which its published numbers reveal: each of its 33 tiny-tier accuracies is k/115 (a
# 115-image test set, not table 4.1's 120), and its large tier is 8544 / 3415 / 5125 of the 17,092 images. One rule
# gives both: per class c, a tier of `size` images takes t_c = n_c x size / N of the class's n_c images (N: all of
# them; rounded half up, so the tiny tier takes exactly 400 images) and splits them int(t_c/2) / int(t_c/5) /
# int(3 t_c/10), leaving the 0-3 others unused. Rounding down instead also gives a 115-image tiny test set, but takes
# 395 images; the embedded sample (raybench/embedded/pbc400) is exactly the rounded tiny tier's 400.
# "thesis" is that rule; "exact" is table 4.1 as printed: each tier's exact 5:2:3 shares, stratified by class.
SPLIT_RULES: tuple[str, ...] = ("thesis", "exact")


def class_images(class_counts: Sequence[int], size: int) -> tuple[int, ...]:
    """The images each class gives a tier of `size` under the thesis's rule: n_c x size / N, rounded half up."""
    total = sum(class_counts)
    return tuple((2 * n * size + total) // (2 * total) for n in class_counts)


def class_split(images: int) -> tuple[int, int, int]:
    """The thesis's train / val / test split of one class's images in a tier; the 0-3 left over are unused."""
    return images // 2, images // 5, 3 * images // 10


def tier_split(class_counts: Sequence[int], size: int) -> tuple[int, int, int]:
    """The train / val / test images of a tier of `size` under the thesis's rule."""
    per_class = [class_split(t) for t in class_images(class_counts, size)]
    return tuple(sum(split[i] for split in per_class) for i in range(len(SPLITS)))


# The train / val / test images of each tier the thesis trained on: its rule on the official class counts.
TIER_SPLITS: dict[str, tuple[int, int, int]] = {
    tier: tier_split(PBC_CLASS_COUNTS, size or PBC_IMAGES) for tier, size in TIERS.items()
}
# Table 4.1 as printed: the exact 5:2:3 shares of each tier (the "exact" rule), but the large tier's rule numbers.
TABLE_4_1: dict[str, tuple[int, int, int]] = {
    "large": (8544, 3415, 5125),
    "medium": (4250, 1700, 2550),
    "small": (2100, 840, 1260),
    "tiny": (200, 80, 120),
}

# §4.2: greyscale, centre crop 352x352, normalised per channel after scaling to [0, 1].
CROP = 352
MEAN, STD = 0.5, 0.225

# ------------------------------------------------------------------------------------------------ the loop

# §4.3-4.4: what the thesis's loop did; TrainConfig takes its defaults from here and the report compares with it.
LOOP_DEFAULTS: dict[str, object] = {
    "max_epochs": 100,  # §4.4: at most 100 epochs
    "image_size": CROP,
    "lr": 0.1,  # §4.3: SGD, no momentum, no dampening, no weight decay
    # the thesis's RTX 3080 ran PyTorch 1.11 (its ViT and ConvNeXt builders need torchvision 0.12, March 2022; it was
    # delivered 27 May 2022, before 1.12 turned TF32 matrix products off): TF32 convolutions and matrix products
    "precision": "tf32",
    "es_start": 10,  # §4.4 fig. 4.5: early stopping considers epochs from 0-based index 10 on
    "es_patience": 20,  # ... stops after 20 epochs without improvement
    "es_min_delta": 0.1,  # ... an improvement is a loss below the best minus 0.1
}
THESIS_DEVICE = "RTX 3080"
MIN_IMAGE_SIZE = 32  # ConvNeXt's stem and downsampling layers shrink the image 32-fold


# ----------------------------------------------------------------------------------------- configurations


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One configuration: the thesis's 22 (§4.5), with its pretrained variant where table 5.15 has one, the future
    work's (chapter 7), or a grid's own model.

    `builder` names a function in `models.BUILDERS` (ours or torchvision's), or (a grid's own model) an import path
    "module:function" resolved in the trial process, with `builder_path` (the grid file's folder) on sys.path.
    `patch_size`, `dim`, `depth` and `kernel_size` are its arguments where it takes them. `activation_mb` is the
    memory autograd keeps per training image, fp32 at 352x352 (measured by benchmarks/activation_memory.py on the
    CPU, torch 2.14.1; used by the resource rule). `chosen_batch_size` and `chosen_pretrained_batch_size` are the
    batch sizes of a configuration the thesis did not train that way; the thesis's own are read from its tables.
    """

    name: str
    architecture: str
    builder: str
    activation_mb: float
    imagenet_weights: str | None = None  # torchvision's weights enum entry (§4.6, table 5.15; §7.2 for ViT)
    channels: int = 3  # §4.2: the greyscale image replicated to 3 channels; LeNet-5 takes 1
    patch_size: int | None = None
    dim: int | None = None
    depth: int | None = None
    kernel_size: int | None = None
    chosen_batch_size: int | None = None
    chosen_pretrained_batch_size: int | None = None
    builder_path: str | None = None

    @property
    def pretrainable(self) -> bool:
        return self.imagenet_weights is not None

    @property
    def in_thesis(self) -> bool:
        """Whether the thesis trained this configuration (from scratch; tables 5.1-5.7)."""
        return _published(self.name, pretrained=False) is not None

    @property
    def batch_size(self) -> int:
        """The batch size the thesis trained this configuration with from scratch (tables 5.1-5.7), else ours."""
        row = _published(self.name, pretrained=False)
        return row["batch_size"] if row else self.chosen_batch_size

    @property
    def pretrained_batch_size(self) -> int | None:
        """The batch size of its pretrained fine-tune (table 5.15, else ours), None without one."""
        if not self.pretrainable:
            return None
        row = _published(self.name, pretrained=True)
        return row["batch_size"] if row else self.chosen_pretrained_batch_size

    @property
    def parameters(self) -> int | None:
        """Parameters at 352x352 and 8 classes, as the thesis counts them (None: not a thesis configuration)."""
        row = _published(self.name, pretrained=False)
        return row["parameters"] if row else None

    @property
    def pretrained_trainable(self) -> int | None:
        """Trainable parameters of the pretrained fine-tune's new head (table 5.15), None where it has none."""
        row = _published(self.name, pretrained=True) if self.pretrainable else None
        return row["parameters"] if row else None


def _c(name, architecture, builder, activation_mb, weights=None, **kw) -> Configuration:
    return Configuration(name, architecture, builder, activation_mb, weights, **kw)


def _mixer(name: str, activation_mb: float, *, patch_size: int, dim: int, depth: int) -> Configuration:
    return Configuration(name, "MLP-Mixer", "mlp_mixer", activation_mb, patch_size=patch_size, dim=dim, depth=depth)


def _vit(name: str, activation_mb: float, *, patch_size: int) -> Configuration:
    """A ViT: the thesis trained it from scratch only; §7.2 fine-tunes torchvision's ImageNet weights (trained at 224,
    their position embeddings interpolated to the patch grid) with the batch of the thesis's ConvNeXt fine-tunes."""
    weights = f"ViT_{name[4].upper()}_{patch_size}_Weights.IMAGENET1K_V1"
    return Configuration(
        name, "ViT", name, activation_mb, weights, patch_size=patch_size, chosen_pretrained_batch_size=32
    )


# The 22 names are permanent: they are keys in result files and figures. Order: the report's.
CONFIGURATIONS: dict[str, Configuration] = {
    c.name: c
    for c in (
        _c("lenet5", "LeNet-5", "lenet5", 13.6, channels=1),
        _c("resnet_18", "ResNet", "resnet18", 54.8, "ResNet18_Weights.IMAGENET1K_V1"),
        _c("resnet_34", "ResNet", "resnet34", 79.6, "ResNet34_Weights.IMAGENET1K_V1"),
        _c("resnet_50", "ResNet", "resnet50", 212.3, "ResNet50_Weights.IMAGENET1K_V1"),
        _c("resnet_101", "ResNet", "resnet101", 313.7, "ResNet101_Weights.IMAGENET1K_V1"),
        _c("resnet_152", "ResNet", "resnet152", 438.7, "ResNet152_Weights.IMAGENET1K_V1"),
        _c("mobilenet_small", "MobileNetV3", "mobilenet_v3_small", 39.9, "MobileNet_V3_Small_Weights.IMAGENET1K_V1"),
        _c("mobilenet_large", "MobileNetV3", "mobilenet_v3_large", 108.9, "MobileNet_V3_Large_Weights.IMAGENET1K_V1"),
        _c("convnext_tiny", "ConvNeXt", "convnext_tiny", 269.5, "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"),
        _c("convnext_small", "ConvNeXt", "convnext_small", 430.2, "ConvNeXt_Small_Weights.IMAGENET1K_V1"),
        _c("convnext_base", "ConvNeXt", "convnext_base", 572.9, "ConvNeXt_Base_Weights.IMAGENET1K_V1"),
        _c("convnext_large", "ConvNeXt", "convnext_large", 858.4, "ConvNeXt_Large_Weights.IMAGENET1K_V1"),
        _vit("vit_b_16", 290.9, patch_size=16),
        _vit("vit_b_32", 74.3, patch_size=32),
        _vit("vit_l_16", 769.2, patch_size=16),
        _vit("vit_l_32", 194.6, patch_size=32),
        _mixer("mlpmixer_s32", 27.5, patch_size=32, dim=512, depth=8),
        _mixer("mlpmixer_s16", 105.6, patch_size=16, dim=512, depth=8),
        _mixer("mlpmixer_b32", 59.9, patch_size=32, dim=768, depth=12),
        _mixer("mlpmixer_b16", 235.0, patch_size=16, dim=768, depth=12),
        _mixer("mlpmixer_l32", 156.7, patch_size=32, dim=1024, depth=24),
        _mixer("mlpmixer_l16", 622.2, patch_size=16, dim=1024, depth=24),
    )
}
MODEL_NAMES: tuple[str, ...] = tuple(CONFIGURATIONS)
ARCHITECTURES: dict[str, tuple[str, ...]] = {}
for _config in CONFIGURATIONS.values():
    ARCHITECTURES.setdefault(_config.architecture, ())
    ARCHITECTURES[_config.architecture] += (_config.name,)

# Chapter 7's architectures, built by raybench's own code, not part of the thesis's grid. The thesis publishes no
# batch size for them: each takes the largest power of two up to 64 whose activations (batch x activation_mb) stay
# within the ~8.6 GB the thesis's own batch sizes used on its 10 GB RTX 3080 (convnext_tiny: 32 x 269.5 MB).
# ConvMixer (Trockman & Kolter 2022) is named ConvMixer-h/d; a 16-pixel patch keeps a 22x22 token grid at 352
# (the paper's patch 7 at 224 gives 32x32), so its activations stay near ConvNeXt-T's; ConvMixer-256/8 is a small
# one for CPU runs. Xception (Chollet 2017) as published. activation_mb measured like the thesis's 22.
FUTURE_CONFIGURATIONS: dict[str, Configuration] = {
    c.name: c
    for c in (
        _c("convmixer_768_32", "ConvMixer", "convmixer", 290.3, patch_size=16, dim=768, depth=32, kernel_size=7,
           chosen_batch_size=16),
        _c("convmixer_256_8", "ConvMixer", "convmixer", 26.3, patch_size=16, dim=256, depth=8, kernel_size=9,
           chosen_batch_size=64),
        _c("xception", "Xception", "xception", 336.1, chosen_batch_size=16),
    )
}  # fmt: skip
FUTURE_NAMES: tuple[str, ...] = tuple(FUTURE_CONFIGURATIONS)
BUILT_IN: dict[str, Configuration] = {**CONFIGURATIONS, **FUTURE_CONFIGURATIONS}

# A grid's own models (its "models"), registered by the grid loader. A trial names its model, and the spec, the
# resource rule and the builders all ask this catalog for the record: so the trial process registers them again
# (tuning ships them with the trainable). Registering a name again replaces the record.
_REGISTERED: dict[str, Configuration] = {}


def register(config: Configuration) -> None:
    """Make a grid's own model known under its name; a ValueError if it shadows a built-in or lacks a batch size."""
    if config.name in BUILT_IN:
        raise ValueError(f"model {config.name!r} is one of raybench's configurations; give your model another name")
    _check_batch_sizes(config)
    _REGISTERED[config.name] = config


def known_names() -> tuple[str, ...]:
    """Every model name a grid may use: the thesis's 22, the future work's, then the registered ones."""
    return (*BUILT_IN, *(name for name in _REGISTERED if name not in BUILT_IN))


def configuration(name: str, *, pretrained: bool = False) -> Configuration:
    """The record of `name`; a ValueError listing the valid names when there is no such configuration."""
    config = BUILT_IN.get(name) or _REGISTERED.get(name)
    if config is None:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(known_names())}")
    if pretrained and not config.pretrainable:
        raise ValueError(
            f"model {name!r} has no pretrained variant (thesis table 5.15, §7.2); "
            f"pretrained models: {', '.join(IMAGENET_PRETRAINABLE)}"
        )
    return config


def batch_size(name: str, *, pretrained: bool = False) -> int:
    """The batch size the thesis used for this configuration (ours where it trained none)."""
    config = configuration(name, pretrained=pretrained)
    return config.pretrained_batch_size if pretrained else config.batch_size


INT_MAX = 2**63 - 1  # the largest whole number an int64 (Parquet's columns) and a C long (torch's sizes) hold


def is_whole(value, *, least: int = 1) -> bool:
    """A whole number (NumPy's too) from `least` to INT_MAX; never a bool, which would pass as 1 (a batch of True)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and least <= value <= INT_MAX


def check_image_size(name: str, image_size: int) -> None:
    """Raise a ValueError when configuration `name` cannot take `image_size` (the check a build would make)."""
    config = configuration(name)
    if not is_whole(image_size, least=MIN_IMAGE_SIZE):
        raise ValueError(f"{name}: image_size must be an integer of at least {MIN_IMAGE_SIZE}, got {image_size!r}")
    if config.patch_size and image_size % config.patch_size:
        raise ValueError(
            f"{name}: image_size {image_size} is not divisible by the patch size {config.patch_size}; "
            f"use a multiple of {config.patch_size} (the thesis used 352; 64 and 128 suit quick CPU runs)"
        )


# ------------------------------------------------------------------------------------- published results


def _read_csv(name: str) -> list[dict[str, str]]:
    with (importlib.resources.files("raybench") / "thesis" / name).open() as f:
        return list(csv.DictReader(f))


@functools.cache
def published_results() -> tuple[dict, ...]:
    """Tables 5.1, 5.3, 5.5, 5.7 and 5.15: one row per trained configuration (99), typed.

    For pretrained rows `parameters` is the trainable count of the new head.
    """
    kinds = {
        "parameters": int,
        "batch_size": int,
        "epochs": int,
        "total_training_s": float,
        "seconds_per_epoch": float,
        "accuracy": float,
    }
    booleans = ("pretrained", "hit_epoch_limit")
    return tuple(
        {**row, **{k: f(row[k]) for k, f in kinds.items()}, **{k: row[k] == "True" for k in booleans}}
        for row in _read_csv("results.csv")
    )


@functools.cache
def published_maps() -> tuple[dict, ...]:
    """Tables 5.2, 5.4, 5.6, 5.8 and 5.17: mAP@5 and mAP@100 of the best configuration(s) per architecture and tier."""
    return tuple(
        {
            **row,
            "pretrained": row["pretrained"] == "True",
            "map_at_5": float(row["map_at_5"]),
            "map_at_100": float(row["map_at_100"]),
        }
        for row in _read_csv("map.csv")
    )


def published_row(name: str, *, pretrained: bool) -> dict:
    """A configuration's published row on the tiny tier (every tier has the same batch size and parameters)."""
    for row in published_results():
        if row["model"] == name and row["pretrained"] == pretrained and row["dataset"] == "tiny":
            return row
    raise KeyError(f"the thesis publishes no {'pretrained ' if pretrained else ''}{name} run")


def _published(name: str, *, pretrained: bool) -> dict | None:
    try:
        return published_row(name, pretrained=pretrained)
    except KeyError:
        return None


def _check_batch_sizes(config: Configuration) -> None:
    """A batch size lives in one place: the thesis's tables for what it trained, the record for the rest."""
    for pretrained, chosen in ((False, config.chosen_batch_size), (True, config.chosen_pretrained_batch_size)):
        published = _published(config.name, pretrained=pretrained) is not None
        needed = not pretrained or config.pretrainable
        which = "pretrained batch size" if pretrained else "batch size"
        if chosen is not None and published:
            raise ValueError(f"{config.name}: the thesis publishes its {which}; the record must not set another")
        if chosen is not None and not needed:
            raise ValueError(f"{config.name}: a {which} without ImageNet weights to fine-tune")
        if chosen is None and needed and not published:
            raise ValueError(f"{config.name}: needs a {which} (the thesis trained no such configuration)")
        if chosen is not None and not is_whole(chosen):
            raise ValueError(f"{config.name}: batch_size must be a whole number of at least 1, got {chosen!r}")


for _config in BUILT_IN.values():
    _check_batch_sizes(_config)
# The thesis's 11 fine-tunes (table 5.15), which its grid trains; every configuration with ImageNet weights.
PRETRAINABLE: tuple[str, ...] = tuple(n for n in CONFIGURATIONS if _published(n, pretrained=True) is not None)
IMAGENET_PRETRAINABLE: tuple[str, ...] = tuple(n for n, c in BUILT_IN.items() if c.pretrainable)
