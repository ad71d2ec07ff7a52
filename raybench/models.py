"""The 22 network configurations of the thesis (§4.5-4.6) and their pretrained variants (table 5.15).

`build_model(name, ...)` is the only way the rest of raybench makes a network. At
image_size=352 and 8 classes every parameter count equals the thesis's exactly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from mlp_mixer_pytorch import MLPMixer
from torch import nn

MIN_IMAGE_SIZE = 32  # ConvNeXt's stem and downsampling layers shrink the image 32-fold


class LeNet5(nn.Module):
    """The thesis's LeNet-5 (§4.5, figure 4.6): 1 input channel; at 352, fc 115600 (16x85x85) -> 120 -> 84 -> classes.

    The thesis counts 13,885,580 parameters: the classic conv(6,5x5)/pool/conv(16,5x5)/pool stack gives
    13,885,536; the 44 left are a BatchNorm after each convolution (2*6 + 2*16).
    """

    def __init__(self, *, num_classes: int = 8, image_size: int = 352) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2  # two valid 5x5 convolutions, each followed by a 2x2 pool
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _check_patch(image_size: int, patch_size: int) -> None:
    if image_size % patch_size:
        raise ValueError(
            f"image_size {image_size} is not divisible by the patch size {patch_size}; "
            f"use a multiple of {patch_size} (the thesis used 352; 64 and 128 suit quick CPU runs)"
        )


def _torchvision(builder: Callable[..., nn.Module], *, num_classes: int, image_size: int) -> nn.Module:
    del image_size  # convolutional networks pool adaptively: any size works
    return builder(weights=None, num_classes=num_classes)


def _vit(builder: Callable[..., nn.Module], *, patch_size: int, num_classes: int, image_size: int) -> nn.Module:
    _check_patch(image_size, patch_size)
    return builder(weights=None, num_classes=num_classes, image_size=image_size)


def _mlp_mixer(*, patch_size: int, dim: int, depth: int, num_classes: int, image_size: int) -> nn.Module:
    """MLP-Mixer with a token-mixing width of 4 x patches and a channel-mixing width of 0.5 x dim (§4.5)."""
    _check_patch(image_size, patch_size)
    patches = (image_size // patch_size) ** 2
    # Since mlp-mixer-pytorch 0.3.0 the token-mixing width is int(expansion_factor * dim), not
    # expansion_factor * patches; a Fraction makes that product exactly 4 * patches.
    model = MLPMixer(
        image_size=image_size, channels=3, patch_size=patch_size, dim=dim, depth=depth,
        num_classes=num_classes, expansion_factor=Fraction(4 * patches, dim), expansion_factor_token=0.5,
    )
    token_width = model[2][0].fn[0].out_channels  # first block, token mixing, first Conv1d
    if token_width != 4 * patches:
        raise RuntimeError(f"mlp-mixer-pytorch built a token-mixing width of {token_width}, not {4 * patches}; "
                           "its expansion_factor changed meaning again: pin mlp-mixer-pytorch>=0.3.1,<0.4")
    return model


# The thesis's 22 names (§4.5) -> builder(num_classes=, image_size=). The names are permanent: they are
# keys in result files and figures.
REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "resnet_18": partial(_torchvision, tvm.resnet18),
    "resnet_34": partial(_torchvision, tvm.resnet34),
    "resnet_50": partial(_torchvision, tvm.resnet50),
    "resnet_101": partial(_torchvision, tvm.resnet101),
    "resnet_152": partial(_torchvision, tvm.resnet152),
    "mobilenet_small": partial(_torchvision, tvm.mobilenet_v3_small),
    "mobilenet_large": partial(_torchvision, tvm.mobilenet_v3_large),
    "convnext_tiny": partial(_torchvision, tvm.convnext_tiny),
    "convnext_small": partial(_torchvision, tvm.convnext_small),
    "convnext_base": partial(_torchvision, tvm.convnext_base),
    "convnext_large": partial(_torchvision, tvm.convnext_large),
    "vit_b_16": partial(_vit, tvm.vit_b_16, patch_size=16),
    "vit_b_32": partial(_vit, tvm.vit_b_32, patch_size=32),
    "vit_l_16": partial(_vit, tvm.vit_l_16, patch_size=16),
    "vit_l_32": partial(_vit, tvm.vit_l_32, patch_size=32),
    "mlpmixer_s32": partial(_mlp_mixer, patch_size=32, dim=512, depth=8),
    "mlpmixer_s16": partial(_mlp_mixer, patch_size=16, dim=512, depth=8),
    "mlpmixer_b32": partial(_mlp_mixer, patch_size=32, dim=768, depth=12),
    "mlpmixer_b16": partial(_mlp_mixer, patch_size=16, dim=768, depth=12),
    "mlpmixer_l32": partial(_mlp_mixer, patch_size=32, dim=1024, depth=24),
    "mlpmixer_l16": partial(_mlp_mixer, patch_size=16, dim=1024, depth=24),
}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)

# §4.6, table 5.15: the ResNet, MobileNetV3 and ConvNeXt configurations also ran from ImageNet-1K weights.
IMAGENET_WEIGHTS: dict[str, tvm.WeightsEnum] = {
    "resnet_18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet_34": tvm.ResNet34_Weights.IMAGENET1K_V1,
    "resnet_50": tvm.ResNet50_Weights.IMAGENET1K_V1,
    "resnet_101": tvm.ResNet101_Weights.IMAGENET1K_V1,
    "resnet_152": tvm.ResNet152_Weights.IMAGENET1K_V1,
    "mobilenet_small": tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
    "mobilenet_large": tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    "convnext_tiny": tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1,
    "convnext_small": tvm.ConvNeXt_Small_Weights.IMAGENET1K_V1,
    "convnext_base": tvm.ConvNeXt_Base_Weights.IMAGENET1K_V1,
    "convnext_large": tvm.ConvNeXt_Large_Weights.IMAGENET1K_V1,
}
PRETRAINABLE: tuple[str, ...] = tuple(IMAGENET_WEIGHTS)

# Batch sizes the thesis trained with (tables 5.1-5.7 from scratch, table 5.15 pretrained).
_BATCH_SIZE = {
    "lenet5": 64, "resnet_18": 64, "resnet_34": 64, "resnet_50": 32, "resnet_101": 16, "resnet_152": 16,
    "mobilenet_small": 64, "mobilenet_large": 64,
    "convnext_tiny": 32, "convnext_small": 16, "convnext_base": 8, "convnext_large": 8,
    "vit_b_16": 16, "vit_b_32": 4, "vit_l_16": 4, "vit_l_32": 4,
    "mlpmixer_s32": 64, "mlpmixer_s16": 64, "mlpmixer_b32": 64, "mlpmixer_b16": 32,
    "mlpmixer_l32": 32, "mlpmixer_l16": 8,
}
_PRETRAINED_BATCH_SIZE = {
    "resnet_18": 64, "resnet_34": 64, "resnet_50": 64, "resnet_101": 64, "resnet_152": 64,
    "mobilenet_small": 64, "mobilenet_large": 64,
    "convnext_tiny": 32, "convnext_small": 32, "convnext_base": 32, "convnext_large": 32,
}


def check_model_name(name: str, *, pretrained: bool = False) -> str:
    """Return `name` if the thesis has that configuration, else raise ValueError listing the valid ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if pretrained and name not in IMAGENET_WEIGHTS:
        raise ValueError(f"model {name!r} has no pretrained variant (thesis table 5.15); "
                         f"pretrained models: {', '.join(PRETRAINABLE)}")
    return name


