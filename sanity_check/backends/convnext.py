"""ConvNeXt (Liu et al. 2022): patchify stem, depthwise 7x7 blocks with inverted MLPs, optional layer scale."""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """LayerNorm over channels for ``channels_last`` ``[..., C]`` or ``channels_first`` ``[B, C, H, W]`` input."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, data_format: str = "channels_last") -> None:
        super().__init__()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.data_format = data_format
        self.normalized_shape = (normalized_shape,)

    def forward(self, x: Tensor) -> Tensor:
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Block(nn.Module):
    """dwconv7x7 -> LayerNorm -> Linear(4C) -> GELU -> Linear(C) -> layer scale, plus identity.

    Layer scale (``gamma``) exists only when ``layer_scale_init_value > 0``.
    """

    def __init__(self, dim: int, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = None
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        out = self.dwconv(x).permute(0, 2, 3, 1)
        out = self.pwconv2(self.act(self.pwconv1(self.norm(out))))
        if self.gamma is not None:
            out = self.gamma * out
        return x + out.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """Stem conv4x4/s4 + LayerNorm, four stages separated by LayerNorm + conv2x2/s2, mean pool, LayerNorm, head.

    Input ``[B, in_chans, H, W]`` with H, W divisible by 32; output ``[B, num_classes]``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        layer_scale_init_value: float = 1e-6,
    ) -> None:
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], 4, stride=4), LayerNorm(dims[0], data_format="channels_first")
        )
        self.downsample_layers = nn.ModuleList([stem])
        for previous, current in zip(dims[:-1], dims[1:]):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm(previous, data_format="channels_first"), nn.Conv2d(previous, current, 2, 2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(dim, layer_scale_init_value) for _ in range(depth)])
            for dim, depth in zip(dims, depths)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.head(self.norm(x.mean([-2, -1])))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def convnext_tiny(
    layer_scale_init_value: float = 1e-6,
    num_classes: int = 1000,
    depths: Sequence[int] = (3, 3, 9, 3),
    dims: Sequence[int] = (96, 192, 384, 768),
    in_chans: int = 3,
) -> ConvNeXt:
    """ConvNeXt-T (28.6 M parameters with the 1000-class head); smaller ``depths``/``dims`` give test-sized nets."""
    return ConvNeXt(in_chans, num_classes, depths, dims, layer_scale_init_value)


def convnext_small(
    layer_scale_init_value: float = 1e-6, num_classes: int = 1000, in_chans: int = 3
) -> ConvNeXt:
    """ConvNeXt-S: depths 3-3-27-3, dims 96-192-384-768."""
    return ConvNeXt(in_chans, num_classes, (3, 3, 27, 3), (96, 192, 384, 768), layer_scale_init_value)


def convnext_base(
    layer_scale_init_value: float = 1e-6, num_classes: int = 1000, in_chans: int = 3
) -> ConvNeXt:
    """ConvNeXt-B: depths 3-3-27-3, dims 128-256-512-1024."""
    return ConvNeXt(in_chans, num_classes, (3, 3, 27, 3), (128, 256, 512, 1024), layer_scale_init_value)


def convnext_large(
    layer_scale_init_value: float = 1e-6, num_classes: int = 1000, in_chans: int = 3
) -> ConvNeXt:
    """ConvNeXt-L: depths 3-3-27-3, dims 192-384-768-1536."""
    return ConvNeXt(in_chans, num_classes, (3, 3, 27, 3), (192, 384, 768, 1536), layer_scale_init_value)


def convnext_xlarge(
    layer_scale_init_value: float = 1e-6, num_classes: int = 1000, in_chans: int = 3
) -> ConvNeXt:
    """ConvNeXt-XL: depths 3-3-27-3, dims 256-512-1024-2048."""
    return ConvNeXt(in_chans, num_classes, (3, 3, 27, 3), (256, 512, 1024, 2048), layer_scale_init_value)
