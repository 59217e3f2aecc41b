"""CIFAR ResNet-34 with DuBIN: IBN-a style norms (Pan et al. 2018) whose BatchNorm half is dual (DuBN).

A DuBIN norm over C channels applies an affine InstanceNorm to the first ``C // 2`` channels and a DuBN to the rest.
It replaces the stem norm and the first norm of every block in the first three stages; all other norms are DuBN.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet_DuBN import DuBN


class DuBIN(nn.Module):
    """InstanceNorm on channels ``[0, C // 2)``, DuBN on ``[C // 2, C)``, re-concatenated along channels."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.half = num_features // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = DuBN(num_features - self.half)

    def forward(self, x: Tensor) -> Tensor:
        instance_part, batch_part = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(instance_part), self.BN(batch_part)], dim=1)


class BasicBlockDuBIN(nn.Module):
    """ResNet basic block; ``bn1`` is DuBIN when ``ibn`` else DuBN, the other norms DuBN."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, ibn: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = DuBIN(planes) if ibn else DuBN(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = DuBN(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), DuBN(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetDuBIN(nn.Module):
    """CIFAR ResNet (3x3 stem, stages 64-128-256-512) with DuBIN in the stem and stages 1-3."""

    def __init__(self, num_blocks: List[int], num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = DuBIN(64)
        in_planes, stages = 64, []
        for index, (planes, stride, blocks) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2), num_blocks)):
            layers = []
            for block_stride in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlockDuBIN(in_planes, planes, block_stride, ibn=index < 3))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def ResNet34_DuBIN(num_classes: int = 10) -> ResNetDuBIN:
    """ResNet-34 (3-4-6-3 basic blocks) with DuBIN norms."""
    return ResNetDuBIN([3, 4, 6, 3], num_classes)
