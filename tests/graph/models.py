"""Small models, each exercising one kind of pruning group."""

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Module):
    """conv -> bn -> relu -> conv -> bn -> relu -> pool -> linear."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class Residual(nn.Module):
    """Two convs whose outputs are added: one group."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.shortcut = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        return self.head(F.relu(self.branch(x) + self.shortcut(x)))


class Concat(nn.Module):
    """cat([conv_a (4 ch), conv_b (6 ch)]) -> bn -> conv: an auxiliary group with offsets 0 and 4."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.head = nn.Conv2d(10, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.bn(torch.cat([self.conv_a(x), self.conv_b(x)], 1))))


class Depthwise(nn.Module):
    """conv -> depthwise conv -> pointwise conv: the depthwise conv joins its producer's group."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.pw(F.relu(self.bn(self.dw(F.relu(self.conv(x))))))


class GroupedConv(nn.Module):
    """A grouped conv (4 groups): units are whole convolution groups of 2 channels in, 3 out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.head = nn.Conv2d(12, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.grouped(F.relu(self.conv(x)))))


class ConvTranspose(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.norm = nn.InstanceNorm2d(6, affine=True)
        self.head = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return self.head(F.relu(self.norm(self.up(F.relu(self.conv(x))))))


class EmbeddingMLP(nn.Module):
    """Embedding columns feed a Linear: the embedding dim is a prunable group (TRANSPOSE)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, ids):
        return self.out(F.gelu(self.fc(self.embed(ids)))).mean(1)


class PReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.PReLU(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.act(self.conv(x)))


class FlattenLinear(nn.Module):
    """conv -> flatten -> linear: each channel owns 4x4 = 16 consecutive linear inputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


class SeparateQKVAttention(nn.Module):
    """Self-attention with separate q/k/v projections: pruned by whole heads (``num_heads`` is updated)."""

    def __init__(self, dim=16, num_heads=4):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class FusedQKVAttention(nn.Module):
    """timm-style fused qkv with scaled_dot_product_attention."""

    def __init__(self, dim=16, num_heads=4):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class FixedShapeAttention(nn.Module):
    """The head count is a literal in forward: heads cannot be pruned (the analyzer must see it)."""

    def __init__(self, dim=16):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, 4).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class TokenMixer(nn.Module):
    """Attention block wrapped with a residual stream that is *not* normalised (so the stream is prunable)."""

    def __init__(self, attention):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = attention
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        return self.head(h + self.attn(h)).mean(1)


class WeightShare(nn.Module):
    """The same conv applied twice: one group with both nodes."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = F.relu(self.conv0(x))
        return self.head(F.relu(self.shared(F.relu(self.shared(x)))))


class BareParameters(nn.Module):
    """Layer scale, position embedding and class token as bare Parameters on an unnormalised stream."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, 8))
        self.fc = nn.Linear(8, 8)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        tokens = tokens + self.gamma * F.gelu(self.fc(tokens))
        return self.head(tokens[:, 0])


class GroupNormNet(nn.Module):
    """GroupNorm(4 groups) after a conv: units are GroupNorm groups of 3 channels."""

    def __init__(self, affine=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)
        self.norm = nn.GroupNorm(4, 12, affine=affine)
        self.head = nn.Conv2d(12, 2, 1)

    def forward(self, x):
        return self.head(F.silu(self.norm(self.conv(x))))


class GroupNormOverConcat(nn.Module):
    """GroupNorm (groups of 4 channels) over cat([a, b]); ``a`` also feeds a conv of its own. With 16 + 8
    channels every group lies in one branch: ``a`` has 4 units of 4 channels, ``b`` 2. With 6 + 6 a group
    straddles the boundary, and everything is kept."""

    def __init__(self, channels_a=16, channels_b=8):
        super().__init__()
        self.conv_a = nn.Conv2d(3, channels_a, 3, padding=1)
        self.conv_b = nn.Conv2d(3, channels_b, 3, padding=1)
        self.norm = nn.GroupNorm((channels_a + channels_b) // 4, channels_a + channels_b)
        self.side = nn.Conv2d(channels_a, 2, 1)
        self.head = nn.Conv2d(channels_a + channels_b, 2, 1)

    def forward(self, x):
        a, b = F.relu(self.conv_a(x)), F.relu(self.conv_b(x))
        return self.head(F.silu(self.norm(torch.cat([a, b], 1)))) + self.side(a)


class TwoGroupNorms(nn.Module):
    """GroupNorm(``first``) then GroupNorm(``second``) over the same 64 channels: a unit must be whole groups of
    both, i.e. groups of the coarser one."""

    def __init__(self, first=2, second=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.norm_1 = nn.GroupNorm(first, 64)
        self.norm_2 = nn.GroupNorm(second, 64)
        self.head = nn.Conv2d(64, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.norm_2(F.relu(self.norm_1(self.conv(x))))))


class SpatialAttention(nn.Module):
    """Single-head attention over pixels with 1x1 q/k/v (a diffusion UNet's AttnBlock). The scale is
    ``c ** -0.5`` from the input's channel count (``scale_from_size``), or the constant for 16 channels."""

    def __init__(self, scale_from_size=True):
        super().__init__()
        self.scale_from_size = scale_from_size
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.q, self.k, self.v = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        b, c, h, w = x.shape
        q = self.q(x).reshape(b, c, h * w).transpose(1, 2)
        k, v = self.k(x).reshape(b, c, h * w), self.v(x).reshape(b, c, h * w)
        scale = c ** -0.5 if self.scale_from_size else 0.25
        out = torch.bmm(v, torch.softmax(torch.bmm(q, k) * scale, dim=-1).transpose(1, 2)).reshape(b, c, h, w)
        return self.head(x + out)


class LayerNormStream(nn.Module):
    """LayerNorm over the channels of a Linear: those channels are pinned (normalised together)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 12)
        self.fc3 = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(self.norm(self.fc1(x)))))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc(pool(x))): sigmoid(0) = 0.5, but the product with the zeroed x is zero again."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = F.relu(self.conv(x))
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head(x * scale)


class ShiftedActivation(nn.Module):
    """relu(conv(x)) + 1 feeds a padded conv: a pruned channel would read 1, not 0, and the padded border sees that
    constant only in part (a 1x1 conv could fold it into its bias), so the group is not zero-invariant."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        return self.head(F.relu(self.conv(x)) + 1.0)


class NoAffineBatchNorm(nn.Module):
    """BatchNorm without affine parameters: a zeroed channel becomes -mean/std, not 0."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, affine=False)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))


class UnknownOperator(nn.Module):
    """An operator the analyzer does not know (torch.special.i0) sits between two convs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(F.relu(self.mid(torch.special.i0(self.conv(x)))))


class MultiheadAttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        out, _ = self.attn(h, h, h)
        return self.head(h + out).mean(1)


class DictModel(nn.Module):
    """Keyword inputs and a dict output, Hugging Face style."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 12)
        self.out = nn.Linear(12, 4)

    def forward(self, input_ids, scale=1.0):
        hidden = self.out(F.relu(self.fc(self.embed(input_ids)))) * scale
        return {"logits": hidden, "hidden": None}


class ClampedActivation(nn.Module):
    """clamp(min=...) before a padded conv: min=0 keeps pruned zeros, min=0.1 turns them into 0.1 (which the padded
    conv cannot fold into its bias)."""

    def __init__(self, low: float):
        super().__init__()
        self.low = low
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x):
        return self.head(torch.clamp(self.conv(x), min=self.low, max=6.0))
