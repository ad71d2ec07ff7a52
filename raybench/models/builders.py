"""One literal table from a catalog record's `builder` to the function that builds the network, randomly
initialised with `num_classes` outputs for `image_size` images."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from fractions import Fraction

import torchvision.models as tvm
from mlp_mixer_pytorch import MLPMixer
from torch import nn

from raybench import catalog
from raybench.models.architectures import ConvMixer, LeNet5, Xception


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


def _convmixer(config: catalog.Configuration, *, num_classes: int, image_size: int) -> nn.Module:
    del image_size  # the token grid follows the image; the pooling does not care
    return ConvMixer(
        dim=config.dim,
        depth=config.depth,
        kernel_size=config.kernel_size,
        patch_size=config.patch_size,
        num_classes=num_classes,
    )


def _xception(config: catalog.Configuration, *, num_classes: int, image_size: int) -> nn.Module:
    del image_size  # valid stem convolutions and four stride-2 stages: 32 pixels and up work
    return Xception(num_classes=num_classes)


def _imported(config: catalog.Configuration, *, num_classes: int, image_size: int) -> nn.Module:
    """A grid's own model: `builder` "module:function", imported here (the trial process), called with
    num_classes and image_size."""
    module_name, _, function = config.builder.partition(":")
    if config.builder_path and config.builder_path not in sys.path:
        sys.path.insert(0, config.builder_path)  # the grid file's folder, where its modules live
    try:
        build = getattr(importlib.import_module(module_name), function)
    except Exception as error:  # ImportError, AttributeError, or whatever the module raises while importing
        where = f" (searched the grid's folder {config.builder_path} and sys.path)" if config.builder_path else ""
        raise ValueError(
            f"model {config.name!r}: its builder {config.builder!r} cannot be imported in this process"
            f"{where}: {type(error).__name__}: {error}"
        ) from None
    model = build(num_classes=num_classes, image_size=image_size)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {config.name!r}: {config.builder} returned {type(model).__name__}, not a torch Module")
    return model


# A catalog record's `builder` -> the function that builds it (torchvision's take their own name, `config.builder`).
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": _lenet5,
    **dict.fromkeys(("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"), _torchvision),
    **dict.fromkeys(("mobilenet_v3_small", "mobilenet_v3_large"), _torchvision),
    **dict.fromkeys(("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"), _torchvision),
    **dict.fromkeys(("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32"), _vit),
    "mlp_mixer": _mlp_mixer,
    "convmixer": _convmixer,
    "xception": _xception,
}


def builder(config: catalog.Configuration) -> Callable[..., nn.Module]:
    """The function that builds a catalog record: one of BUILDERS, or a grid's own ("module:function")."""
    if ":" in config.builder:
        return _imported
    try:
        return BUILDERS[config.builder]
    except KeyError:
        raise ValueError(
            f"model {config.name!r}: unknown builder {config.builder!r}; builders: {', '.join(BUILDERS)}, "
            "or 'module:function' for a grid's own"
        ) from None
