"""Swin Transformer (Liu et al. 2021): shifted-window attention with a relative position bias table."""
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .vit import Mlp, PatchEmbed, check_no_pretrained


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """``[B, H, W, C]`` -> ``[B * num_windows, window_size**2, C]``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B * num_windows, window_size**2, C]`` -> ``[B, H, W, C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window_size, width // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window_size: int) -> Tensor:
    """``[N, N]`` (N = window_size**2) indices into the ``(2 * window_size - 1)**2`` rows of the bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[:, :, 0] * (2 * window_size - 1) + relative[:, :, 1]


def shifted_window_mask(height: int, width: int, window_size: int, shift_size: int) -> Tensor:
    """``[num_windows, N, N]`` additive mask (0 or -100) keeping attention inside each pre-shift region."""
    regions = torch.zeros(1, height, width, 1)
    cuts = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            regions[:, rows, cols, :] = label
            label += 1
    labels = window_partition(regions, window_size).squeeze(-1)
    mask = labels[:, None, :] - labels[:, :, None]
    return mask.masked_fill(mask != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head attention inside ``window_size x window_size`` windows, fused ``qkv`` Linear, learned relative
    position bias ``relative_position_bias_table`` of shape ``[(2 * window_size - 1)**2, num_heads]``."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``x``: ``[B * num_windows, N, dim]``; ``mask``: ``[num_windows, N, N]`` or None."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = torch.matmul(q * self.scale, k.transpose(-2, -1))
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(b // num_windows, num_windows, -1, n, n) + mask[None, :, None]
            attn = attn.view(b, -1, n, n)
        out = torch.matmul(attn.softmax(dim=-1), v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(out)


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention and MLP, both pre-norm residual, on ``[B, H*W, C]`` tokens."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if resolution <= window_size:
            window_size, shift_size = resolution, 0
        self.resolution = resolution
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(resolution, resolution, window_size, shift_size) if shift_size else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        size, shift = self.resolution, self.shift_size
        out = self.norm1(x).view(b, size, size, c)
        if shift:
            out = torch.roll(out, shifts=(-shift, -shift), dims=(1, 2))
        out = self.attn(window_partition(out, self.window_size), self.attn_mask)
        out = window_reverse(out, self.window_size, size, size)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        x = x + out.reshape(b, size * size, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concatenation, LayerNorm(4C), Linear(4C -> 2C, no bias): halves the resolution."""

    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution, self.resolution, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinTransformer(nn.Module):
    """Patch embedding (conv + LayerNorm), stages of alternating regular/shifted window blocks joined by patch
    merging, final LayerNorm, mean pooling, head. Input ``[B, in_chans, img_size, img_size]``."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.patch_norm = nn.LayerNorm(embed_dim)
        resolution, dim = img_size // patch_size, embed_dim
        stages = []
        for index, (depth, heads) in enumerate(zip(depths, num_heads)):
            blocks = [
                SwinTransformerBlock(dim, resolution, heads, window_size, (i % 2) * (window_size // 2), mlp_ratio)
                for i in range(depth)
            ]
            if index < len(depths) - 1:
                blocks.append(PatchMerging(dim, resolution))
                resolution, dim = resolution // 2, 2 * dim
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_norm(self.patch_embed(x))
        return self.head(self.norm(self.layers(x)).mean(dim=1))


def swin_mini(num_classes: int = 10, **kwargs) -> SwinTransformer:
    """Test-sized Swin for 32x32 images: 2x2 patches, window 4, dims 32-64, depths 2-2, heads 2-4."""
    config = {"img_size": 32, "patch_size": 2, "embed_dim": 32, "depths": (2, 2), "num_heads": (2, 4), "window_size": 4}
    return SwinTransformer(num_classes=num_classes, **{**config, **kwargs})


def swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin-T: dim 96, depths 2-2-6-2, heads 3-6-12-24, window 7."""
    check_no_pretrained(pretrained)
    return SwinTransformer(**kwargs)
