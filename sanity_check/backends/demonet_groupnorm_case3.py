"""GroupNorm demo: GroupNorm after channel concatenations, with groups that straddle no concat boundary."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetGroupNormCase3(nn.Module):
    """a, b = conv_a(x), conv_b(x) (16 ch each); gn_1 over cat([a, b]) (4 groups of 8);
    c = conv_c(...) (32 ch) + gn_2; gn_3 over cat([c, a]) (48 ch, 6 groups of 8); pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 16, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 16, 3, padding=1)
        self.gn_1 = nn.GroupNorm(4, 32)
        self.conv_c = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.gn_2 = nn.GroupNorm(8, 32)
        self.pool = nn.AvgPool2d(2)
        self.gn_3 = nn.GroupNorm(6, 48)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]`` (H, W even)."""
        a = F.relu(self.conv_a(x))
        b = F.relu(self.conv_b(x))
        c = F.relu(self.gn_2(self.conv_c(F.relu(self.gn_1(torch.cat([a, b], 1))))))
        out = F.relu(self.gn_3(torch.cat([c, self.pool(a)], 1)))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
