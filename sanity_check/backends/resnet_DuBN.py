"""CIFAR ResNet-18 with dual batch normalisation (DuBN, as in AugMax, Wang et al. 2021).

Every norm holds two BatchNorms, ``bn_c`` for clean and ``bn_a`` for augmented images. The ``route`` attribute picks
one (``"M"``: main/clean, ``"A"``: augmented) or, for ``"MA"``, sends the first half of the batch through ``bn_c`` and
the second half through ``bn_a``.
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROUTES = ("M", "A", "MA")


class DuBN(nn.Module):
    """Dual BatchNorm over ``num_features`` channels, dispatching on ``self.route``."""

    def __init__(self, num_features: int, route: str = "M") -> None:
        super().__init__()
        self.bn_c = nn.BatchNorm2d(num_features)
        self.bn_a = nn.BatchNorm2d(num_features)
        self.route = route

    def forward(self, x: Tensor) -> Tensor:
        if self.route == "M":
            return self.bn_c(x)
        if self.route == "A":
            return self.bn_a(x)
        if self.route == "MA":
            half = x.shape[0] // 2
            return torch.cat([self.bn_c(x[:half]), self.bn_a(x[half:])], dim=0)
        raise ValueError(f"route must be one of {ROUTES}, got {self.route!r}")


def set_route(model: nn.Module, route: str) -> None:
    """Set ``route`` on every dual norm in ``model``."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    for module in model.modules():
        if isinstance(module, DuBN):
            module.route = route


class BasicBlockDuBN(nn.Module):
    """ResNet basic block whose norms (and projection-shortcut norm) are DuBN."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = DuBN(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = DuBN(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), DuBN(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetDuBN(nn.Module):
    """CIFAR ResNet (3x3 stem, stages 64-128-256-512) with DuBN everywhere."""

    def __init__(self, num_blocks: List[int], num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = DuBN(64)
        in_planes, stages = 64, []
        for planes, stride, blocks in zip((64, 128, 256, 512), (1, 2, 2, 2), num_blocks):
            layers = []
            for block_stride in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlockDuBN(in_planes, planes, block_stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]`` (with route ``"MA"``, B must be even)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def ResNet18_DuBN(num_classes: int = 10) -> ResNetDuBN:
    """ResNet-18 with dual BatchNorm (route ``"M"``; change it with :func:`set_route`)."""
    return ResNetDuBN([2, 2, 2, 2], num_classes)
