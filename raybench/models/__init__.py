"""The builders of the thesis's 22 configurations (§4.5) and of their pretrained variants (§4.6, table 5.15), of the
future work's architectures (chapter 7: ConvMixer, Xception; ImageNet ViTs, §7.2) and of a grid's own models.

The configurations themselves (names, architectures, batch sizes, weights) are records in `catalog`;
`build_model(name, ...)` is the only way the rest of raybench makes a network. At image_size=352 and
8 classes every parameter count of the thesis's configurations equals the thesis's exactly. The package's files:
`architectures` (our own networks), `builders` (the table of builders), `pretrained` (ImageNet weights and the new
head), `channels` (the first layer for other input channels); this file builds, counts and saves.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raybench import catalog
from raybench.models import builders
from raybench.models.architectures import ConvMixer, LeNet5, Xception
from raybench.models.builders import BUILDERS
from raybench.models.channels import adapt_first_layer
from raybench.models.pretrained import (
    fit_position_embedding,
    freeze_backbone,
    imagenet_state_dict,
    imagenet_weights,
    interpolate_position_embedding,
)

__all__ = [
    "BUILDERS",
    "ConvMixer",
    "LeNet5",
    "Xception",
    "adapt_first_layer",
    "build_model",
    "count_parameters",
    "freeze_backbone",
    "imagenet_weights",
    "interpolate_position_embedding",
    "load_weights",
    "parameter_counts",
    "weight_arrays",
]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@functools.cache
def parameter_counts(
    name: str, *, pretrained: bool = False, image_size: int = 352, num_classes: int = 8, channels: int | None = None
) -> tuple[int, int]:
    """(total, trainable) parameters of a configuration taking `channels` (default: its own), counted on the meta
    device (no memory, no weights)."""
    with torch.device("meta"):
        if pretrained:  # the same head rule as the loading path, without loading ImageNet weights
            config = catalog.configuration(name, pretrained=True)
            model = build_model(name, num_classes=1000, image_size=image_size)
            model = adapt_first_layer(model, channels=channels or config.channels, native=config.channels)
            model = freeze_backbone(model, num_classes=num_classes)
        else:
            model = build_model(name, num_classes=num_classes, image_size=image_size, channels=channels)
    return count_parameters(model)


def build_model(
    name: str,
    *,
    num_classes: int = 8,
    image_size: int = 352,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
    allow_download: bool = True,
    channels: int | None = None,
    finetune: str = "head",
    mask_channel: bool = False,
) -> nn.Module:
    """Build the thesis configuration `name`: randomly initialised, or ImageNet weights with a frozen backbone.

    Pretrained weights come from `weights_file` (a state_dict of torchvision's ImageNet model) when given,
    else from torchvision's cache (TORCH_HOME), downloading them there if `allow_download`. `channels` other than
    the configuration's adapts the first layer (`adapt_first_layer`); `finetune="all"` trains a pretrained
    model's whole network, not only its new head. With `mask_channel` the last of `channels` is a mask, whose
    ImageNet first-layer weights start at zero.
    """
    config = catalog.configuration(name, pretrained=pretrained)
    catalog.check_image_size(name, image_size)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{name}: num_classes must be an integer of at least 2, got {num_classes!r}")
    if weights_file is not None and not pretrained:
        raise ValueError(f"{name}: weights_file={str(weights_file)!r} is only used with pretrained=True")
    model = builders.builder(config)(config, num_classes=1000 if pretrained else num_classes, image_size=image_size)
    if not pretrained:
        return adapt_first_layer(model, channels=channels or config.channels, native=config.channels)
    state_dict, source = imagenet_state_dict(name, weights_file=weights_file, allow_download=allow_download)
    state_dict = fit_position_embedding(state_dict, model)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"{source} does not hold torchvision's ImageNet weights for {name}: {error}") from None
    model = adapt_first_layer(
        model, channels=channels or config.channels, native=config.channels, keep_weights=True, extra=int(mask_channel)
    )
    return freeze_backbone(model, num_classes=num_classes, finetune=finetune)


def load_weights(model: nn.Module, path: str | Path, *, name: str) -> nn.Module:
    """Start `model` from an earlier trial's tested weights (`init_from`): the .npz its results keep under weights/,
    or a state_dict saved with torch.save. The whole network trains from there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}: init_from weights {str(path)!r} do not exist; run the grid that saves them first "
            "(a sweep with save_weights: True writes RESULTS/NAME/weights/TRIAL_ID.npz)"
        )
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as arrays:
            state = {key: torch.from_numpy(arrays[key]) for key in arrays.files}
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{name}: init_from {str(path)!r} holds weights of another model ({first})") from None
    return model


def weight_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's state_dict as numpy arrays (what a trial with save_weights keeps with its results)."""
    return {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}
