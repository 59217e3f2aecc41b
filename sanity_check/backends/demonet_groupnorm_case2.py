"""GroupNorm demo: GroupNorm inside residual blocks, where the normalised branches are added together."""
import torch.nn.functional as F
from torch import Tensor, nn


class ResidualGroupNormBlock(nn.Module):
    """conv-GN-ReLU-conv-GN plus a shortcut (identity, or 1x1 conv + GN where the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.gn1 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(groups, out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.GroupNorm(groups, out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.gn1(self.conv1(x)))
        return F.relu(self.gn2(self.conv2(out)) + self.shortcut(x))


class DemoNetGroupNormCase2(nn.Module):
    """Stem conv + GN (32 ch, 8 groups), an identity-shortcut block, a projection block to 64 ch, pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.gn_1 = nn.GroupNorm(8, 32)
        self.block_1 = ResidualGroupNormBlock(32, 32)
        self.block_2 = ResidualGroupNormBlock(32, 64, stride=2)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        x = F.relu(self.gn_1(self.conv_1(x)))
        x = self.block_2(self.block_1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
