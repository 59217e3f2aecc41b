"""VGG7 with batch norm for CIFAR (VGG7-128)."""
from typing import List

from torch import Tensor, nn


def _conv_bn_relu(in_channels: int, out_channels: int) -> List[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU()]


class VGG7_BN(nn.Module):
    """Six 3x3 convs (128-128-256-256-512-512, bias on) in three pooled stages, global average pool, two linears.

    At ``1x3x32x32``: 5,115,530 parameters and 608.053 M conv+linear MACs. ``features.3`` is the second conv,
    ``features.7``/``features.8`` the third conv and its BatchNorm; ``classifier.0``/``classifier.2`` the linears.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(3, 128), *_conv_bn_relu(128, 128), nn.MaxPool2d(2),
            *_conv_bn_relu(128, 256), *_conv_bn_relu(256, 256), nn.MaxPool2d(2),
            *_conv_bn_relu(256, 512), *_conv_bn_relu(512, 512), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, num_classes))

    def forward(self, x: Tensor, *args) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, num_classes]``; extra positional arguments are ignored."""
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def vgg7_bn(num_classes: int = 10) -> VGG7_BN:
    """VGG7-BN for 32x32 inputs."""
    return VGG7_BN(num_classes)
