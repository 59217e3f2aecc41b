"""BatchNorm folding: an eval-mode BatchNorm right after a convolution or linear layer goes into its weights.

Folding is exact in real arithmetic when the BatchNorm's input is the layer's output and nothing else reads that
output (a residual branch taken before the BatchNorm would see the folded values), so the pairs come from the
traced graph: a ``conv``/``linear`` node whose only consumer is a ``batchnorm`` node, not a model output. Only
the torch BatchNorm classes themselves are folded (a subclass may do more in its forward), and timm's
``BatchNormAct2d``, whose activation stays in place. In float32 the folded weights differ from the product by
rounding (about 1e-7 relative).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, List, Tuple, cast

import torch
from torch import nn

from ..graph import Graph

__all__ = ["foldable_pairs", "fold_batchnorm", "norm_replacement"]

logger = logging.getLogger(__name__)

_FOLDABLE = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "linear": (nn.Linear,)}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _consumer_counts(graph: Graph) -> Counter:
    counts: Counter = Counter()
    for node in graph.nodes.values():
        counts.update(set(node.inputs))
    counts.update(graph.output_values)
    return counts


def _is_foldable_norm(module: Any) -> bool:
    known = type(module) in _NORMS or _is_norm_act(module)
    return known and not module.training and module.running_mean is not None


def _is_norm_act(module: Any) -> bool:
    """timm's ``BatchNormAct2d``: a BatchNorm subclass whose forward is the norm, then its ``drop`` and ``act``."""
    return isinstance(module, _NORMS) and type(module).__name__ == "BatchNormAct2d" and \
        hasattr(module, "drop") and hasattr(module, "act")


def norm_replacement(norm: nn.Module) -> nn.Module:
    """What stays of a folded norm: nothing, or the dropout and activation of a norm-activation module."""
    return nn.Sequential(cast(nn.Module, norm.drop), cast(nn.Module, norm.act)) if _is_norm_act(norm) \
        else nn.Identity()


def foldable_pairs(model: nn.Module, dummy_input: Any) -> List[Tuple[str, str]]:
    """``[(layer name, BatchNorm name)]`` of the pairs of ``model`` (eval mode) that fold exactly."""
    graph = Graph(model, dummy_input)
    names = {id(module): name for name, module in model.named_modules()}
    consumers = _consumer_counts(graph)
    pairs = []
    for node in graph.nodes.values():
        kinds = _FOLDABLE.get(node.op_name)
        if kinds is None or not isinstance(node.module, kinds) or len(node.outputs) != 1:
            continue
        followers = graph.successors(node)
        if consumers[node.outputs[0]] != 1 or len(followers) != 1:
            continue
        norm = followers[0]
        if norm.op_name == "batchnorm" and _is_foldable_norm(norm.module) and norm.inputs[:1] == node.outputs:
            pairs.append((names[id(node.module)], names[id(norm.module)]))
    return _used_once(pairs)


def _used_once(pairs: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Drop layers or norms called more than once (a shared module cannot absorb one call's BatchNorm)."""
    layer_uses = Counter(layer for layer, _ in pairs)
    norm_uses = Counter(norm for _, norm in pairs)
    return [(layer, norm) for layer, norm in dict.fromkeys(pairs)
            if layer_uses[layer] == 1 and norm_uses[norm] == 1]


@torch.no_grad()
def fold_batchnorm(layer: nn.Module, norm: nn.Module) -> torch.Tensor:
    """Fold ``norm`` into ``layer`` in place (``layer`` gains a bias if it had none); returns the per-output-
    channel factor ``gamma / sqrt(var + eps)`` applied to the weight."""
    # A BatchNorm in eval mode (running statistics present) and a conv/linear layer; nn.Module does not type them.
    bn: Any = norm
    target: Any = layer
    factor = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        factor = factor * bn.weight
    shift = -bn.running_mean * factor
    if bn.bias is not None:
        shift = shift + bn.bias
    weight = target.weight
    target.weight.copy_(weight * factor.reshape(-1, *([1] * (weight.dim() - 1))).to(weight.dtype))
    if target.bias is None:
        target.bias = nn.Parameter(shift.to(weight.dtype))
    else:
        target.bias.copy_(target.bias * factor + shift)
    return factor
