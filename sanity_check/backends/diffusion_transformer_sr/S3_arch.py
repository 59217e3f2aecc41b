"""DiffIR-style super-resolution (Xia et al. 2023): a U-shaped transformer ``G`` whose attention and feed-forward
layers are modulated by a compact image prior ``k_v`` ([B, 256]), and a small iterative prior estimator.

The reference's sanity tests use ``DiffIRS3SNPE(num_blocks=[2, 1, 1, 1])`` and trace its parts:
``G.down_path(feat [1, 48, H, W], k_v [1, 256])``, ``G.up_path(enc1, enc2, enc3, latent, k_v)`` and
``G(lq [1, 3, H, W], k_v [1, 256])``.

Transformer blocks follow Restormer: channel-wise ("transposed") multi-head attention with depthwise-conv
q/k/v, and a gated depthwise-conv feed-forward network; each multiplies its input by a per-channel scale and
adds a per-channel shift computed from ``k_v`` by a bias-free Linear (``kernel``).
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRIOR_DIM = 256


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of ``[B, C, H, W]`` at every position."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PriorModulation(nn.Module):
    """``x * scale + shift`` with ``(scale, shift)`` = ``kernel(k_v)`` split in two, broadcast over H and W."""

    def __init__(self, channels: int, prior_dim: int = PRIOR_DIM) -> None:
        super().__init__()
        self.kernel = nn.Sequential(nn.Linear(prior_dim, 2 * channels, bias=False))

    def forward(self, x: Tensor, k_v: Tensor) -> Tensor:
        scale, shift = self.kernel(k_v)[:, :, None, None].chunk(2, dim=1)
        return x * scale + shift


class TransposedAttention(nn.Module):
    """Multi-head attention across channels: ``softmax(norm(q) norm(k)^T * temperature) v`` per head, with
    q/k/v from a 1x1 conv followed by a 3x3 depthwise conv."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.modulation = PriorModulation(dim)
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: Tensor, k_v: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(self.modulation(x, k_v))).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, -1, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (torch.matmul(q, k.transpose(-2, -1)) * self.temperature).softmax(dim=-1)
        return self.project_out(torch.matmul(attn, v).reshape(b, c, h, w))


class GatedFeedForward(nn.Module):
    """``project_in`` (1x1) to two halves, 3x3 depthwise conv, ``gelu(x1) * x2``, ``project_out`` (1x1)."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.modulation = PriorModulation(dim)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor, k_v: Tensor) -> Tensor:
        x1, x2 = self.dwconv(self.project_in(self.modulation(x, k_v))).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(norm1(x))``, then ``x + ffn(norm2(x))``, both prior-modulated."""

    def __init__(self, dim: int, num_heads: int, expansion: float) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim)
        self.attn = TransposedAttention(dim, num_heads)
        self.norm2 = ChannelLayerNorm(dim)
        self.ffn = GatedFeedForward(dim, expansion)

    def forward(self, x: Tensor, k_v: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), k_v)
        return x + self.ffn(self.norm2(x), k_v)


class BlockSequence(nn.ModuleList):
    """Transformer blocks applied in order, each with the same prior."""

    def forward(self, x: Tensor, k_v: Tensor) -> Tensor:
        for block in self:
            x = block(x, k_v)
        return x


