"""Channel-concatenation demo: a three-way concat and a concat feeding a pooled linear layer directly."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetConcatCase2(nn.Module):
    """x1 (32) -> x2 (48) -> x3 (64) in a chain; cat([x1, x2, x3]) -> bn_4 -> conv_5 -> z (64);
    cat([z, x3]) (128) -> global average pool -> fc (in-dim offsets of both concat inputs meet one Linear).

    At ``1x3x32x32``: 53,546 parameters and 52.791 M MACs.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(32)
        self.conv_2 = nn.Conv2d(32, 48, 3, padding=1, bias=False)
        self.bn_2 = nn.BatchNorm2d(48)
        self.conv_3 = nn.Conv2d(48, 64, 3, padding=1, bias=False)
        self.bn_3 = nn.BatchNorm2d(64)
        self.bn_4 = nn.BatchNorm2d(144)
        self.conv_5 = nn.Conv2d(144, 64, 1, bias=False)
        self.bn_5 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        x1 = F.relu(self.bn_1(self.conv_1(x)))
        x2 = F.relu(self.bn_2(self.conv_2(x1)))
        x3 = F.relu(self.bn_3(self.conv_3(x2)))
        z = F.relu(self.bn_4(torch.cat([x1, x2, x3], 1)))
        z = F.relu(self.bn_5(self.conv_5(z)))
        return self.fc(F.adaptive_avg_pool2d(torch.cat([z, x3], 1), 1).flatten(1))
