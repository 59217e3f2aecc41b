"""InstanceNorm demo: affine and non-affine InstanceNorm in a residual add, with running statistics, and after
a transposed conv."""
import torch.nn.functional as F
from torch import Tensor, nn


class DemoNetInstanceNormCase3(nn.Module):
    """x1 = conv_1 + in_1 (affine); x2 = conv_2 + in_2 (no affine) added to x1; conv_3 (stride 2) + in_3
    (affine, running statistics); deconv_4 back to full resolution + in_4, added to x2; 3x3 output conv.
    ``[B, 3, H, W]`` -> ``[B, 3, H, W]`` (H, W even)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.in_1 = nn.InstanceNorm2d(16, affine=True)
        self.conv_2 = nn.Conv2d(16, 16, 3, padding=1)
        self.in_2 = nn.InstanceNorm2d(16, affine=False)
        self.conv_3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.in_3 = nn.InstanceNorm2d(32, affine=True, track_running_stats=True)
        self.deconv_4 = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
        self.in_4 = nn.InstanceNorm2d(16, affine=True)
        self.conv_out = nn.Conv2d(16, in_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = F.relu(self.in_1(self.conv_1(x)))
        x2 = F.relu(self.in_2(self.conv_2(x1)) + x1)
        x3 = F.relu(self.in_3(self.conv_3(x2)))
        x4 = F.relu(self.in_4(self.deconv_4(x3)) + x2)
        return self.conv_out(x4)


DemoNetInstanceNorm2DCase3 = DemoNetInstanceNormCase3  # the reference's name
