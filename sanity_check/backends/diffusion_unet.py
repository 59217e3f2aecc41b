"""Small DDPM-style UNet (Ho et al. 2020) for noise prediction ``eps(x_t, t)``."""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``[B] -> [B, dim]`` (``dim`` even) of integer or float timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device).float() / half)
    angles = timesteps.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv3x3, plus the projected time embedding broadcast over H and W, GroupNorm-SiLU-conv3x3,
    and a residual (1x1 conv where the channel count changes)."""

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, groups: int = 8, dropout: float = 0.0,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 conv q/k/v/proj and a residual."""

    def __init__(self, channels: int, groups: int = 8, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        normed = self.norm(x)
        q = self.q(normed).reshape(b, c, h * w).transpose(1, 2)
        k = self.k(normed).reshape(b, c, h * w)
        v = self.v(normed).reshape(b, c, h * w)
        attn = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=-1)
        out = torch.bmm(v, attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Strided 3x3 conv halving H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling then 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TinyUNet(nn.Module):
    """UNet with one ResBlock per level, skip concatenations on the way up, and a ResBlock-Attention-ResBlock
    middle at the lowest resolution.

    ``forward(x, t)``: ``x`` ``[B, in_channels, H, W]`` (H, W divisible by ``2 ** (len(channel_mults) - 1)``),
    ``t`` ``[B]`` timesteps; returns ``[B, in_channels, H, W]``. ``forward((x, t))`` (one tuple, as the
    reference's test script calls the loaded models) is the same call.
    """

    def __init__(
        self, in_channels: int = 3, base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2), groups: int = 8
    ) -> None:
        super().__init__()
        self.base_channels = base_channels
        temb_dim = 4 * base_channels
        self.time_embed = nn.Sequential(nn.Linear(base_channels, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        widths = [base_channels * mult for mult in channel_mults]
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        channels = base_channels
        for level, width in enumerate(widths):
            self.down_blocks.append(ResBlock(channels, width, temb_dim, groups))
            channels = width
            if level < len(widths) - 1:
                self.downsamples.append(Downsample(channels))
        self.mid_block1 = ResBlock(channels, channels, temb_dim, groups)
        self.mid_attn = AttnBlock(channels, groups)
        self.mid_block2 = ResBlock(channels, channels, temb_dim, groups)
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            self.up_blocks.append(ResBlock(channels + width, width, temb_dim, groups))
            channels = width
            if level > 0:
                self.upsamples.append(Upsample(channels))
        self.norm_out = nn.GroupNorm(groups, channels)
        self.conv_out = nn.Conv2d(channels, in_channels, 3, padding=1)

    def forward(self, x: Tensor, t: Optional[Tensor] = None) -> Tensor:
        if t is None:
            x, t = x
        temb = self.time_embed(timestep_embedding(t, self.base_channels))
        h = self.conv_in(x)
        skips = []
        for level, block in enumerate(self.down_blocks):
            h = block(h, temb)
            skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb)), temb)
        for level, block in enumerate(self.up_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if level < len(self.upsamples):
                h = self.upsamples[level](h)
        return self.conv_out(F.silu(self.norm_out(h)))
