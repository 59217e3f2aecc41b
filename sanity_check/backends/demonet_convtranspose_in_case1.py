"""ConvTranspose + InstanceNorm demo: a strided conv encoder and a transposed-conv decoder."""
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetConvtransposeInCase1(nn.Module):
    """Two stride-2 conv + InstanceNorm stages down, two ConvTranspose2d(4, stride 2) + InstanceNorm stages up,
    3x3 output conv. ``[B, 3, H, W]`` -> ``[B, 3, H, W]`` (H, W divisible by 4)."""

    def __init__(self, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.in_1 = nn.InstanceNorm2d(width, affine=True)
        self.conv_2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.in_2 = nn.InstanceNorm2d(2 * width, affine=True)
        self.deconv_3 = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1)
        self.in_3 = nn.InstanceNorm2d(width, affine=True)
        self.deconv_4 = nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1)
        self.in_4 = nn.InstanceNorm2d(width // 2, affine=True)
        self.conv_out = nn.Conv2d(width // 2, in_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.in_1(self.conv_1(x)))
        x = F.relu(self.in_2(self.conv_2(x)))
        x = F.relu(self.in_3(self.deconv_3(x)))
        x = F.relu(self.in_4(self.deconv_4(x)))
        return self.conv_out(x)
