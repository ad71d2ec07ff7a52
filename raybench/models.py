"""The builders of the thesis's 22 configurations (§4.5) and of their pretrained variants (§4.6, table 5.15).

The configurations themselves (names, architectures, batch sizes, weights) are records in `catalog`;
`build_model(name, ...)` is the only way the rest of raybench makes a network. At image_size=352 and
8 classes every parameter count equals the thesis's exactly.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from mlp_mixer_pytorch import MLPMixer
from torch import nn

from raybench import catalog


class LeNet5(nn.Module):
    """The thesis's LeNet-5 (§4.5, figure 4.6): 1 input channel; at 352, fc 115600 (16x85x85) -> 120 -> 84 -> classes.

    The thesis counts 13,885,580 parameters: the classic conv(6,5x5)/pool/conv(16,5x5)/pool stack gives
    13,885,536; the 44 left are a BatchNorm after each convolution (2*6 + 2*16).
    """

    def __init__(self, *, num_classes: int = 8, image_size: int = 352) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2  # two valid 5x5 convolutions, each followed by a 2x2 pool
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _torchvision(config: catalog.Configuration, *, num_classes: int, image_size: int) -> nn.Module:
    del image_size  # convolutional networks pool adaptively: any size works
    return getattr(tvm, config.builder)(weights=None, num_classes=num_classes)


def _vit(config: catalog.Configuration, *, num_classes: int, image_size: int) -> nn.Module:
    return getattr(tvm, config.builder)(weights=None, num_classes=num_classes, image_size=image_size)


def _lenet5(config: catalog.Configuration, *, num_classes: int, image_size: int) -> nn.Module:
    return LeNet5(num_classes=num_classes, image_size=image_size)


def _mlp_mixer(config: catalog.Configuration, *, num_classes: int, image_size: int) -> nn.Module:
    """MLP-Mixer with a token-mixing width of 4 x patches and a channel-mixing width of 0.5 x dim (§4.5)."""
    patches = (image_size // config.patch_size) ** 2
    # Since mlp-mixer-pytorch 0.3.0 the token-mixing width is int(expansion_factor * dim), not
    # expansion_factor * patches; a Fraction makes that product exactly 4 * patches.
    model = MLPMixer(
        image_size=image_size,
        channels=3,
        patch_size=config.patch_size,
        dim=config.dim,
        depth=config.depth,
        num_classes=num_classes,
        expansion_factor=Fraction(4 * patches, config.dim),
        expansion_factor_token=0.5,
    )
    token_width = model[2][0].fn[0].out_channels  # first block, token mixing, first Conv1d
    if token_width != 4 * patches:
        raise RuntimeError(
            f"mlp-mixer-pytorch built a token-mixing width of {token_width}, not {4 * patches}; "
            "its expansion_factor changed meaning again: pin mlp-mixer-pytorch>=0.3.1,<0.4"
        )
    return model


def _builder(config: catalog.Configuration) -> Callable[..., nn.Module]:
    """The function that builds a catalog record: ours for LeNet-5 and MLP-Mixer, torchvision's otherwise."""
    if config.builder == "lenet5":
        return _lenet5
    if config.builder == "mlp_mixer":
        return _mlp_mixer
    return _vit if config.patch_size else _torchvision


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@functools.cache
def parameter_counts(
    name: str, *, pretrained: bool = False, image_size: int = 352, num_classes: int = 8
) -> tuple[int, int]:
    """(total, trainable) parameters of a configuration, counted on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        if pretrained:  # the same head rule as the loading path, without loading ImageNet weights
            catalog.configuration(name, pretrained=True)
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
    config = catalog.configuration(name, pretrained=pretrained)
    catalog.check_image_size(name, image_size)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{name}: num_classes must be an integer of at least 2, got {num_classes!r}")
    if weights_file is not None and not pretrained:
        raise ValueError(f"{name}: weights_file={str(weights_file)!r} is only used with pretrained=True")
    model = _builder(config)(config, num_classes=1000 if pretrained else num_classes, image_size=image_size)
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
    catalog.configuration(name, pretrained=True)
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
    weights = tvm.get_weight(catalog.configuration(name, pretrained=True).imagenet_weights)
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
