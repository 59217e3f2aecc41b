"""Third-party layers whose torch calls the analyzer cannot read as prunable, described once each.

They are registered by class path (:func:`~only_train_once.operation.registry.register_module` with a string), so
the library never imports their packages; a model without them is unaffected.

* timm's ``GlobalResponseNorm`` (ConvNeXt-V2): ``x + bias + weight * x * x_n`` with
  ``x_n = |x|_spatial / mean_channels(|x|_spatial)``. A zeroed channel (zero input, zero ``weight`` and ``bias``)
  stays zero and adds nothing to the channel sum, but the *mean* divides by the channel count; the pruned module
  is therefore replaced by :class:`ChannelCountGlobalResponseNorm`, which divides by the original count.
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
from torch import Tensor, nn

from .registry import register_module

GLOBAL_RESPONSE_NORM = "timm.layers.grn.GlobalResponseNorm"


class ChannelCountGlobalResponseNorm(nn.Module):
    """Global response normalisation whose channel mean divides by ``channels``, the count before pruning."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter, eps: float, spatial_dim: Tuple[int, ...],
                 channel_dim: int, channels: int):
        super().__init__()
        self.weight, self.bias = weight, bias
        self.eps, self.spatial_dim, self.channel_dim, self.channels = eps, tuple(spatial_dim), channel_dim, channels

    @classmethod
    def from_module(cls, module: nn.Module, channels: int) -> "ChannelCountGlobalResponseNorm":
        grn: Any = module  # timm's GlobalResponseNorm, whose attributes nn.Module does not type
        return cls(grn.weight, grn.bias, float(grn.eps), tuple(int(d) for d in grn.spatial_dim), int(grn.channel_dim),
                   channels)

    def forward(self, x: Tensor) -> Tensor:
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        x_g = x.norm(p=2, dim=self.spatial_dim, keepdim=True)
        x_n = x_g / (x_g.sum(dim=self.channel_dim, keepdim=True) / self.channels + self.eps)
        return x + torch.addcmul(self.bias.view(shape), self.weight.view(shape), x * x_n)


def _grn_channel_axis(ctx, node) -> int:
    return int(node.call.module.channel_dim) % len(ctx.shape(node.call.inputs[0]))


def _grn_propagate(ctx, node) -> None:
    x = node.value_arg(0, "x")
    channels = ctx.axes(x)[_grn_channel_axis(ctx, node)]
    for name in ("weight", "bias"):
        parameter = node.value_arg(-1, name)
        ctx.spaces.union(ctx.axes(parameter)[0], channels)
        ctx.claim(parameter, 0, node)
    ctx.set_axes(node.outputs[0], ctx.axes(x))


def _grn_zero_rule(ctx, node, out, nonzero) -> frozenset:
    """A pruned channel is zero at the output when it is zero at the input and its bias is zeroed with it."""
    bias = node.value_arg(-1, "bias")
    x = node.value_arg(0, "x")
    if ctx.graph.values[bias].requires_grad:
        return nonzero(x)
    return nonzero(x) | ctx.units(ctx.axes(x)[_grn_channel_axis(ctx, node)])


def _no_attributes(module, node, kept_in: int) -> dict:
    return {}


register_module(GLOBAL_RESPONSE_NORM, _grn_propagate, zero_rule=_grn_zero_rule, update=_no_attributes,
                op_name="global_response_norm", replace=ChannelCountGlobalResponseNorm.from_module)
