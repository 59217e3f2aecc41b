"""Weight-sharing demo: one bare weight Parameter used by two convolutions, and a bare per-channel scale."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetWeightShareCase2(nn.Module):
    """x1 = conv_1 + bn_1 (32 ch); ``shared_weight`` (32x32x3x3) convolves x1 twice, with dilation 1 and 2, the
    results are summed and normalised (bn_2) and multiplied by the bare Parameter ``channel_scale`` (1x32x1x1);
    conv_3 (64 ch, stride 2) + bn_3; pool, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn_1 = nn.BatchNorm2d(32)
        self.shared_weight = nn.Parameter(torch.empty(32, 32, 3, 3))
        nn.init.kaiming_uniform_(self.shared_weight, a=5 ** 0.5)
        self.bn_2 = nn.BatchNorm2d(32)
        self.channel_scale = nn.Parameter(torch.ones(1, 32, 1, 1))
        self.conv_3 = nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False)
        self.bn_3 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        x1 = F.relu(self.bn_1(self.conv_1(x)))
        near = F.conv2d(x1, self.shared_weight, padding=1)
        far = F.conv2d(x1, self.shared_weight, padding=2, dilation=2)
        x2 = F.relu(self.bn_2(near + far)) * self.channel_scale
        x3 = F.relu(self.bn_3(self.conv_3(x2)))
        return self.fc(F.adaptive_avg_pool2d(x3, 1).flatten(1))
