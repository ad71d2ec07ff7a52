"""The builders of the thesis's 22 configurations (§4.5) and of their pretrained variants (§4.6, table 5.15), of the
future work's architectures (chapter 7: ConvMixer, Xception; ImageNet ViTs, §7.2) and of a grid's own models.

The configurations themselves (names, architectures, batch sizes, weights) are records in `catalog`;
`build_model(name, ...)` is the only way the rest of raybench makes a network. At image_size=352 and
8 classes every parameter count of the thesis's configurations equals the thesis's exactly.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
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


class ConvMixer(nn.Module):
    """ConvMixer-h/d (Trockman & Kolter 2022, "Patches are all you need?"): a patch embedding (a p x p convolution
    of stride p), then d blocks that mix space with a depthwise k x k convolution (in a residual) and channels with
    a pointwise one, each followed by GELU and BatchNorm; global average pooling and a linear classifier."""

    def __init__(self, *, dim: int, depth: int, kernel_size: int, patch_size: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size), nn.GELU(), nn.BatchNorm2d(dim)
        )
        self.blocks = nn.Sequential(*(_ConvMixerBlock(dim, kernel_size) for _ in range(depth)))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class _ConvMixerBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        # "same" padding: the token grid keeps its size through every block
        self.spatial = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size, groups=dim, padding=kernel_size // 2), nn.GELU(), nn.BatchNorm2d(dim)
        )
        self.channel = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=1), nn.GELU(), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x + self.spatial(x))


class SeparableConv2d(nn.Sequential):
    """A depthwise 3x3 convolution then a pointwise 1x1 one, with nothing between them (Chollet 2017, §3)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


class _XceptionBlock(nn.Module):
    """Separable convolutions, each after a ReLU and followed by BatchNorm, plus a shortcut; `widths` are their
    outputs. A block that downsamples ends in a 3x3 max pool of stride 2 and its shortcut is a strided 1x1 conv."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], *, downsample: bool, first_relu: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            if i or first_relu:
                layers.append(nn.ReLU())
            layers += [SeparableConv2d(in_channels if i == 0 else widths[i - 1], width), nn.BatchNorm2d(width)]
        if downsample:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, widths[-1], 1, stride=2, bias=False), nn.BatchNorm2d(widths[-1])
            )
        else:
            self.shortcut = nn.Identity()
        self.residual = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class Xception(nn.Module):
    """Xception (Chollet 2017, fig. 5): an entry flow (two convolutions, three downsampling blocks to 728 channels),
    a middle flow of 8 identical blocks and an exit flow (a downsampling block to 1024 channels, separable
    convolutions to 1536 and 2048), global average pooling and a linear classifier. Every convolution is followed
    by BatchNorm and none has a bias; 22,855,952 parameters with 1000 classes, the paper's 22.9 M."""

    def __init__(self, *, num_classes: int, middle_blocks: int = 8) -> None:
        super().__init__()
        self.entry = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            _XceptionBlock(64, (128, 128), downsample=True, first_relu=False),  # the stem's ReLU came just before
            _XceptionBlock(128, (256, 256), downsample=True),
            _XceptionBlock(256, (728, 728), downsample=True),
        )
        self.middle = nn.Sequential(*(_XceptionBlock(728, (728,) * 3, downsample=False) for _ in range(middle_blocks)))
        self.exit = nn.Sequential(
            _XceptionBlock(728, (728, 1024), downsample=True),
            SeparableConv2d(1024, 1536),
            nn.BatchNorm2d(1536),
            nn.ReLU(),
            SeparableConv2d(1536, 2048),
            nn.BatchNorm2d(2048),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.exit(self.middle(self.entry(x))))


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


# builder name (catalog records' `builder`) -> the function that builds it; torchvision's names are looked up there.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": _lenet5,
    "mlp_mixer": _mlp_mixer,
    "convmixer": _convmixer,
    "xception": _xception,
}


def _builder(config: catalog.Configuration) -> Callable[..., nn.Module]:
    """The function that builds a catalog record: ours (BUILDERS), a grid's own (an import path), or torchvision's."""
    if config.builder in BUILDERS:
        return BUILDERS[config.builder]
    if ":" in config.builder:
        return _imported
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
    channels: int | None = None,
    finetune: str = "head",
) -> nn.Module:
    """Build the thesis configuration `name`: randomly initialised, or ImageNet weights with a frozen backbone.

    Pretrained weights come from `weights_file` (a state_dict of torchvision's ImageNet model) when given,
    else from torchvision's cache (TORCH_HOME), downloading them there if `allow_download`. `channels` other than
    the configuration's adapts the first layer (`adapt_first_layer`); `finetune="all"` trains a pretrained
    model's whole network, not only its new head.
    """
    config = catalog.configuration(name, pretrained=pretrained)
    catalog.check_image_size(name, image_size)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{name}: num_classes must be an integer of at least 2, got {num_classes!r}")
    if weights_file is not None and not pretrained:
        raise ValueError(f"{name}: weights_file={str(weights_file)!r} is only used with pretrained=True")
    model = _builder(config)(config, num_classes=1000 if pretrained else num_classes, image_size=image_size)
    if not pretrained:
        return adapt_first_layer(model, channels=channels or config.channels, native=config.channels)
    state_dict, source = _imagenet_state_dict(name, weights_file=weights_file, allow_download=allow_download)
    if isinstance(model, tvm.VisionTransformer):
        state_dict = _fit_position_embedding(state_dict, model)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"{source} does not hold torchvision's ImageNet weights for {name}: {error}") from None
    model = adapt_first_layer(model, channels=channels or config.channels, native=config.channels, keep_weights=True)
    return freeze_backbone(model, num_classes=num_classes, finetune=finetune)


