"""SimpleViT (Beyer et al. 2022, "Better plain ViT baselines"), written without einops."""
import torch
from torch import Tensor, nn


def posemb_sincos_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sin-cos position embedding, ``[height * width, dim]`` (``dim`` divisible by 4)."""
    if dim % 4 != 0:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4) / (dim // 4 - 1))
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)


class PatchToTokens(nn.Module):
    """``[B, C, H, W]`` -> ``[B, (H/p)(W/p), p*p*C]`` non-overlapping patches, each flattened as (p1, p2, c)."""

    def __init__(self, patch_height: int, patch_width: int) -> None:
        super().__init__()
        self.patch_height = patch_height
        self.patch_width = patch_width

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        ph, pw = self.patch_height, self.patch_width
        x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // ph) * (w // pw), ph * pw * c)


class FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm -> Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SimpleViTAttention(nn.Module):
    """Pre-norm multi-head self-attention with a fused bias-free ``to_qkv`` of ``3 * heads * dim_head`` outputs."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.attend = nn.Softmax(dim=-1)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, dim]`` -> ``[B, N, dim]``."""
        x = self.norm(x)
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        attn = self.attend(torch.matmul(q, k.transpose(-1, -2)) * self.scale)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.to_out(out)


class Transformer(nn.Module):
    """``depth`` residual (attention, feed-forward) pairs and a final LayerNorm."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([SimpleViTAttention(dim, heads, dim_head), FeedForward(dim, mlp_dim)]) for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class SimpleViT(nn.Module):
    """Patch embedding (``to_patch_embedding``: tokens, LayerNorm, Linear, LayerNorm), fixed sin-cos positions,
    transformer, mean pooling, linear head. Input ``[B, channels, H, W]``, output ``[B, num_classes]``."""

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        channels: int = 3,
        dim_head: int = 64,
    ) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size {image_size} must be divisible by patch_size {patch_size}")
        patch_dim = channels * patch_size * patch_size
        self.to_patch_embedding = nn.Sequential(
            PatchToTokens(patch_size, patch_size), nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim)
        )
        grid = image_size // patch_size
        self.register_buffer("pos_embedding", posemb_sincos_2d(grid, grid, dim), persistent=False)
        self.transformer = Transformer(dim, depth, heads, dim_head, mlp_dim)
        self.linear_head = nn.Linear(dim, num_classes)

    def forward(self, img: Tensor) -> Tensor:
        x = self.to_patch_embedding(img) + self.pos_embedding.to(img.dtype)
        return self.linear_head(self.transformer(x).mean(dim=1))


def simpleViT_cifar10(num_classes: int = 10) -> SimpleViT:
    """32x32 images, 4x4 patches (64 tokens), dim 128, depth 4, 4 heads of 32, MLP 256 (536,042 parameters)."""
    return SimpleViT(
        image_size=32, patch_size=4, num_classes=num_classes, dim=128, depth=4, heads=4, mlp_dim=256, dim_head=32
    )
