"""A model built for the configuration's input channels made to take others (input="grey1" or "colour", §7.2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torchvision.models as tvm
from torch import nn


def adapt_first_layer(
    model: nn.Module, *, channels: int, native: int, keep_weights: bool = False, extra: int = 0
) -> nn.Module:
    """Make `model`, built for `native` input channels, take `channels` (input="grey1", "colour" or a mask channel,
    §7.2).

    Its first layer (the first Conv2d or Linear it registers: a stem, or the patch embedding of ViT and MLP-Mixer)
    is replaced by one of the same shape for `channels`, initialised as the architecture initialises it. With
    `keep_weights` (ImageNet weights) the image's channels (all but the last `extra`) keep the old weights, summed
    over the input channels for 1 (so a grey image gives what its 3-channel copy gave), and the `extra` ones (a
    mask) start at zero, so the pretrained network starts from what it gives without them.
    """
    if channels == native:
        return model
    name, layer = next(((n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))), ("", None))
    if keep_weights and channels - extra not in (1, native):
        raise ValueError(
            f"kept first-layer weights can only be summed to 1 channel or kept for {native}, not spread to "
            f"{channels - extra}"
        )
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype} if layer is not None else {}
    if isinstance(layer, nn.Conv2d) and layer.in_channels == native and layer.groups == 1:
        new = nn.Conv2d(
            channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            **factory,
        )
        summed = _kept(layer.weight.detach(), 1, channels - extra, extra) if keep_weights else None
    elif isinstance(layer, nn.Linear) and layer.in_features % native == 0:  # MLP-Mixer: "(p1 p2 c)", channels last
        new = nn.Linear(layer.in_features // native * channels, layer.out_features, layer.bias is not None, **factory)
        grouped = layer.weight.detach().unflatten(1, (-1, native))
        summed = _kept(grouped, 2, channels - extra, extra).flatten(1) if keep_weights else None
    else:
        raise ValueError(
            f"cannot adapt {type(model).__name__} to {channels} input channel(s): its first layer {name or '(none)'} "
            f"is not a Conv2d or Linear taking {native} channels"
        )
    if keep_weights:
        with torch.no_grad():
            new.weight.copy_(summed)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
    else:
        _initialise_like(model, new)
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, new)
    return model


def _kept(weight: torch.Tensor, dim: int, image: int, extra: int) -> torch.Tensor:
    """First-layer weights with input channels along `dim`: summed to 1 or kept for `image`, then `extra` zeros."""
    kept = weight.sum(dim, keepdim=True) if image == 1 else weight
    zeros = kept.new_zeros((*kept.shape[:dim], extra, *kept.shape[dim + 1 :]))
    return torch.cat([kept, zeros], dim)


def _kaiming(weight: torch.Tensor) -> None:
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


# torchvision's own initialisation of each family's first layer (its bias zeroed); other models keep PyTorch's default
FIRST_LAYER_INIT: dict[type, Callable[[torch.Tensor], None]] = {
    tvm.ResNet: _kaiming,
    tvm.MobileNetV3: _kaiming,
    tvm.ConvNeXt: lambda weight: nn.init.trunc_normal_(weight, std=0.02),
    tvm.VisionTransformer: lambda weight: nn.init.trunc_normal_(weight, std=math.sqrt(1 / weight[0].numel())),
}


def _initialise_like(model: nn.Module, layer: nn.Conv2d | nn.Linear) -> None:
    init = FIRST_LAYER_INIT.get(type(model))
    if init is None:
        return
    init(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
