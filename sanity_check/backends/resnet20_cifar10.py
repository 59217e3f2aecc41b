"""ResNet-20/32/44/56 for CIFAR (He et al. 2016, section 4.2) with 1x1 conv + BN projection shortcuts."""
from typing import List

import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; a strided 1x1 conv + BN shortcut where the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """3x3 stem to 16 channels, three stages of 16-32-64 channels (strides 1-2-2), global pool, linear."""

    def __init__(self, num_blocks: List[int], num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, stride, blocks in zip((16, 32, 64), (1, 2, 2), num_blocks):
            layers = []
            for block_stride in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, block_stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(self.avgpool(out).flatten(1))


def resnet20_cifar10(num_classes: int = 10) -> ResNetCifar:
    """ResNet-20: 272,474 parameters, 40.813 M MACs at 1x3x32x32."""
    return ResNetCifar([3, 3, 3], num_classes)


def resnet32_cifar10(num_classes: int = 10) -> ResNetCifar:
    """ResNet-32 (5 blocks per stage)."""
    return ResNetCifar([5, 5, 5], num_classes)


def resnet44_cifar10(num_classes: int = 10) -> ResNetCifar:
    """ResNet-44 (7 blocks per stage)."""
    return ResNetCifar([7, 7, 7], num_classes)


def resnet56_cifar10(num_classes: int = 10) -> ResNetCifar:
    """ResNet-56: 855,770 parameters, 125.748 M MACs at 1x3x32x32."""
    return ResNetCifar([9, 9, 9], num_classes)
