"""ImageNet weights for the pretrained fine-tunes (§4.6, table 5.15; ViT §7.2): fetching them, fitting a ViT's
position embedding to 352, and the new head on a frozen backbone."""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from raybench import catalog

# The module whose last Linear becomes the new head: ResNet's `fc` itself; the whole `classifier` block of ConvNeXt
# and MobileNetV3 (table 5.15's trainable counts); the ViT's `heads` (§7.2)
HEADS: dict[type, str] = {
    tvm.ResNet: "fc",
    tvm.ConvNeXt: "classifier",
    tvm.MobileNetV3: "classifier",
    tvm.VisionTransformer: "heads",
}


def freeze_backbone(model: nn.Module, *, num_classes: int, finetune: str = "head") -> nn.Module:
    """Freeze an ImageNet model and give it a new `num_classes` output layer (§4.6, table 5.15).

    ResNet trains only `fc`; ConvNeXt and MobileNetV3 train their whole `classifier` block, whose last
    Linear is replaced. finetune="all" (§7.2) replaces the same layer and leaves every parameter trainable.
    """
    if finetune not in ("head", "all"):
        raise ValueError(f"finetune must be one of head, all, got {finetune!r}")
    attribute = HEADS.get(type(model))
    if attribute is None:
        raise ValueError(
            f"no pretrained head rule for {type(model).__name__}; only {', '.join(t.__name__ for t in HEADS)}"
        )
    model.requires_grad_(False)
    head = getattr(model, attribute)
    if isinstance(head, nn.Linear):
        head = nn.Linear(head.in_features, num_classes)
        setattr(model, attribute, head)
    else:  # a block ending in its Linear, which is replaced; the whole block trains
        head[-1] = nn.Linear(head[-1].in_features, num_classes)
    (model if finetune == "all" else head).requires_grad_(True)
    return model


def imagenet_weights(name: str, *, allow_download: bool = True) -> str:
    """Make sure torchvision's ImageNet weights for `name` are in its cache (downloading them if allowed); their path.

    Raises the same FileNotFoundError, with the URL and the folder, as a pretrained build_model would.
    """
    catalog.configuration(name, pretrained=True)
    return imagenet_state_dict(name, weights_file=None, allow_download=allow_download)[1]


def imagenet_state_dict(
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


def fit_position_embedding(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict:
    """ImageNet ViT weights with their position embedding interpolated to `model`'s patch grid (other weights as
    they are)."""
    key = "encoder.pos_embedding"
    if (
        not isinstance(model, tvm.VisionTransformer)
        or key not in state_dict
        or state_dict[key].shape == model.encoder.pos_embedding.shape
    ):
        return state_dict
    grid = model.image_size // model.patch_size
    return {**state_dict, key: interpolate_position_embedding(state_dict[key], grid)}
