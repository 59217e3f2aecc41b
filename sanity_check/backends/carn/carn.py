"""CARN: cascading residual network for image super-resolution (Ahn et al., ECCV 2018)."""
import torch
from torch import Tensor, nn

from .ops import BasicBlock, MeanShift, ResidualBlock, UpsampleBlock


class Block(nn.Module):
    """Three residual blocks with cascading concatenations fused by 1x1 conv + ReLU (128/192/256 -> 64)."""

    def __init__(self, channels: int = 64, group: int = 1) -> None:
        super().__init__()
        self.b1 = ResidualBlock(channels, group)
        self.b2 = ResidualBlock(channels, group)
        self.b3 = ResidualBlock(channels, group)
        self.c1 = BasicBlock(2 * channels, channels)
        self.c2 = BasicBlock(3 * channels, channels)
        self.c3 = BasicBlock(4 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        c1 = torch.cat([x, self.b1(x)], 1)
        o1 = self.c1(c1)
        c2 = torch.cat([c1, self.b2(o1)], 1)
        o2 = self.c2(c2)
        c3 = torch.cat([c2, self.b3(o2)], 1)
        return self.c3(c3)


class CarnNet(nn.Module):
    """CARN with 64 feature channels: mean shift, entry conv, three cascading blocks, upsampler, exit conv.

    ``CarnNet(scale=2, multi_scale=False, group=1)``: 964,187 parameters (24 of them the frozen mean shifts) and
    3961.44 M conv MACs for a ``1x3x64x64`` input. ``forward(x, scale)`` returns ``[B, 3, scale*H, scale*W]``.
    """

    def __init__(self, scale: int = 2, multi_scale: bool = False, group: int = 1, channels: int = 64) -> None:
        super().__init__()
        self.sub_mean = MeanShift(sign=-1)
        self.add_mean = MeanShift(sign=1)
        self.entry = nn.Conv2d(3, channels, 3, padding=1)
        self.b1 = Block(channels, group)
        self.b2 = Block(channels, group)
        self.b3 = Block(channels, group)
        self.c1 = BasicBlock(2 * channels, channels)
        self.c2 = BasicBlock(3 * channels, channels)
        self.c3 = BasicBlock(4 * channels, channels)
        self.upsample = UpsampleBlock(channels, scale, multi_scale)
        self.exit = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: Tensor, scale: int) -> Tensor:
        x = self.entry(self.sub_mean(x))
        c1 = torch.cat([x, self.b1(x)], 1)
        o1 = self.c1(c1)
        c2 = torch.cat([c1, self.b2(o1)], 1)
        o2 = self.c2(c2)
        c3 = torch.cat([c2, self.b3(o2)], 1)
        o3 = self.c3(c3)
        return self.add_mean(self.exit(self.upsample(o3, scale)))
