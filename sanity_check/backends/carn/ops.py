"""Building blocks of CARN (Ahn et al., ECCV 2018)."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Module):
    """Fixed 1x1 conv adding ``sign * mean`` per RGB channel; its parameters have ``requires_grad=False``."""

    def __init__(self, mean_rgb: Sequence[float] = DIV2K_RGB_MEAN, sign: int = -1) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.shifter.bias.copy_(sign * torch.tensor(mean_rgb))
        for param in self.shifter.parameters():
            param.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        return self.shifter(x)


class BasicBlock(nn.Module):
    """Conv followed by ReLU; used as the 1x1 fusion after each cascading concatenation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


class ResidualBlock(nn.Module):
    """conv3x3-ReLU-conv3x3 plus identity, then ReLU. ``group > 1`` gives grouped 3x3 convs (CARN-M style)."""

    def __init__(self, channels: int, group: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=group)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=group)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class _PixelShuffleUpsampler(nn.Sequential):
    """One (scale 3) or log2(scale) (scales 2, 4) rounds of conv3x3 to r^2 * C channels, ReLU, PixelShuffle(r)."""

    def __init__(self, channels: int, scale: int) -> None:
        if scale == 3:
            factors = [3]
        elif scale in (2, 4, 8):
            factors = [2] * (scale.bit_length() - 1)
        else:
            raise ValueError(f"CARN supports upscaling factors 2, 3, 4 and 8, got {scale}")
        layers = []
        for factor in factors:
            conv = nn.Conv2d(channels, factor * factor * channels, 3, padding=1)
            layers += [conv, nn.ReLU(), nn.PixelShuffle(factor)]
        super().__init__(*layers)


class UpsampleBlock(nn.Module):
    """Pixel-shuffle upsampler for one scale, or for x2, x3 and x4 selected at call time when ``multi_scale``."""

    def __init__(self, channels: int, scale: int, multi_scale: bool) -> None:
        super().__init__()
        self.multi_scale = multi_scale
        if multi_scale:
            self.up2 = _PixelShuffleUpsampler(channels, 2)
            self.up3 = _PixelShuffleUpsampler(channels, 3)
            self.up4 = _PixelShuffleUpsampler(channels, 4)
        else:
            self.up = _PixelShuffleUpsampler(channels, scale)

    def forward(self, x: Tensor, scale: int) -> Tensor:
        """Single-scale blocks ignore ``scale``; multi-scale ones dispatch on it (2, 3 or 4)."""
        if not self.multi_scale:
            return self.up(x)
        return {2: self.up2, 3: self.up3, 4: self.up4}[int(scale)](x)
