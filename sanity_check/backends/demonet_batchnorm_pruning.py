"""BatchNorm pruning demo: a spectral-normalised conditional U-Net generator (encoder / decoder) with BatchNorm."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm


class ConvBNAct(nn.Module):
    """Spectral-norm conv3x3 (optional stride) -> BatchNorm -> activation."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: nn.Module, bias: bool) -> None:
        super().__init__()
        self.conv = spectral_norm(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias))
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class DemonetBatchnormPruning(nn.Module):
    """Generator ``G(layout, image, style)``: layout maps and an image are encoded by ``num_downsamples`` strided
    stages, a style vector is projected and added at the bottleneck, and the decoder upsamples with U-Net skips.

    Positional arguments as in ``DemonetBatchnormPruning(13, 32, 256, 5, 3, nn.LeakyReLU(), False, 256)``:
    ``in_channels`` (layout channels), ``base_channels`` (first encoder width, doubled per stage up to
    ``max_channels``), ``num_downsamples``, ``out_channels`` (image channels; the image input has as many),
    ``activation`` (one module instance shared by every layer), ``use_bias`` (conv biases), ``style_dim``.

    ``forward([layout, image, style])``: ``layout`` ``[B, in_channels, H, W]``, ``image`` ``[B, out_channels, H, W]``,
    ``style`` ``[B, style_dim]``, H and W divisible by ``2 ** num_downsamples``; returns ``[B, out_channels, H, W]``
    in ``(-1, 1)``. Every parameter of the upsampling path has ``decoder`` in its name.

    Spectral norm runs one power iteration per training-mode forward (updating ``weight_u``); in eval mode
    the forward is deterministic.
    """

    def __init__(
        self,
        in_channels: int = 13,
        base_channels: int = 32,
        max_channels: int = 256,
        num_downsamples: int = 5,
        out_channels: int = 3,
        activation: Optional[nn.Module] = None,
        use_bias: bool = False,
        style_dim: int = 256,
    ) -> None:
        super().__init__()
        activation = activation if activation is not None else nn.LeakyReLU(0.2)
        widths = [min(base_channels * 2 ** level, max_channels) for level in range(num_downsamples + 1)]
        self.encoder = nn.ModuleList([ConvBNAct(in_channels + out_channels, widths[0], 1, activation, use_bias)])
        self.encoder.extend(
            ConvBNAct(widths[level], widths[level + 1], 2, activation, use_bias) for level in range(num_downsamples)
        )
        self.style_proj = spectral_norm(nn.Linear(style_dim, widths[-1]))
        self.decoder = nn.ModuleList(
            ConvBNAct(widths[level + 1] + widths[level], widths[level], 1, activation, use_bias)
            for level in reversed(range(num_downsamples))
        )
        self.decoder_out = spectral_norm(nn.Conv2d(widths[0], out_channels, 3, padding=1))

    def forward(self, inputs: List[Tensor]) -> Tensor:
        layout, image, style = inputs
        h = torch.cat([layout, image], 1)
        skips = []
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
        h = h + self.style_proj(style)[:, :, None, None]
        skips.pop()
        for stage in self.decoder:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = stage(torch.cat([h, skips.pop()], 1))
        return torch.tanh(self.decoder_out(h))
