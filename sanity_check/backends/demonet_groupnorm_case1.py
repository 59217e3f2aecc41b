"""GroupNorm demo: GroupNorm directly after each conv, with different group sizes."""
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetGroupNormCase1(nn.Module):
    """conv-GroupNorm-ReLU x3 (32 ch / 4 groups, 64 / 8, 64 / 16; the last conv strided), pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(3, 32, 3, padding=1)
        self.gn_1 = nn.GroupNorm(4, 32)
        self.conv_2 = nn.Conv2d(32, 64, 3, padding=1)
        self.gn_2 = nn.GroupNorm(8, 64)
        self.conv_3 = nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.gn_3 = nn.GroupNorm(16, 64)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        x = F.relu(self.gn_1(self.conv_1(x)))
        x = F.relu(self.gn_2(self.conv_2(x)))
        x = F.relu(self.gn_3(self.conv_3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
