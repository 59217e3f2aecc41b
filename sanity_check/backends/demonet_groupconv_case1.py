"""Grouped and depthwise convolution demo with four inputs: an image and three low-resolution feature maps."""
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


class GroupConvBlock(nn.Module):
    """``conv1`` (3x3, ``groups`` groups, optional stride) -> norm -> ReLU -> ``conv2`` (3x3 depthwise) -> norm
    -> ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, groups: int, norm_type: str, affine: bool
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.norm1 = make_norm(norm_type, out_channels, affine)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=False)
        self.norm2 = make_norm(norm_type, out_channels, affine)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(x)))


class DemoNetGroupConvCase1(nn.Module):
    """Image encoder (conv_1..conv_3, /8) fused with a feature map (concat, conv_4) and two guide maps
    (concat, conv_5); the two branches are added and refined (conv_6); 1x1 head.

    ``forward(image, features, guide_a, guide_b)``: ``image`` ``[B, 3, H, W]``, ``features``
    ``[B, feature_channels, H/8, W/8]``, guides ``[B, guide_channels, H/8, W/8]`` each; returns
    ``[B, out_channels, H/8, W/8]``.
    """

    def __init__(
        self,
        norm_type: str = "in",
        affine: bool = True,
        feature_channels: int = 48,
        guide_channels: int = 8,
        out_channels: int = 4,
    ) -> None:
        super().__init__()
        self.conv_1 = GroupConvBlock(3, 16, 2, 1, norm_type, affine)
        self.conv_2 = GroupConvBlock(16, 32, 2, 4, norm_type, affine)
        self.conv_3 = GroupConvBlock(32, 48, 2, 8, norm_type, affine)
        self.conv_4 = GroupConvBlock(48 + feature_channels, 64, 1, 2, norm_type, affine)
        self.conv_5 = GroupConvBlock(2 * guide_channels, 64, 1, 4, norm_type, affine)
        self.conv_6 = GroupConvBlock(64, 32, 1, 1, norm_type, affine)
        self.head = nn.Conv2d(32, out_channels, 1)

    def forward(self, image: Tensor, features: Tensor, guide_a: Tensor, guide_b: Tensor) -> Tensor:
        x = self.conv_3(self.conv_2(self.conv_1(image)))
        fused = self.conv_4(torch.cat([x, features], 1))
        guided = self.conv_5(torch.cat([guide_a, guide_b], 1))
        return self.head(self.conv_6(fused + guided))