class Downsample(nn.Module):
    """3x3 conv halving the channels, then pixel unshuffle (x2): ``[B, C, H, W] -> [B, 2C, H/2, W/2]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3x3 conv doubling the channels, then pixel shuffle (x2): ``[B, C, H, W] -> [B, C/2, 2H, 2W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _blocks(dim: int, count: int, heads: int, expansion: float) -> BlockSequence:
    return BlockSequence(TransformerBlock(dim, heads, expansion) for _ in range(count))


class DownPath(nn.Module):
    """``patch_embed`` (3x3 conv) and three encoder levels with downsampling, then the ``latent`` level.

    ``forward(feat [B, in_channels, H, W], k_v [B, 256])`` -> ``(enc1 [B, dim, H, W], enc2 [B, 2dim, H/2, W/2],
    enc3 [B, 4dim, H/4, W/4], latent [B, 8dim, H/8, W/8])``.
    """

    def __init__(self, in_channels: int, dim: int, num_blocks: Sequence[int], heads: Sequence[int],
                 expansion: float) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)
        self.encoder_level1 = _blocks(dim, num_blocks[0], heads[0], expansion)
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = _blocks(2 * dim, num_blocks[1], heads[1], expansion)
        self.down2_3 = Downsample(2 * dim)
        self.encoder_level3 = _blocks(4 * dim, num_blocks[2], heads[2], expansion)
        self.down3_4 = Downsample(4 * dim)
        self.latent = _blocks(8 * dim, num_blocks[3], heads[3], expansion)

    def forward(self, feat: Tensor, k_v: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        enc1 = self.encoder_level1(self.patch_embed(feat), k_v)
        enc2 = self.encoder_level2(self.down1_2(enc1), k_v)
        enc3 = self.encoder_level3(self.down2_3(enc2), k_v)
        return enc1, enc2, enc3, self.latent(self.down3_4(enc3), k_v)


class UpPath(nn.Module):
    """Three decoder levels, each upsampling and concatenating the encoder feature (1x1 ``reduce_chan_level*``
    at levels 3 and 2), then ``refinement`` blocks at full resolution.

    ``forward(enc1, enc2, enc3, latent, k_v)`` -> ``[B, 2dim, H, W]``.
    """

    def __init__(self, dim: int, num_blocks: Sequence[int], heads: Sequence[int], expansion: float,
                 num_refinement_blocks: int) -> None:
        super().__init__()
        self.up4_3 = Upsample(8 * dim)
        self.reduce_chan_level3 = nn.Conv2d(8 * dim, 4 * dim, 1, bias=False)
        self.decoder_level3 = _blocks(4 * dim, num_blocks[2], heads[2], expansion)
        self.up3_2 = Upsample(4 * dim)
        self.reduce_chan_level2 = nn.Conv2d(4 * dim, 2 * dim, 1, bias=False)
        self.decoder_level2 = _blocks(2 * dim, num_blocks[1], heads[1], expansion)
        self.up2_1 = Upsample(2 * dim)
        self.decoder_level1 = _blocks(2 * dim, num_blocks[0], heads[0], expansion)
        self.refinement = _blocks(2 * dim, num_refinement_blocks, heads[0], expansion)

    def forward(self, enc1: Tensor, enc2: Tensor, enc3: Tensor, latent: Tensor, k_v: Tensor) -> Tensor:
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)), k_v)
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)), k_v)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1), k_v)
        return self.refinement(dec1, k_v)


class DIRformer(nn.Module):
    """The restoration transformer: pixel unshuffle of the input by ``unshuffle``, ``down_path``, ``up_path``,
    a 3x3 ``output`` conv and pixel shuffle back, plus the input (global residual).

    ``forward(lq [B, 3, H, W], k_v [B, 256])`` -> ``[B, 3, H, W]`` (H, W divisible by ``8 * unshuffle``).
    """

    def __init__(self, in_channels: int = 3, dim: int = 64, num_blocks: Sequence[int] = (13, 1, 1, 1),
                 num_refinement_blocks: int = 1, heads: Sequence[int] = (1, 2, 4, 8), expansion: float = 2.2,
                 unshuffle: int = 4) -> None:
        super().__init__()
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError("num_blocks and heads need one entry per level (four)")
        self.unshuffle = unshuffle
        self.down_path = DownPath(in_channels * unshuffle ** 2, dim, num_blocks, heads, expansion)
        self.up_path = UpPath(dim, num_blocks, heads, expansion, num_refinement_blocks)
        self.output = nn.Conv2d(2 * dim, in_channels * unshuffle ** 2, 3, padding=1, bias=False)

    def forward(self, lq: Tensor, k_v: Tensor) -> Tensor:
        features = self.down_path(F.pixel_unshuffle(lq, self.unshuffle), k_v)
        out = self.up_path(*features, k_v)
        return F.pixel_shuffle(self.output(out), self.unshuffle) + lq


class PriorEncoder(nn.Module):
    """Compact prior from the low-quality image: pixel unshuffle, strided convs, global pooling, MLP to 256."""

    def __init__(self, in_channels: int = 3, width: int = 64, unshuffle: int = 4) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels * unshuffle ** 2, width, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.1))
        self.mlp = nn.Sequential(nn.Linear(4 * width, PRIOR_DIM), nn.LeakyReLU(0.1),
                                 nn.Linear(PRIOR_DIM, PRIOR_DIM))

    def forward(self, lq: Tensor) -> Tensor:
        return self.mlp(self.convs(F.pixel_unshuffle(lq, self.unshuffle)).mean(dim=(2, 3)))


class PriorDenoiser(nn.Module):
    """Deterministic iterative refinement of the prior (the diffusion stage, sampled without noise):
    ``z <- z + net([z, condition, t / T])`` for ``t = T - 1 .. 0``, starting from ``z = 0``."""

    def __init__(self, timesteps: int = 4, hidden: int = 2 * PRIOR_DIM) -> None:
        super().__init__()
        self.timesteps = timesteps
        self.net = nn.Sequential(nn.Linear(2 * PRIOR_DIM + 1, hidden), nn.LeakyReLU(0.1),
                                 nn.Linear(hidden, PRIOR_DIM))

    def forward(self, condition: Tensor) -> Tensor:
        z = torch.zeros_like(condition)
        for step in reversed(range(self.timesteps)):
            t = torch.full_like(condition[:, :1], step / self.timesteps)
            z = z + self.net(torch.cat([z, condition, t], dim=1))
        return z


class DiffIRS3SNPE(nn.Module):
    """DiffIR stage-3 super-resolution model: ``condition`` encoder and ``denoiser`` estimate the prior ``k_v``
    from ``lq``; ``G`` restores ``lq`` with it. ``forward(lq)`` -> ``[B, 3, H, W]``.

    Keyword arguments other than ``timesteps`` configure ``G`` (:class:`DIRformer`), e.g. ``num_blocks``.
    """

    def __init__(self, timesteps: int = 4, **transformer_kwargs) -> None:
        super().__init__()
        self.G = DIRformer(**transformer_kwargs)
        self.condition = PriorEncoder(self.G.output.out_channels // self.G.unshuffle ** 2, unshuffle=self.G.unshuffle)
        self.denoiser = PriorDenoiser(timesteps)

    def forward(self, lq: Tensor) -> Tensor:
        return self.G(lq, self.denoiser(self.condition(lq)))
