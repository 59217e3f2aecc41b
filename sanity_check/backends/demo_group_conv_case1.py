"""Depthwise-separable encoder / transposed-conv decoder with four inputs (the reference's group-conv demo).

Reference usage: ``DemoNetGroupConvCase1(norm_type='in', affine=True)`` called on two ``[1, 3, 512, 512]`` images
and two ``[1, 384, 16, 16]`` / ``[1, 64, 16, 16]`` feature maps; the output is a tuple whose first item is
compared.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM_TYPES = ("in", "bn", "gn")


def make_norm(norm_type: str, channels: int, affine: bool) -> nn.Module:
    """InstanceNorm2d (``"in"``), BatchNorm2d (``"bn"``) or GroupNorm with 4 groups (``"gn"``)."""
    if norm_type == "in":
        return nn.InstanceNorm2d(channels, affine=affine)
    if norm_type == "bn":
        return nn.BatchNorm2d(channels, affine=affine)
    if norm_type == "gn":
        return nn.GroupNorm(4, channels, affine=affine)
    raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")


class SeparableConv(nn.Module):
    """``conv1``: depthwise ``kernel_size`` conv (stride, dilation); ``conv2``: pointwise 1x1 conv to
    ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                               dilation=dilation, groups=in_channels, bias=bias)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))


class DemoNetGroupConvCase1(nn.Module):
    """Five stride-2 separable stages (``conv_1`` .. ``conv_5`` with ``norm_1`` .. ``norm_5``) encode the two
    concatenated images to 1/32; ``conv_6`` (dilated separable) fuses them with the two feature maps and its
    output is split by channel slicing: the first ``widths[-1]`` channels go up a transposed-conv decoder with
    skip concatenations (``up_7`` .. ``up_10``, ``conv_11``, ``conv_12``, pooling, ``gemm1``, ``gemm2``), the
    rest is returned as a side output.

    ``forward(image_a, image_b, features_a, features_b)``: images ``[B, 3, H, W]``, ``features_a``
    ``[B, features_a_channels, H/32, W/32]``, ``features_b`` ``[B, features_b_channels, H/32, W/32]``;
    returns ``(logits [B, num_classes], side [B, side_channels, H/32, W/32])``.
    """

    def __init__(self, norm_type: str = "in", affine: bool = True, bias: bool = True,
                 widths: Sequence[int] = (24, 48, 96, 192, 256), features_a_channels: int = 384,
                 features_b_channels: int = 64, side_channels: int = 512, num_classes: int = 10) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths needs five encoder widths, got {tuple(widths)}")
        w = list(widths)
        self.leaky_relu = nn.LeakyReLU()
        self.conv_1 = SeparableConv(6, w[0], 5, stride=2, padding=2, bias=bias)
        self.norm_1 = make_norm(norm_type, w[0], affine)
        for index in range(1, 5):
            setattr(self, f"conv_{index + 1}", SeparableConv(w[index - 1], w[index], 3, 2, 1, bias=bias))
            setattr(self, f"norm_{index + 1}", make_norm(norm_type, w[index], affine))
        fused = features_b_channels + w[4] + features_a_channels
        self.conv_6 = SeparableConv(fused, w[4] + side_channels, 2, padding=1, dilation=2, bias=bias)
        self.split = w[4]
        up_in = [w[4], 2 * w[3], 2 * w[2], 2 * w[1]]
        for index, (in_channels, out_channels) in enumerate(zip(up_in, [w[3], w[2], w[1], w[0]])):
            setattr(self, f"up_{index + 7}", nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                                                                output_padding=1, bias=bias))
            setattr(self, f"norm_{index + 7}", make_norm(norm_type, out_channels, affine))
        self.conv_11 = nn.Conv2d(2 * w[0], w[0], 3, padding=1, bias=bias)
        self.norm_11 = make_norm(norm_type, w[0], affine)
        self.conv_12 = nn.Conv2d(w[0], 2 * w[0], 3, padding=1, bias=bias)
        self.gemm1 = nn.Linear(2 * w[0], w[0])
        self.gemm2 = nn.Linear(w[0], num_classes)

    def _encode(self, x: Tensor) -> Tuple[Tensor, ...]:
        features = []
        for index in range(1, 6):
            conv, norm = getattr(self, f"conv_{index}"), getattr(self, f"norm_{index}")
            x = self.leaky_relu(norm(conv(x)))
            features.append(x)
        return tuple(features)

    def forward(self, image_a: Tensor, image_b: Tensor, features_a: Tensor, features_b: Tensor):
        skips = list(self._encode(torch.cat([image_a, image_b], dim=1)))
        fused = self.conv_6(torch.cat([features_b, skips.pop(), features_a], dim=1))
        x, side = fused[:, :self.split], fused[:, self.split:]
        for index in range(7, 11):
            up, norm = getattr(self, f"up_{index}"), getattr(self, f"norm_{index}")
            x = torch.cat([norm(up(x)), skips.pop()], dim=1)
        x = self.conv_12(self.leaky_relu(self.norm_11(self.conv_11(x))))
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.gemm2(self.gemm1(pooled)), side
