"""BatchNorm pruning demo: an encoder / decoder of pre-activation residual blocks with BatchNorm on block inputs.

The reference's constructor and input convention: ``DemonetBatchnormPruning(13, 32, 256, 5, 3, nn.LeakyReLU(),
False, 256)`` called on a list of tensors that are concatenated along channels (3 + 4 + 6 = 13 channels).
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import spectral_norm as _spectral_norm


def maybe_spectral_norm(module: nn.Module, use_spect: bool) -> nn.Module:
    """``module`` with spectral normalisation (``weight_orig`` + power iteration) when ``use_spect``."""
    return _spectral_norm(module) if use_spect else module


def input_layer(input_nc: int, base_nc: int, size: int) -> nn.Module:
    """The stem for the nominal image ``size``: a 7x7 conv at 256, a strided 7x7 pair at 512, a 3x3 conv at 64."""
    if size == 256:
        return nn.Conv2d(input_nc, base_nc, 7, padding=3)
    if size == 512:
        return nn.Sequential(nn.Conv2d(input_nc, base_nc, 7, stride=2, padding=3),
                             nn.Conv2d(base_nc, base_nc, 7, padding=3))
    if size == 64:
        return nn.Conv2d(input_nc, base_nc, 3, padding=1)
    raise ValueError(f"size must be 64, 256 or 512, got {size}")


class ResidualResample(nn.Module):
    """Pre-activation residual block that halves (``up=False``) or doubles (``up=True``) the resolution.

    main: ``norm_0 -> act -> conv_0 (3x3) -> norm_1 -> act -> conv_1 (strided conv or transposed conv)``;
    shortcut: ``norm_s -> act -> conv_s`` (same resampling). Both BatchNorms on the block input depend on the
    channels of whatever produced that input.
    """

    def __init__(self, in_channels: int, out_channels: int, up: bool, activation: nn.Module, use_spect: bool):
        super().__init__()
        self.act = activation
        self.norm_0 = nn.BatchNorm2d(in_channels)
        self.conv_0 = maybe_spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1), use_spect)
        self.norm_1 = nn.BatchNorm2d(out_channels)
        self.conv_1 = maybe_spectral_norm(self._resample(out_channels, out_channels, up), use_spect)
        self.norm_s = nn.BatchNorm2d(in_channels)
        self.conv_s = maybe_spectral_norm(self._resample(in_channels, out_channels, up), use_spect)

    @staticmethod
    def _resample(in_channels: int, out_channels: int, up: bool) -> nn.Module:
        if up:
            return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
        return nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        main = self.conv_1(self.act(self.norm_1(self.conv_0(self.act(self.norm_0(x))))))
        return main + self.conv_s(self.act(self.norm_s(x)))


class DemonetBatchnormPruning(nn.Module):
    """U-Net-like generator: ``encoder_layers`` downsampling blocks, ``decoder_layers`` upsampling blocks, each
    decoder output concatenated with the encoder feature of the same resolution; a 3x3 output conv.

    Arguments (positional, as the reference): ``input_nc`` channels after concatenating the inputs, ``base_nc``
    first width (doubled per level up to ``max_nc``), ``encoder_layers``, ``decoder_layers`` (at most
    ``encoder_layers``), ``nonlinearity`` (one module shared by every block), ``use_spect`` (spectral norm on
    the residual blocks' convs), ``size`` (nominal resolution choosing the stem: 64, 256 or 512).

    ``forward(inputs)``: a list/tuple of ``[B, C_i, H, W]`` with ``sum(C_i) == input_nc``, H and W divisible
    by ``2 ** encoder_layers``; returns ``[B, 2 * w, H / 2**k, W / 2**k]`` with ``k = encoder_layers -
    decoder_layers`` and ``w`` the width of level ``k``. Every decoder parameter has ``decoder`` in its name.
    """

    def __init__(self, input_nc: int = 13, base_nc: int = 32, max_nc: int = 256, encoder_layers: int = 5,
                 decoder_layers: int = 3, nonlinearity: Optional[nn.Module] = None, use_spect: bool = False,
                 size: int = 256) -> None:
        super().__init__()
        if not 0 < decoder_layers <= encoder_layers:
            raise ValueError(f"need 0 < decoder_layers <= encoder_layers, got {decoder_layers}, {encoder_layers}")
        activation = nonlinearity if nonlinearity is not None else nn.LeakyReLU()
        widths = [min(base_nc * 2 ** level, max_nc) for level in range(encoder_layers + 1)]
        self.input_nc = input_nc
        self.input_layer = input_layer(input_nc, base_nc, size)
        self.encoder = nn.ModuleList(
            ResidualResample(widths[level], widths[level + 1], False, activation, use_spect)
            for level in range(encoder_layers))
        levels = list(reversed(range(encoder_layers - decoder_layers, encoder_layers)))
        self.decoder = nn.ModuleList(
            ResidualResample(widths[level + 1] * (1 if index == 0 else 2), widths[level], True, activation, use_spect)
            for index, level in enumerate(levels))
        self.output_layer = nn.Conv2d(2 * widths[levels[-1]], 2 * widths[levels[-1]], 3, padding=1)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        x = torch.cat(list(inputs), dim=1)
        if x.shape[1] != self.input_nc:
            raise ValueError(f"the inputs have {x.shape[1]} channels together, the model expects {self.input_nc}")
        features: List[Tensor] = [self.input_layer(x)]
        for block in self.encoder:
            features.append(block(features[-1]))
        out = features.pop()
        for block in self.decoder:
            out = torch.cat([block(out), features.pop()], dim=1)
        return self.output_layer(out)