def freeze_backbone(model: nn.Module, *, num_classes: int, finetune: str = "head") -> nn.Module:
    """Freeze an ImageNet model and give it a new `num_classes` output layer (§4.6, table 5.15).

    ResNet trains only `fc`; ConvNeXt and MobileNetV3 train their whole `classifier` block, whose last
    Linear is replaced. finetune="all" (§7.2) replaces the same layer and leaves every parameter trainable.
    """
    if finetune not in ("head", "all"):
        raise ValueError(f"finetune must be one of head, all, got {finetune!r}")
    model.requires_grad_(False)
    if isinstance(model, tvm.ResNet):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        head = model.fc
    elif isinstance(model, (tvm.ConvNeXt, tvm.MobileNetV3)):
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
        head = model.classifier
    elif isinstance(model, tvm.VisionTransformer):  # §7.2: the ViT's `heads` is its one Linear
        model.heads[-1] = nn.Linear(model.heads[-1].in_features, num_classes)
        head = model.heads
    else:
        raise ValueError(f"no pretrained head rule for {type(model).__name__}; only ResNet, MobileNetV3, ConvNeXt, ViT")
    (model if finetune == "all" else head).requires_grad_(True)
    return model


def adapt_first_layer(model: nn.Module, *, channels: int, native: int, keep_weights: bool = False) -> nn.Module:
    """Make `model`, built for `native` input channels, take `channels` (input="grey1" or "colour", §7.2).

    Its first layer (the first Conv2d or Linear it registers: a stem, or the patch embedding of ViT and MLP-Mixer)
    is replaced by one of the same shape for `channels`, initialised as the architecture initialises it. With
    `keep_weights` (ImageNet weights, 3 -> 1 channel) the new layer's weights are the old ones summed over the input
    channels, so a grey image gives what its 3-channel copy gave.
    """
    if channels == native:
        return model
    name, layer = next(((n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))), ("", None))
    if keep_weights and channels != 1:
        raise ValueError(f"kept first-layer weights can only be summed to 1 channel, not spread to {channels}")
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
        summed = layer.weight.detach().sum(1, keepdim=True) if keep_weights else None
    elif isinstance(layer, nn.Linear) and layer.in_features % native == 0:  # MLP-Mixer: "(p1 p2 c)", channels last
        new = nn.Linear(layer.in_features // native * channels, layer.out_features, layer.bias is not None, **factory)
        summed = layer.weight.detach().unflatten(1, (-1, native)).sum(2) if keep_weights else None
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


def _initialise_like(model: nn.Module, layer: nn.Conv2d | nn.Linear) -> None:
    """torchvision's own initialisation of a model's first layer; other models keep PyTorch's default, as built."""
    if isinstance(model, (tvm.ResNet, tvm.MobileNetV3)):
        nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(model, tvm.ConvNeXt):
        nn.init.trunc_normal_(layer.weight, std=0.02)
    elif isinstance(model, tvm.VisionTransformer):
        nn.init.trunc_normal_(layer.weight, std=math.sqrt(1 / layer.weight[0].numel()))
    else:
        return
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


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


def interpolate_position_embedding(embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """A ViT's position embedding (1, 1 + g*g, d) for a grid x grid patch grid: bicubic over the patch grid, the
    class token's kept (§7.2: ImageNet weights trained at 224 used at 352).

    Pixel centres are aligned (align_corners=False, as DeiT and timm do), in float64: where a new grid point falls on
    an old one, it keeps that embedding exactly (for 14 -> 22 and 7 -> 11: new points 5 and 16 are old 3 and 10).
    """
    cls, patches = embedding[:, :1], embedding[:, 1:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise ValueError(f"a position embedding of {patches.shape[1]} patches is not a square grid")
    if old == grid:
        return embedding
    width = patches.shape[2]
    square = patches.reshape(1, old, old, width).permute(0, 3, 1, 2).double()
    square = nn.functional.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = square.permute(0, 2, 3, 1).reshape(1, grid * grid, width).to(embedding.dtype)
    return torch.cat([cls, patches], dim=1)


def _fit_position_embedding(state_dict: dict[str, torch.Tensor], model: tvm.VisionTransformer) -> dict:
    """ImageNet ViT weights with their position embedding interpolated to `model`'s patch grid."""
    key = "encoder.pos_embedding"
    if key not in state_dict or state_dict[key].shape == model.encoder.pos_embedding.shape:
        return state_dict
    grid = model.image_size // model.patch_size
    return {**state_dict, key: interpolate_position_embedding(state_dict[key], grid)}


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
