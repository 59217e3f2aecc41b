"""A seeded generator of small random architectures for property tests of the whole pipeline.

Image models stack blocks on (B, C, H, W): conv (+BatchNorm/GroupNorm, activation, padding modes), residual adds,
channel concatenation, depthwise and grouped convs, squeeze-excite gates, pooling; token models stack blocks on
(B, L, D): Linear MLPs, LayerNorm, residual adds, attention (nn.MultiheadAttention or a hand-written one), token
mixing. Every model ends in a head whose output scale is drawn too (small outputs are where fixed tolerances fail).
The same seed always gives the same architecture and weights.
"""

from __future__ import annotations

import random
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Identity)


class ConvBlock(nn.Module):
    def __init__(self, rng: random.Random, channels: int, out: int):
        super().__init__()
        padding_mode = rng.choice(("zeros", "zeros", "reflect", "circular"))
        groups = rng.choice([g for g in (1, 2, channels) if channels % g == 0 and out % g == 0])
        self.conv = nn.Conv2d(channels, out, 3, padding=1, padding_mode=padding_mode, groups=groups,
                              bias=rng.random() < 0.5)
        norm = rng.choice(("batch", "group", "none"))
        self.norm = nn.BatchNorm2d(out) if norm == "batch" else (
            nn.GroupNorm(2, out) if norm == "group" and out % 2 == 0 else nn.Identity())
        self.act = rng.choice(ACTIVATIONS)()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Concat(nn.Module):
    def __init__(self, left: nn.Module, right: nn.Module):
        super().__init__()
        self.left, self.right = left, right

    def forward(self, x):
        return torch.cat([self.left(x), self.right(x)], dim=1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(channels, max(channels // 2, 1), 1), nn.Conv2d(max(channels // 2, 1),
                                                                                            channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class ImageHead(nn.Module):
    def __init__(self, channels: int, classes: int, scale: float, pool: str):
        super().__init__()
        self.pool, self.scale = pool, scale
        self.fc = nn.Linear(channels * (1 if pool != "flatten" else 36), classes)

    def forward(self, x):
        if self.pool == "mean":
            x = x.mean((2, 3))
        elif self.pool == "max":
            x = F.adaptive_max_pool2d(x, 1).flatten(1)
        else:
            x = x.flatten(1)
        return self.fc(x) * self.scale


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class TorchAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


class Mlp(nn.Module):
    def __init__(self, rng: random.Random, dim: int):
        super().__init__()
        hidden = rng.choice((4, 6, 8, 12))
        self.up, self.act, self.down = nn.Linear(dim, hidden), rng.choice(ACTIVATIONS)(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class PreNorm(nn.Module):
    def __init__(self, dim: int, body: nn.Module):
        super().__init__()
        self.norm, self.body = nn.LayerNorm(dim), body

    def forward(self, x):
        return self.body(self.norm(x))


class TokenMix(nn.Module):
    """MLP-Mixer style: a Linear over the token axis."""

    def __init__(self, length: int):
        super().__init__()
        self.mix = nn.Linear(length, length)

    def forward(self, x):
        return self.mix(x.transpose(1, 2)).transpose(1, 2)


class TokenHead(nn.Module):
    def __init__(self, dim: int, classes: int, scale: float):
        super().__init__()
        self.fc, self.scale = nn.Linear(dim, classes), scale

    def forward(self, x):
        return self.fc(x.mean(1)) * self.scale


def image_model(rng: random.Random) -> Tuple[nn.Module, torch.Tensor]:
    channels = rng.choice((4, 6, 8))
    layers: List[nn.Module] = [ConvBlock(rng, 3, channels)]
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(("conv", "residual", "concat", "se", "depthwise"))
        if kind == "conv":
            out = rng.choice((4, 6, 8))
            layers.append(ConvBlock(rng, channels, out))
            channels = out
        elif kind == "residual":
            layers.append(Residual(nn.Sequential(ConvBlock(rng, channels, channels),
                                                 nn.Conv2d(channels, channels, 1))))
        elif kind == "concat":
            left, right = rng.choice((2, 4)), rng.choice((2, 4))
            layers.append(Concat(ConvBlock(rng, channels, left), ConvBlock(rng, channels, right)))
            channels = left + right
        elif kind == "se":
            layers.append(SqueezeExcite(channels))
        else:
            layers.append(nn.Conv2d(channels, channels, 3, padding=1, groups=channels))
    scale = rng.choice((1.0, 1.0, 1e-3, 1e-5))
    layers.append(ImageHead(channels, rng.choice((2, 3, 5)), scale, rng.choice(("mean", "max", "flatten"))))
    return nn.Sequential(*layers), torch.randn(2, 3, 6, 6)


def token_model(rng: random.Random) -> Tuple[nn.Module, torch.Tensor]:
    dim, length = rng.choice((8, 12)), rng.choice((3, 4))
    layers: List[nn.Module] = [nn.Linear(rng.choice((4, 6)), dim)]
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("mlp", "attention", "torch_attention", "token_mix", "plain_mlp"))
        if kind == "mlp":
            layers.append(Residual(PreNorm(dim, Mlp(rng, dim))))
        elif kind == "attention":
            layers.append(Residual(PreNorm(dim, Attention(dim, 2))))
        elif kind == "torch_attention":
            layers.append(Residual(TorchAttention(dim, 2)))
        elif kind == "token_mix":
            layers.append(Residual(TokenMix(length)))
        else:
            layers.append(Mlp(rng, dim))
    layers.append(TokenHead(dim, rng.choice((2, 3)), rng.choice((1.0, 1e-4))))
    return nn.Sequential(*layers), torch.randn(2, length, layers[0].in_features)


BUILDERS: Tuple[Callable, ...] = (image_model, token_model)


def random_architecture(seed: int) -> Tuple[nn.Module, torch.Tensor, str]:
    """``(model, dummy_input, description)`` for ``seed``; the model is in eval mode with random weights."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    builder = BUILDERS[seed % len(BUILDERS)]
    model, dummy_input = builder(rng)
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval(), dummy_input, f"seed {seed}: {builder.__name__}"