def input_channels(name: str) -> int:
    """Channels the model takes: 1 for LeNet-5, 3 (the greyscale image replicated) for the others (§4.2)."""
    return 1 if check_model_name(name) == "lenet5" else 3


def thesis_batch_size(name: str, pretrained: bool = False) -> int:
    """The batch size the thesis used for this configuration."""
    check_model_name(name, pretrained=pretrained)
    return _PRETRAINED_BATCH_SIZE[name] if pretrained else _BATCH_SIZE[name]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def check_image_size(name: str, image_size: int) -> None:
    """Raise the ValueError build_model would, without building anything."""
    parameter_counts(name, image_size=image_size)


@functools.lru_cache(maxsize=None)
def parameter_counts(name: str, *, pretrained: bool = False, image_size: int = 352, num_classes: int = 8) -> tuple[int, int]:
    """(total, trainable) parameters of a configuration, counted on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        if pretrained:  # the same head rule as the loading path, without loading ImageNet weights
            check_model_name(name, pretrained=True)
            model = freeze_backbone(build_model(name, num_classes=1000, image_size=image_size), num_classes=num_classes)
        else:
            model = build_model(name, num_classes=num_classes, image_size=image_size)
    return count_parameters(model)


def build_model(
    name: str,
    *,
    num_classes: int = 8,
    image_size: int = 352,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
    allow_download: bool = True,
) -> nn.Module:
    """Build the thesis configuration `name`: randomly initialised, or ImageNet weights with a frozen backbone.

    Pretrained weights come from `weights_file` (a state_dict of torchvision's ImageNet model) when given,
    else from torchvision's cache (TORCH_HOME), downloading them there if `allow_download`.
    """
    check_model_name(name, pretrained=pretrained)
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"{name}: image_size must be an integer of at least {MIN_IMAGE_SIZE}, got {image_size!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{name}: num_classes must be an integer of at least 2, got {num_classes!r}")
    if weights_file is not None and not pretrained:
        raise ValueError(f"{name}: weights_file={str(weights_file)!r} is only used with pretrained=True")
    try:
        model = REGISTRY[name](num_classes=1000 if pretrained else num_classes, image_size=image_size)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    if not pretrained:
        return model
    state_dict, source = _imagenet_state_dict(name, weights_file=weights_file, allow_download=allow_download)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"{source} does not hold torchvision's ImageNet weights for {name}: {error}") from None
    return freeze_backbone(model, num_classes=num_classes)


def freeze_backbone(model: nn.Module, *, num_classes: int) -> nn.Module:
    """Freeze an ImageNet model and give it a new `num_classes` output layer (§4.6, table 5.15).

    ResNet trains only `fc`; ConvNeXt and MobileNetV3 train their whole `classifier` block, whose last
    Linear is replaced.
    """
    model.requires_grad_(False)
    if isinstance(model, tvm.ResNet):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        head = model.fc
    elif isinstance(model, (tvm.ConvNeXt, tvm.MobileNetV3)):
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
        head = model.classifier
    else:
        raise ValueError(f"no pretrained head rule for {type(model).__name__}; only ResNet, MobileNetV3, ConvNeXt")
    head.requires_grad_(True)
    return model


def imagenet_weights(name: str, *, allow_download: bool = True) -> str:
    """Make sure torchvision's ImageNet weights for `name` are in its cache (downloading them if allowed); their path.

    Raises the same FileNotFoundError, with the URL and the folder, as a pretrained build_model would.
    """
    check_model_name(name, pretrained=True)
    return _imagenet_state_dict(name, weights_file=None, allow_download=allow_download)[1]


def _imagenet_state_dict(
    name: str, *, weights_file: str | Path | None, allow_download: bool
) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet state_dict for `name` and where it came from."""
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: weights_file {str(path)!r} does not exist")
        return torch.load(path, map_location="cpu", weights_only=True), str(path)
    weights = IMAGENET_WEIGHTS[name]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if cached.is_file() or allow_download:
        try:
            return weights.get_state_dict(progress=False, map_location="cpu"), str(cached)
        except Exception as error:  # network, disk or a corrupt cache file: all end in the same advice
            reason = f"reading or downloading them failed ({type(error).__name__}: {error})"
    else:
        reason = "they are not in torchvision's cache and allow_download is False"
    raise FileNotFoundError(
        f"{name}: pretrained=True needs torchvision's ImageNet weights {weights!r}, but {reason}. "
        f"Download {weights.url} to {cached} (the torch hub checkpoints folder; set TORCH_HOME to move it), "
        f"or pass weights_file=PATH to a copy."
    )
