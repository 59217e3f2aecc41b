"""DenseNet-BC for CIFAR (Huang et al. 2017): 3x3 stem, bottleneck layers, compression 0.5 transitions."""
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k); the k new channels are prepended to the input."""

    def __init__(self, in_planes: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN, conv1x1, 2x2 average pooling, as the paper describes it (no ReLU).

    Without a ReLU here the traced graph has the reference's node count (423 with input and output nodes).
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(self.bn(x)), 2)


class DenseNet(nn.Module):
    """Four dense blocks separated by three transitions; final BN-ReLU, global average pool, linear."""

    def __init__(
        self, num_blocks: Sequence[int], growth_rate: int = 32, reduction: float = 0.5, num_classes: int = 100
    ) -> None:
        super().__init__()
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, planes, 3, padding=1, bias=False)
        stages = []
        for index, blocks in enumerate(num_blocks):
            layers = []
            for _ in range(blocks):
                layers.append(Bottleneck(planes, growth_rate))
                planes += growth_rate
            stages.append(nn.Sequential(*layers))
            if index < len(num_blocks) - 1:
                out_planes = int(math.floor(planes * reduction))
                stages.append(Transition(planes, out_planes))
                planes = out_planes
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` (H, W divisible by 8) -> ``[B, num_classes]``."""
        out = F.relu(self.bn(self.features(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def densenet121(num_classes: int = 100) -> DenseNet:
    """DenseNet-121, growth 32. With the default 100-class head: 7,048,548 parameters, 888.443 M MACs at 32x32."""
    return DenseNet([6, 12, 24, 16], 32, num_classes=num_classes)


def densenet161(num_classes: int = 100) -> DenseNet:
    """DenseNet-161, growth 48."""
    return DenseNet([6, 12, 36, 24], 48, num_classes=num_classes)


def densenet169(num_classes: int = 100) -> DenseNet:
    """DenseNet-169, growth 32."""
    return DenseNet([6, 12, 32, 32], 32, num_classes=num_classes)


def densenet201(num_classes: int = 100) -> DenseNet:
    """DenseNet-201, growth 32."""
    return DenseNet([6, 12, 48, 32], 32, num_classes=num_classes)
