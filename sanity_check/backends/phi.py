"""Phi-style decoder (Microsoft Phi-1.5/2 layout): fused-qkv attention and MLP in parallel after one LayerNorm."""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .llama import causal_attention_bias, rotate_half


@dataclass
class PhiConfig:
    """Model sizes; the defaults give a two-layer model of about 0.13 M parameters.

    ``rotary_dim`` leading dimensions of each head are rotated (partial rotary embedding).
    """

    vocab_size: int = 256
    n_positions: int = 128
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    rotary_dim: int = 8
    n_inner: Optional[int] = None
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02


class RotaryEmbedding(nn.Module):
    """Rotary embedding on the first ``rotary_dim`` dimensions of ``[B, heads, L, head_dim]`` tensors."""

    def __init__(self, rotary_dim: int, max_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        self.rotary_dim = rotary_dim
        inv_freq = 1.0 / base ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)
        angles = torch.outer(torch.arange(max_positions).float(), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        seq_len = x.shape[2]
        cos, sin = self.cos_cached[:seq_len].to(x.dtype), self.sin_cached[:seq_len].to(x.dtype)
        rotated, passed = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        return torch.cat([rotated * cos + rotate_half(rotated) * sin, passed], dim=-1)


class PhiMHA(nn.Module):
    """Causal multi-head attention; ``Wqkv`` has ``3 * n_head * head_dim`` outputs laid out (q | k | v), each
    head-major; ``out_proj`` maps back to ``n_embd``. Forward reads ``n_head`` and ``head_dim``."""

    def __init__(self, config: PhiConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head != 0:
            raise ValueError(f"n_embd {config.n_embd} must be divisible by n_head {config.n_head}")
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.rotary_emb = RotaryEmbedding(config.rotary_dim, config.n_positions)
        self.Wqkv = nn.Linear(config.n_embd, 3 * self.n_head * self.head_dim)
        self.out_proj = nn.Linear(self.n_head * self.head_dim, config.n_embd)

    def forward(self, x: Tensor, attention_bias: Tensor) -> Tensor:
        """``x`` ``[B, L, n_embd]``; ``attention_bias`` additive, broadcastable to ``[B, n_head, L, L]``."""
        b, n, _ = x.shape
        qkv = self.Wqkv(x).view(b, n, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.rotary_emb(q), self.rotary_emb(k)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim ** -0.5 + attention_bias
        out = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2).reshape(b, n, self.n_head * self.head_dim)
        return self.out_proj(out)


class PhiMLP(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2."""

    def __init__(self, config: PhiConfig) -> None:
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.fc1 = nn.Linear(config.n_embd, inner)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(inner, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ParallelBlock(nn.Module):
    """``x + mixer(ln(x)) + mlp(ln(x))``: attention and MLP share one LayerNorm and run in parallel."""

    def __init__(self, config: PhiConfig) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mixer = PhiMHA(config)
        self.mlp = PhiMLP(config)

    def forward(self, x: Tensor, attention_bias: Tensor) -> Tensor:
        normed = self.ln(x)
        return x + self.mixer(normed, attention_bias) + self.mlp(normed)


class PhiEmbedding(nn.Module):
    """Token embedding ``wte``."""

    def __init__(self, config: PhiConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.wte(input_ids)


class PhiModel(nn.Module):
    """Embedding (``embd``) and parallel blocks (``h``): ``[B, L]`` ids -> ``[B, L, n_embd]``."""

    def __init__(self, config: PhiConfig) -> None:
        super().__init__()
        self.embd = PhiEmbedding(config)
        self.h = nn.ModuleList(ParallelBlock(config) for _ in range(config.n_layer))

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        hidden_states = self.embd(input_ids)
        bias = causal_attention_bias(input_ids.shape[1], hidden_states.dtype, input_ids.device, attention_mask)
        for block in self.h:
            hidden_states = block(hidden_states, bias)
        return hidden_states


class CausalLMHead(nn.Module):
    """LayerNorm then Linear to the vocabulary."""

    def __init__(self, config: PhiConfig) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.linear = nn.Linear(config.n_embd, config.vocab_size)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.linear(self.ln(hidden_states))


class PhiForCausalLM(nn.Module):
    """``transformer`` (PhiModel) plus ``lm_head``; returns logits ``[B, L, vocab_size]``."""

    def __init__(self, config: PhiConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = PhiModel(config)
        self.lm_head = CausalLMHead(config)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=config.initializer_range)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None) -> Tensor:
        return self.lm_head(self.transformer(input_ids, attention_mask=attention_mask))
