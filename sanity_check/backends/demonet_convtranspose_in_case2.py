"""ConvTranspose + InstanceNorm demo with U-Net skips: a residual add and concatenations around transposed convs."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetConvtransposeInCase2(nn.Module):
    """e1 (16, H) -> e2 (32, H/2) -> e3 (64, H/4); d2 = deconv_4(e3) + e2 (residual add across the transposed
    conv); d1 = deconv_5(cat([d2, e2])); out = conv_6(cat([d1, e1])). ``in_5`` has no affine parameters.
    ``[B, 3, H, W]`` -> ``[B, 3, H, W]`` (H, W divisible by 4)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.in_1 = nn.InstanceNorm2d(16, affine=True)
        self.conv_2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.in_2 = nn.InstanceNorm2d(32, affine=True)
        self.conv_3 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.in_3 = nn.InstanceNorm2d(64, affine=True)
        self.deconv_4 = nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1)
        self.in_4 = nn.InstanceNorm2d(32, affine=True)
        self.deconv_5 = nn.ConvTranspose2d(64, 16, 4, stride=2, padding=1)
        self.in_5 = nn.InstanceNorm2d(16, affine=False)
        self.conv_6 = nn.Conv2d(32, in_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = F.relu(self.in_1(self.conv_1(x)))
        e2 = F.relu(self.in_2(self.conv_2(e1)))
        e3 = F.relu(self.in_3(self.conv_3(e2)))
        d2 = F.relu(self.in_4(self.deconv_4(e3)) + e2)
        d1 = F.relu(self.in_5(self.deconv_5(torch.cat([d2, e2], 1))))
        return self.conv_6(torch.cat([d1, e1], 1))
