"""A trial's splits on the training device: uint8 images, normalised there (§4.2), training batches augmented.

`DeviceSplit` keeps a split where the model trains and yields its batches; `to_input` turns uint8 images into
the model's normalised float input; `channel_statistics` measures a split's mean and std (normalise="measured");
`Augmentation` applies the thesis's future work's augmentations (§7.2) on the device, seeded.
"""

from __future__ import annotations

import copy
import functools
import math
import typing

import numpy as np
import torch

from raybench.catalog import MEAN, STD


def to_input(
    x: torch.Tensor,
    channels: int,
    *,
    mean: typing.Sequence[float] = (MEAN,),
    std: typing.Sequence[float] = (STD,),
    augment: typing.Callable[[torch.Tensor], torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 images -> normalised float32 (N, channels, H, W): (x / 255 - mean) / std per channel (§4.2).

    Greyscale images (N, H, W) become `channels` views of one (§4.2); colour ones are (N, 3, H, W) already.
    `augment` changes the (N, C, H, W) images scaled to [0, 1] before they are normalised. A `mask` (N, H, W) of 0/1
    is the last channel (input="..._mask", §7.2), augmented with the image (moved as it is, never recoloured) and
    normalised as a pixel of 0 or 255 is with the thesis's mean and std.
    """
    grey = x.ndim == 3
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        raise ValueError(f"to_input expects uint8 images shaped (N, H, W) or (N, C, H, W), got {x.dtype} {x.shape}")
    image_channels = channels - (mask is not None)
    if image_channels < 1 or not (grey or x.shape[1] == image_channels):
        raise ValueError(f"channels must be positive, and {x.shape[1]} for colour images, got {image_channels}")
    if mask is not None and (mask.shape != (x.shape[0], *x.shape[-2:])):
        raise ValueError(f"a mask must be shaped (N, H, W) as its images {tuple(x.shape)}, got {tuple(mask.shape)}")
    x = x.to(torch.float32).div_(255.0)
    x = x.unsqueeze(1) if grey else x
    if mask is not None:
        x = torch.cat([x, mask.to(torch.float32).unsqueeze(1)], 1)
    if augment is not None:
        x = augment(x)
    if mask is not None:
        x, mask_channel = x[:, :-1], x[:, -1:].sub(MEAN).div_(STD)
        x = _normalise(x, mean, std)
        image = x.expand(-1, image_channels, -1, -1) if grey else x
        return torch.cat([image, mask_channel], 1)
    x = _normalise(x, mean, std)
    return x.expand(-1, channels, -1, -1) if grey else x


def _normalise(x: torch.Tensor, mean: typing.Sequence[float], std: typing.Sequence[float]) -> torch.Tensor:
    if len(mean) == 1:  # Python numbers: the thesis's normalisation exactly as it always ran
        x = x.sub_(mean[0]).div_(std[0])
    else:
        x = x.sub_(x.new_tensor(mean).view(-1, 1, 1)).div_(x.new_tensor(std).view(-1, 1, 1))
    return x


def channel_statistics(x: torch.Tensor, *, chunk: int = 64) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of uint8 images (N, H, W) or (N, C, H, W) per channel, in [0, 1] units (normalise="measured").

    Summed as integers in chunks: exact whatever the split's size, and no float copy of the split.
    """
    x = x.unsqueeze(1) if x.ndim == 3 else x
    total = torch.zeros(x.shape[1], dtype=torch.int64, device=x.device)
    squares = torch.zeros_like(total)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].to(torch.int64)
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    n = x.numel() // x.shape[1]
    mean = [s / n for s in total.tolist()]
    std = [math.sqrt(max(q / n - m * m, 0.0)) for q, m in zip(squares.tolist(), mean, strict=True)]
    if n == 0 or min(std) == 0:
        raise ValueError(f"normalise='measured' needs a training split whose pixels vary; its std is {std}")
    return tuple(m / 255 for m in mean), tuple(s / 255 for s in std)


class Augmentation:
    """§7.2: random changes to one epoch's training batches, drawn on their device from `generator`.

    Each of `ops` is applied in AUGMENTATIONS order to images scaled to [0, 1], each image drawing its own:
    flip: horizontal and vertical, each with probability 1/2; rot90: 0-3 quarter turns (the crop is square);
    jitter: exposure and contrast, x' = (x - m) c + m + b with m the image's mean, c in [0.8, 1.2], b in [-0.1, 0.1];
    shift: a translation of up to SHIFT of the side in each direction, padded with the normalisation mean (0 once
    normalised); noise: Gaussian of std NOISE. Jitter and noise are clipped to [0, 1]. With `mask_channel`, the last
    channel is a mask: flips, turns and shifts move it with the image (shifted in with 0), jitter and noise leave it.
    """

    SHIFT, CONTRAST, EXPOSURE, NOISE = 0.08, 0.2, 0.1, 0.02

    def __init__(
        self,
        ops: typing.Sequence[str],
        *,
        generator: torch.Generator,
        fill: typing.Sequence[float],
        mask_channel: bool = False,
    ) -> None:
        self.ops, self.generator, self.fill, self.mask_channel = tuple(ops), generator, tuple(fill), mask_channel

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator, device=device)
        return (low + (high - low) * u).view(-1, 1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, device = len(x), x.device
        if "flip" in self.ops:
            flips = torch.rand(2, n, generator=self.generator, device=device).view(2, n, 1, 1, 1) < 0.5
            x = torch.where(flips[0], x.flip(-1), x)
            x = torch.where(flips[1], x.flip(-2), x)
        if "rot90" in self.ops:
            turns = torch.randint(4, (n,), generator=self.generator, device=device).view(-1, 1, 1, 1)
            x = functools.reduce(lambda out, k: torch.where(turns == k, torch.rot90(x, k, (-2, -1)), out), (1, 2, 3), x)
        x, mask = (x[:, :-1], x[:, -1:]) if self.mask_channel else (x, None)
        if "jitter" in self.ops:
            contrast = self._uniform(n, 1 - self.CONTRAST, 1 + self.CONTRAST, device)
            exposure = self._uniform(n, -self.EXPOSURE, self.EXPOSURE, device)
            mean = x.mean((1, 2, 3), keepdim=True)
            x = ((x - mean) * contrast + mean + exposure).clamp_(0, 1)
        if "shift" in self.ops:
            x = self._shift(x if mask is None else torch.cat([x, mask], 1))
            x, mask = (x[:, :-1], x[:, -1:]) if mask is not None else (x, None)
        if "noise" in self.ops:
            noise = torch.randn(x.shape, generator=self.generator, device=device)
            x = (x + self.NOISE * noise).clamp_(0, 1)
        if mask is not None:
            x = torch.cat([x, mask], 1)
        return x

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        pad = round(self.SHIFT * max(h, w))
        if pad == 0:
            return x
        offsets = torch.randint(2 * pad + 1, (2, n), generator=self.generator, device=x.device)
        image = c - self.mask_channel  # a shifted mask brings in no cell
        fill = (self.fill if len(self.fill) == image else self.fill * image) + ((0.0,) if self.mask_channel else ())
        fill = x.new_tensor(fill).view(1, c, 1, 1)
        padded = fill.expand(n, c, h + 2 * pad, w + 2 * pad).clone()
        padded[:, :, pad : pad + h, pad : pad + w] = x
        rows = (offsets[0].view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (offsets[1].view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        images = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        channels = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[images, channels, rows, cols]


class DeviceSplit:
    """One split kept on the training device as uint8; batches are normalised there with `mean` and `std` (§4.2).

    Greyscale splits are (N, H, W), colour ones (N, 3, H, W); `mask` (N, H, W) of 0/1 is the model's last channel
    (input="..._mask", §7.2).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        channels: int,
        device: torch.device,
        channels_last: bool = False,
        mean: typing.Sequence[float] = (MEAN,),
        std: typing.Sequence[float] = (STD,),
        mask: np.ndarray | None = None,
    ) -> None:
        self.x = torch.from_numpy(np.array(x, dtype=np.uint8)).to(device)  # a copy: the cache is a read-only memmap
        self.mask = None if mask is None else torch.from_numpy(np.array(mask, dtype=np.uint8)).to(device)
        self.y = torch.from_numpy(np.array(y, dtype=np.int64)).to(device)
        self.channels, self.channels_last = channels, channels_last
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.y)

    def batches(
        self,
        batch_size: int,
        order: torch.Tensor | None = None,
        *,
        augment: typing.Callable[[torch.Tensor], torch.Tensor] | None = None,
        part: typing.Callable[[int], slice] | None = None,
    ) -> typing.Iterator[tuple]:
        """(inputs, labels) in `order` (indices) or in split order, `augment`ed if given; the last may be short.

        With `part` (distributed.Group.part), (this worker's part of the inputs, its labels, the batch's size): the
        whole batch is built and augmented as one process would, then cut, so every image draws what it would.
        """
        for start in range(0, len(self), batch_size):
            index = slice(start, start + batch_size) if order is None else order[start : start + batch_size]
            mask = None if self.mask is None else self.mask[index]
            x = to_input(self.x[index], self.channels, mean=self.mean, std=self.std, augment=augment, mask=mask)
            y = self.y[index]
            if part is not None:
                mine = part(len(y))
                x, y = x[mine], (y[mine], len(y))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield (x, *y) if part is not None else (x, y)

    def subset(self, index: slice) -> DeviceSplit:
        """The images `index` of this split (views, not copies), normalised as this split is."""
        out = copy.copy(self)
        out.x, out.y = self.x[index], self.y[index]
        out.mask = None if self.mask is None else self.mask[index]
        return out
