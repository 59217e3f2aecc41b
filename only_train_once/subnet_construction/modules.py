"""Modules that replace library modules whose pruned form they cannot express themselves."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrunedMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` after head pruning: ``num_heads * head_dim`` may differ from ``embed_dim``.

    Same call signature and outputs as :class:`torch.nn.MultiheadAttention` (packed ``in_proj_weight``,
    ``batch_first``, masks, ``need_weights`` with head-averaged weights); no ``bias_k``/``add_zero_attn``
    and query, key and value share ``embed_dim``.
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, out_dim: int, bias: bool = True,
                 dropout: float = 0.0, batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.dropout, self.batch_first = dropout, batch_first
        inner = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim, **factory))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * inner, **factory)) if bias else None
        self.out_proj = nn.Linear(inner, out_dim, bias=bias, **factory)

    @classmethod
    def from_module(cls, module: nn.MultiheadAttention, head_dim: int) -> "PrunedMultiheadAttention":
        """Wrap the (already shrunk) tensors of ``module``; ``head_dim`` is the unpruned per-head size."""
        weight = module.in_proj_weight
        num_heads = weight.shape[0] // (3 * head_dim)
        new = cls(weight.shape[1], num_heads, head_dim, module.out_proj.weight.shape[0],
                  bias=module.in_proj_bias is not None, dropout=module.dropout, batch_first=module.batch_first,
                  device=weight.device, dtype=weight.dtype)
        new.in_proj_weight = module.in_proj_weight
        new.in_proj_bias = module.in_proj_bias
        new.out_proj = module.out_proj
        new.out_proj.in_features = new.out_proj.weight.shape[1]
        new.out_proj.out_features = new.out_proj.weight.shape[0]
        new.train(module.training)
        return new

    def _mask(self, attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], batch: int,
              dtype) -> Optional[Tensor]:
        mask = None
        if attn_mask is not None:
            mask = attn_mask
            if mask.dtype == torch.bool:
                mask = torch.zeros_like(mask, dtype=dtype).masked_fill(mask, float("-inf"))
            if mask.dim() == 3:
                mask = mask.view(batch, self.num_heads, mask.shape[-2], mask.shape[-1])
        if key_padding_mask is not None:
            padding = key_padding_mask
            if padding.dtype == torch.bool:
                padding = torch.zeros_like(padding, dtype=dtype).masked_fill(padding, float("-inf"))
            padding = padding.view(batch, 1, 1, -1)
            mask = padding if mask is None else mask + padding
        return mask

    def _project(self, inputs: Tensor, index: int, batch: int) -> Tensor:
        """Query (0), key (1) or value (2) projection as ``(batch, heads, length, head_dim)``; slices rather than
        ``chunk`` so that torch.fx can trace the module (the deployment target pickles it as generated code)."""
        inner = self.num_heads * self.head_dim
        rows = slice(index * inner, (index + 1) * inner)
        bias = self.in_proj_bias[rows] if self.in_proj_bias is not None else None
        projected = F.linear(inputs, self.in_proj_weight[rows], bias)
        return projected.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length = query.shape[0], query.shape[1]
        q, k, v = (self._project(t, index, batch) for index, t in enumerate((query, key, value)))
        mask = self._mask(attn_mask, key_padding_mask, batch, q.dtype)
        dropout = self.dropout if self.training else 0.0
        attention = None
        if need_weights:
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim ** -0.5
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                causal = torch.ones(length, k.shape[-2], dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(causal, float("-inf"))
            probabilities = torch.softmax(scores, dim=-1)
            attention = probabilities.mean(dim=1) if average_attn_weights else probabilities
            out = torch.matmul(F.dropout(probabilities, dropout, self.training), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=is_causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, attention


class StandardisedConv2d(nn.Conv2d):
    """A weight-standardised convolution (timm's ``StdConv2d``, ``ScaledStdConv2d`` and their ``Same`` variants)
    whose standardisation was computed once, from the full weight, before input channels were pruned.

    The standardisation ``(w - mean) / sqrt(var + eps)`` runs over every input channel of an output channel, so a
    pruned model recomputing it over the kept inputs would compute something else (the zeroed channels' inputs
    are zero, but their weights still shape the mean and variance). ``weight`` holds the standardised weight;
    ``gain`` (per output channel) and ``scale`` are applied as the original did; ``same_pad`` pads at run time
    like timm's ``*Same`` layers. Pruning then slices it like any convolution.
    """

    scale: float
    same_pad: bool

    @classmethod
    def from_module(cls, module: nn.Conv2d) -> "StandardisedConv2d":
        weight = module.weight
        conv: Any = module  # nn.Conv2d types its geometry as tuples of any length; timm's layers add ``eps``
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                  device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            flat = weight.reshape(1, weight.shape[0], -1)
            standardised = F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=conv.eps)
            new.weight = nn.Parameter(standardised.reshape_as(weight), requires_grad=weight.requires_grad)
        new.bias = module.bias
        gain = module._parameters.get("gain")
        if gain is not None:
            new.gain = gain
        new.scale = float(getattr(module, "scale", 1.0))
        new.same_pad = bool(getattr(module, "same_pad", False))
        new.train(module.training)
        return new

    def forward(self, x: Tensor) -> Tensor:
        if self.same_pad:
            x = _pad_same(x, self.kernel_size, self.stride, self.dilation)
        weight = self.weight * self.scale
        gain = self._parameters.get("gain")
        if gain is not None:
            weight = weight * gain.reshape(-1, *([1] * (weight.dim() - 1)))
        return self._conv_forward(x, weight, self.bias)


def _pad_same(x: Tensor, kernel_size, stride, dilation) -> Tensor:
    """Pad the spatial axes so the output has ``ceil(size / stride)`` positions (TensorFlow's 'SAME')."""
    pads = []
    for size, k, s, d in reversed(list(zip(x.shape[2:], kernel_size, stride, dilation))):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)
