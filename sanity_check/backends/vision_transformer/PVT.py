"""Pyramid Vision Transformer v2 (Wang et al. 2022): overlapping patch embeddings, spatial-reduction attention,
depthwise conv in the MLP, four stages of decreasing resolution."""
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from .vit import check_no_pretrained


def tokens_to_map(x: Tensor, height: int, width: int) -> Tensor:
    """``[B, H*W, C]`` -> ``[B, C, H, W]``."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (``padding = patch_size // 2``) + LayerNorm; returns tokens and
    the new height and width."""

    def __init__(self, patch_size: int, stride: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tuple[Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[2], x.shape[3]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class SpatialReductionAttention(nn.Module):
    """Queries from every token; keys and values from a map reduced ``sr_ratio`` times by a strided conv
    (``sr`` + LayerNorm ``norm``); ``kv`` is one Linear laid out as (k | v), each head-major."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        b, n, _ = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        context = x
        if self.sr_ratio > 1:
            context = self.norm(self.sr(tokens_to_map(x, height, width)).flatten(2).transpose(1, 2))
        kv = self.kv(context).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        attn = (torch.matmul(q, k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(out)


class DepthwiseMlp(nn.Module):
    """``fc1`` -> 3x3 depthwise conv on the token map (``dwconv``) -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = self.dwconv(tokens_to_map(self.fc1(x), height, width)).flatten(2).transpose(1, 2)
        return self.fc2(self.act(x))


class PvtBlock(nn.Module):
    """Pre-norm residual block: spatial-reduction attention, then the depthwise-conv MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = DepthwiseMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x), height, width)


class PvtStage(nn.Module):
    """Optional overlapping ``downsample`` (3x3, stride 2), ``blocks``, final LayerNorm ``norm``; maps
    ``[B, C_in, H, W]`` to ``[B, dim, H', W']``."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 downsample: bool) -> None:
        super().__init__()
        self.downsample = OverlapPatchEmbed(3, 2, in_dim, dim) if downsample else None
        self.blocks = nn.ModuleList(PvtBlock(dim, num_heads, mlp_ratio, sr_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample is not None:
            tokens, height, width = self.downsample(x)
        else:
            height, width = x.shape[2], x.shape[3]
            tokens = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens, height, width)
        return tokens_to_map(self.norm(tokens), height, width)


class PyramidVisionTransformerV2(nn.Module):
    """Stem ``patch_embed`` (7x7, stride 4), four ``stages``, global average pooling, ``head``.

    Input ``[B, in_chans, H, W]`` with H, W divisible by 32; output ``[B, num_classes]``.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dims: Sequence[int] = (32, 64, 160, 256),
                 num_heads: Sequence[int] = (1, 2, 5, 8), mlp_ratios: Sequence[float] = (8, 8, 4, 4),
                 depths: Sequence[int] = (2, 2, 2, 2), sr_ratios: Sequence[int] = (8, 4, 2, 1)) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(7, 4, in_chans, embed_dims[0])
        in_dims = [embed_dims[0]] + list(embed_dims[:-1])
        self.stages = nn.ModuleList(
            PvtStage(in_dims[i], embed_dims[i], depths[i], num_heads[i], mlp_ratios[i], sr_ratios[i], i > 0)
            for i in range(len(embed_dims)))
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        tokens, height, width = self.patch_embed(x)
        x = tokens_to_map(tokens, height, width)
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean(dim=(2, 3)))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def pvt_v2_b0(pretrained: bool = False, **kwargs) -> PyramidVisionTransformerV2:
    """PVT-v2-B0: dims 32-64-160-256, heads 1-2-5-8, MLP ratios 8-8-4-4, depths 2-2-2-2 (3.7 M parameters)."""
    check_no_pretrained(pretrained)
    return PyramidVisionTransformerV2(**kwargs)


def pvt_v2_b1(pretrained: bool = False, **kwargs) -> PyramidVisionTransformerV2:
    """PVT-v2-B1: dims 64-128-320-512."""
    check_no_pretrained(pretrained)
    return PyramidVisionTransformerV2(**{"embed_dims": (64, 128, 320, 512), **kwargs})
