"""DDPM noise-prediction UNets (Ho et al. 2020) configured from the YAML files in ``configs/``.

The reference's sanity tests feed one tensor ``[B, in_channels + 1, H, W]``: the image channels followed by a
channel whose ``[0, 0]`` entry holds the timestep (``torch.rand(1, 4, 32, 32)`` for CIFAR).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..diffusion_unet import AttnBlock, ResBlock, Upsample, timestep_embedding

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
NORM_GROUPS = 32
NORM_EPS = 1e-6


@dataclass(frozen=True)
class DDPMConfig:
    """The ``model`` and ``data`` fields of a DDPM YAML file that shape the network."""

    image_size: int
    in_channels: int
    out_ch: int
    ch: int
    ch_mult: Tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: Tuple[int, ...]
    dropout: float = 0.0
    resamp_with_conv: bool = True

    def __post_init__(self) -> None:
        widths = [self.ch * mult for mult in (1,) + self.ch_mult]
        if any(width % NORM_GROUPS for width in widths):
            raise ValueError(f"every width ch * ch_mult must be a multiple of {NORM_GROUPS} (GroupNorm groups), "
                             f"got ch={self.ch}, ch_mult={self.ch_mult}")
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**(len(ch_mult) - 1)")
        if self.num_res_blocks < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("num_res_blocks must be >= 1 and dropout in [0, 1)")

    @classmethod
    def from_yaml(cls, path: str) -> "DDPMConfig":
        """Read ``path`` (needs pyyaml); unknown fields are ignored, missing ones raise ``KeyError``."""
        import yaml

        with open(path, "r", encoding="utf-8") as handle:
            raw: Dict[str, Any] = yaml.safe_load(handle)
        model = raw["model"]
        return cls(image_size=int(raw["data"]["image_size"]), in_channels=int(model["in_channels"]),
                   out_ch=int(model["out_ch"]), ch=int(model["ch"]), ch_mult=tuple(model["ch_mult"]),
                   num_res_blocks=int(model["num_res_blocks"]), attn_resolutions=tuple(model["attn_resolutions"]),
                   dropout=float(model.get("dropout", 0.0)), resamp_with_conv=bool(model.get("resamp_with_conv", True)))


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 conv, or 2x2 average pooling when ``with_conv`` is False."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if with_conv else None

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2)


class Level(nn.Module):
    """One resolution of the UNet: residual ``blocks``, an attention block after each when the resolution is
    in ``attn_resolutions`` (``attn``), and an optional ``resample`` (down- or upsampling)."""

    def __init__(self, blocks: List[ResBlock], attn: List[nn.Module], resample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attn)
        self.resample = resample

    def block(self, index: int, h: Tensor, temb: Tensor) -> Tensor:
        h = self.blocks[index](h, temb)
        return self.attn[index](h) if len(self.attn) else h


class DiffModel(nn.Module):
    """The DDPM UNet: ``conv_in``, ``down`` levels (``num_res_blocks`` blocks each, every output kept as a skip),
    a ResBlock-attention-ResBlock ``mid``, ``up`` levels (``num_res_blocks + 1`` blocks each, every block
    concatenating one skip), GroupNorm-SiLU-``conv_out``. GroupNorm has 32 groups throughout.

    ``forward(concat)``: ``[B, in_channels + 1, image_size, image_size]`` as described in the module docstring;
    returns ``[B, out_ch, image_size, image_size]``.
    """

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__()
        self.config = config
        ch, mults = config.ch, config.ch_mult
        self.temb_ch = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, self.temb_ch), nn.SiLU(), nn.Linear(self.temb_ch, self.temb_ch))
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        skip_widths, resolution, width = [ch], config.image_size, ch
        self.down = nn.ModuleList()
        for level, mult in enumerate(mults):
            blocks, attn = [], []
            for _ in range(config.num_res_blocks):
                blocks.append(self._res_block(width, ch * mult))
                width = ch * mult
                attn += [AttnBlock(width, NORM_GROUPS, NORM_EPS)] if resolution in config.attn_resolutions else []
                skip_widths.append(width)
            resample = None
            if level < len(mults) - 1:
                resample = Downsample(width, config.resamp_with_conv)
                resolution //= 2
                skip_widths.append(width)
            self.down.append(Level(blocks, attn, resample))
        self.mid = nn.ModuleList([self._res_block(width, width), AttnBlock(width, NORM_GROUPS, NORM_EPS),
                                  self._res_block(width, width)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            blocks, attn = [], []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(self._res_block(width + skip_widths.pop(), ch * mult))
                width = ch * mult
                attn += [AttnBlock(width, NORM_GROUPS, NORM_EPS)] if resolution in config.attn_resolutions else []
            resample = None
            if level > 0:
                resample = Upsample(width)
                resolution *= 2
            self.up.append(Level(blocks, attn, resample))
        self.norm_out = nn.GroupNorm(NORM_GROUPS, width, eps=NORM_EPS)
        self.conv_out = nn.Conv2d(width, config.out_ch, 3, padding=1)

    def _res_block(self, in_channels: int, out_channels: int) -> ResBlock:
        return ResBlock(in_channels, out_channels, self.temb_ch, NORM_GROUPS, self.config.dropout, NORM_EPS)

    def forward(self, concat: Tensor) -> Tensor:
        channels = self.config.in_channels
        x, t = concat[:, :channels], concat[:, channels, 0, 0]
        temb = self.temb(timestep_embedding(t, self.config.ch))
        skips = [self.conv_in(x)]
        for level in self.down:
            for index in range(len(level.blocks)):
                skips.append(level.block(index, skips[-1], temb))
            if level.resample is not None:
                skips.append(level.resample(skips[-1]))
        h = self.mid[2](self.mid[1](self.mid[0](skips[-1], temb)), temb)
        for level in self.up:
            for index in range(len(level.blocks)):
                h = level.block(index, torch.cat([h, skips.pop()], dim=1), temb)
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def diff_model_from_config(name: str) -> DiffModel:
    """The DDPM UNet configured by ``configs/<name>.yml``."""
    return DiffModel(DDPMConfig.from_yaml(os.path.join(CONFIG_DIR, f"{name}.yml")))


def DiffModelCIFAR() -> DiffModel:  # noqa: N802  (the reference's name)
    """CIFAR-10 UNet (32x32, ch 128, ch_mult 1-2-2-2, 2 blocks per level, attention at 16x16)."""
    return diff_model_from_config("cifar10")


def DiffModelCeleba() -> DiffModel:  # noqa: N802
    """CelebA UNet (64x64, ch_mult 1-2-2-2-4)."""
    return diff_model_from_config("celeba")


def DiffModelBedroom() -> DiffModel:  # noqa: N802
    """LSUN bedroom UNet (256x256, ch_mult 1-1-2-2-4-4)."""
    return diff_model_from_config("bedroom")


def DiffModelChurch() -> DiffModel:  # noqa: N802
    """LSUN church UNet (256x256, ch_mult 1-1-2-2-4-4)."""
    return diff_model_from_config("church")


def DiffModelDebug() -> DiffModel:  # noqa: N802
    """Test-sized UNet (32x32, ch 32, ch_mult 1-2, one block per level)."""
    return diff_model_from_config("debug")
