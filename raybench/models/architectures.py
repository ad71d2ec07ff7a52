"""raybench's own networks: the thesis's LeNet-5 (§4.5) and the future work's ConvMixer and Xception (chapter 7).
torchvision and mlp-mixer-pytorch build the others (models.builders)."""

from __future__ import annotations

import torch
from torch import nn


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
