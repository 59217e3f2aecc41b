"""GroupNorm demo: non-affine GroupNorm and the two extremes, one channel per group and one group in total."""
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetGroupNormCase4(nn.Module):
    """conv_1 + GroupNorm(4, 32, affine=False); conv_2 + GroupNorm(32, 32) (per channel, like InstanceNorm);
    conv_3 + GroupNorm(1, 64) (one group, like LayerNorm over C, H, W); pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(3, 32, 3, padding=1)
        self.gn_1 = nn.GroupNorm(4, 32, affine=False)
        self.conv_2 = nn.Conv2d(32, 32, 3, padding=1)
        self.gn_2 = nn.GroupNorm(32, 32)
        self.conv_3 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.gn_3 = nn.GroupNorm(1, 64)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        x = F.relu(self.gn_1(self.conv_1(x)))
        x = F.relu(self.gn_2(self.conv_2(x)))
        x = F.relu(self.gn_3(self.conv_3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
