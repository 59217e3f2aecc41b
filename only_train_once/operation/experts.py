"""Sparse mixture-of-experts layers: every expert's hidden units are prunable, each expert on its own.

Hugging Face transformers (5.x) keeps all experts of a layer in one module with two 3-D parameters,
``gate_up_proj [experts, 2 * hidden, width]`` (per expert: its gate rows, then its up rows) and
``down_proj [experts, width, hidden]``, and computes expert ``e`` on the tokens routed to it as
``down_proj[e] @ (act(gate_e x) * up_e x)``, scaled by the token's routing weight (``MixtralExperts`` and the
classes listed in :data:`EXPERTS_CLASSES`). Its forward dispatches to ``torch._grouped_mm``/``histc`` kernels the
analyzer cannot read, so the module is registered as one call (:func:`~.registry.register_module`) with this rule:

* a unit is one hidden unit ``j`` of one expert ``e``: gate row ``j`` and up row ``j`` of ``gate_up_proj[e]``
  (the group's slices, zeroed and scored by the optimizer) and column ``j`` of ``down_proj[e]`` (removed with it).
  Zeroing the unit's rows makes ``act(0) * 0 = 0`` its output, whatever ``down_proj`` holds, so the layer's output
  is unchanged. Units never span experts; an expert may lose all its units (it then adds exactly zero);
* the ``experts * hidden`` units of a layer form one group, read along ``gate_up_proj``'s flattened (expert, row)
  axis (:mod:`~only_train_once.graph.pruning_axis`; why one group and not one per expert:
  :class:`~only_train_once.dependency_graph.analysis.MappedAxis`);
* the expert axis is pinned: the router keeps its expert count, and ``top_k_index`` keeps naming the same experts;
* the model width (``gate_up_proj``'s input columns, ``down_proj``'s output rows) is the width of the layer's input
  and output, pruned or pinned with the residual stream it belongs to (or with the layers around it).

After pruning, experts keep different numbers of hidden units, which no 3-D tensor holds: the module is replaced
by :class:`RaggedExperts`, whose parameters keep their names and hold the kept rows packed expert after expert. The
same rule reads :class:`RaggedExperts`, so a compressed model can be traced again (metrics) and pruned further.

Only the layout above is supported (``has_gate``, concatenated gate/up, not transposed, no biases, no post-expert
norm, the default gating): other experts modules are reported at ``OTO(...)`` time and stay unpruned. GPT-OSS's
experts (transposed ``[E, H, 2I]``, interleaved gate/up, biases, a clamped gate) are such a case: their hidden axis
is not next to the expert axis, so no view of the tensor holds the (expert, unit) pairs as one axis for the
optimizer to write through.

Expert weights are 3-D batched matrices, which no quantized layer holds: in weight+activation quantization the
experts stay float (``model_to_quantize_model`` warns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph.pruning_axis import PruningAxis
from .registry import register_module

#: Hugging Face experts classes computing ``down @ (act(gate x) * up x)`` per expert with the layout of the module
#: docstring; each was checked end to end (``tests/thirdparty_zoo``). Registered by path, nothing is imported.
EXPERTS_CLASSES = (
    "transformers.models.mixtral.modeling_mixtral.MixtralExperts",
    "transformers.models.qwen2_moe.modeling_qwen2_moe.Qwen2MoeExperts",
    "transformers.models.qwen3_moe.modeling_qwen3_moe.Qwen3MoeExperts",
    "transformers.models.olmoe.modeling_olmoe.OlmoeExperts",
    "transformers.models.flex_olmo.modeling_flex_olmo.FlexOlmoExperts",
    "transformers.models.phimoe.modeling_phimoe.PhimoeExperts",
    "transformers.models.granitemoe.modeling_granitemoe.GraniteMoeExperts",
    "transformers.models.dots1.modeling_dots1.Dots1Experts",
    "transformers.models.ernie4_5_moe.modeling_ernie4_5_moe.Ernie4_5_MoeExperts",
    "transformers.models.hunyuan_v1_moe.modeling_hunyuan_v1_moe.HunYuanMoEV1Experts",
    "transformers.models.glm4_moe.modeling_glm4_moe.Glm4MoeExperts",
    "transformers.models.deepseek_v2.modeling_deepseek_v2.DeepseekV2Experts",
    "transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3Experts",
    "transformers.models.jamba.modeling_jamba.JambaExperts",
    "transformers.models.qwen3_next.modeling_qwen3_next.Qwen3NextExperts",
    "transformers.models.minimax.modeling_minimax.MiniMaxExperts",
    "transformers.models.lfm2_moe.modeling_lfm2_moe.Lfm2MoeExperts",
)

#: attribute -> the value the supported layout needs (set by transformers' ``use_experts_implementation``)
_LAYOUT = {"has_gate": True, "has_bias": False, "is_transposed": False, "is_concatenated": True,
           "has_post_expert_norm": False}


class RaggedExperts(nn.Module):
    """The experts of one layer after pruning: expert ``e`` keeps ``hidden_sizes[e]`` hidden units.

    ``gate_up_proj``: ``[sum(2 * hidden_sizes), width]``, expert after expert, each its gate rows then its up rows.
    ``down_proj``: ``[sum(hidden_sizes), width]``, row ``j`` of expert ``e`` its hidden unit ``j``'s output weights
    (a column of the original ``down_proj[e]``). Same call as the Hugging Face experts module:
    ``forward(hidden_states [tokens, width], top_k_index [tokens, k], top_k_weights [tokens, k])``.
    """

    def __init__(self, gate_up_proj: Tensor, down_proj: Tensor, hidden_sizes: Sequence[int], act_fn: nn.Module):
        super().__init__()
        self.hidden_sizes = [int(size) for size in hidden_sizes]
        self.num_experts = len(self.hidden_sizes)
        if gate_up_proj.shape[0] != 2 * sum(self.hidden_sizes) or down_proj.shape[0] != sum(self.hidden_sizes):
            raise ValueError(f"packed expert weights {tuple(gate_up_proj.shape)} / {tuple(down_proj.shape)} do not "
                             f"hold the hidden sizes {self.hidden_sizes}")
        self.gate_up_proj = _parameter(gate_up_proj)
        self.down_proj = _parameter(down_proj)
        self.act_fn = act_fn

    @classmethod
    def from_module(cls, module: nn.Module, hidden_sizes: Sequence[int]) -> "RaggedExperts":
        """From an experts module whose tensors are packed (pruned along their flattened axes) or still 3-D."""
        gate_up, down = cast(Tensor, module.gate_up_proj), cast(Tensor, module.down_proj)
        if gate_up.dim() == 3:
            gate_up = _parameter(gate_up.detach().flatten(0, 1), gate_up.requires_grad)
        if down.dim() == 3:
            down = _parameter(down.detach().movedim(2, 1).flatten(0, 1), down.requires_grad)
        return cls(gate_up, down, hidden_sizes, cast(nn.Module, module.act_fn))

    def forward(self, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor) -> Tensor:
        output = torch.zeros_like(hidden_states)
        gate_ups = self.gate_up_proj.split([2 * size for size in self.hidden_sizes])
        downs = self.down_proj.split(self.hidden_sizes)
        for expert, size in enumerate(self.hidden_sizes):
            if size == 0:  # every unit was pruned: the expert added exactly zero
                continue
            tokens, slot = torch.where(top_k_index == expert)
            if tokens.numel() == 0:
                continue
            gate, up = F.linear(hidden_states[tokens], gate_ups[expert]).chunk(2, dim=-1)
            expert_output = (self.act_fn(gate) * up) @ downs[expert]
            expert_output = expert_output * top_k_weights[tokens, slot, None]
            output.index_add_(0, tokens, expert_output.to(output.dtype))
        return output

    def extra_repr(self) -> str:
        return f"hidden_sizes={self.hidden_sizes}, width={self.gate_up_proj.shape[-1]}"


def _parameter(tensor: Tensor, requires_grad: bool = True) -> nn.Parameter:
    return tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor.detach(), requires_grad)


def check_layout(module: nn.Module) -> None:
    """Raise ``ValueError`` naming what differs when ``module`` is not an experts layout this rule reads."""
    for attribute, expected in _LAYOUT.items():
        if getattr(module, attribute, expected) != expected:
            raise ValueError(f"experts with {attribute}={getattr(module, attribute)!r} are not supported")
    gate = getattr(type(module), "_apply_gate", None)
    if gate is not None and gate.__name__ != "_default_apply_gate":
        raise ValueError("experts with their own gating function (_apply_gate) are not supported")
    if getattr(module, "_is_expert_parallel", False):
        raise ValueError("expert-parallel experts are not supported")


@dataclass(frozen=True)
class _Layout:
    """Where an experts module keeps its hidden units: the pruning axis of ``gate_up_proj`` and of ``down_proj``
    (a dim, or an (expert, row) pair flattened), the dim of each holding the model width, and the hidden units kept
    per expert (in expert order; gate and up rows of ``gate_up_proj`` follow each other per expert)."""

    gate_up_axis: PruningAxis
    down_axis: PruningAxis
    gate_up_width: int
    down_width: int
    hidden_sizes: Tuple[int, ...]


def _fused_layout(ctx, node) -> _Layout:
    """Hugging Face's ``gate_up_proj [E, 2I, H]`` / ``down_proj [E, H, I]``."""
    check_layout(node.call.module)
    gate_up, down = node.value_arg(-1, "gate_up_proj"), node.value_arg(-1, "down_proj")
    experts, rows, width = ctx.shape(gate_up)
    if rows % 2 or tuple(ctx.shape(down)) != (experts, width, rows // 2):
        raise ValueError(f"experts weights {ctx.shape(gate_up)} / {ctx.shape(down)} are not [E, 2I, H] / [E, H, I]")
    return _Layout((0, 1), (0, 2), 2, 1, (rows // 2,) * experts)


def _ragged_layout(ctx, node) -> _Layout:
    """:class:`RaggedExperts`' packed rows (a compressed model traced again: metrics, further pruning)."""
    return _Layout(0, 0, 1, 1, tuple(node.call.module.hidden_sizes))


def _unit_maps(sizes: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Unit of every ``gate_up_proj`` row (expert after expert: its gate rows, then its up rows) and of every
    ``down_proj`` hidden unit; units are numbered expert after expert."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    rows = [offset + np.arange(size) for offset, size in zip(offsets, sizes)]
    gate_up = np.concatenate([np.concatenate([r, r]) for r in rows]) if rows else np.zeros(0, dtype=np.int64)
    return gate_up, np.arange(int(sum(sizes)), dtype=np.int64)


def _propagate(ctx, node, layout: _Layout) -> None:
    x = node.value_arg(0, "hidden_states")
    gate_up, down = node.value_arg(-1, "gate_up_proj"), node.value_arg(-1, "down_proj")
    # One width for input and output: the experts' forward builds its output as ``zeros_like(hidden_states)``.
    width = ctx.axes(x)[-1]
    ctx.spaces.union(width, ctx.axes(gate_up)[layout.gate_up_width])
    ctx.spaces.union(width, ctx.axes(down)[layout.down_width])
    ctx.claim(down, layout.down_width, node)  # the layer's output channels: down_proj's width rows
    for value, axis in ((gate_up, layout.gate_up_axis), (down, layout.down_axis)):
        for dim in axis if isinstance(axis, tuple) else (axis,):
            ctx.pin(ctx.axes(value)[dim], "the router keeps its expert count; expert hidden units are pruned per "
                                          "expert, along the (expert, unit) axis")
    units = ctx.spaces.new(sum(layout.hidden_sizes), f"{node.scope or 'experts'} expert hidden units")
    gate_up_units, down_units = _unit_maps(layout.hidden_sizes)
    ctx.claim_mapped(gate_up, layout.gate_up_axis, units, gate_up_units, owner=True)
    ctx.claim_mapped(down, layout.down_axis, units, down_units, owner=False)
    ctx.set_axes(node.outputs[0], list(ctx.axes(x)))


def experts_propagate(ctx, node) -> None:
    """The index-space rule of the module docstring, for Hugging Face's experts modules."""
    _propagate(ctx, node, _fused_layout(ctx, node))


def ragged_experts_propagate(ctx, node) -> None:
    """The same rule for :class:`RaggedExperts`."""
    _propagate(ctx, node, _ragged_layout(ctx, node))


def experts_zero_rule(ctx, node, out, nonzero) -> frozenset:
    """Pruned width channels must be zero where ``gate_up_proj`` contracts them; the layer's pruned output channels
    are zero when ``down_proj`` trains (its rows are zeroed with them)."""
    x = node.value_arg(0, "hidden_states")
    down = node.value_arg(-1, "down_proj")
    width_units = ctx.units(ctx.axes(x)[-1])
    ctx.pin_units(width_units & nonzero(x), f"pruned channels reach the experts in {node.scope or 'the model'} "
                                            "without being zero there")
    return frozenset() if ctx.graph.values[down].requires_grad else ctx.value_units(out)


def experts_macs(node, graph) -> float:
    """Multiply-accumulates of the routed (token, expert) pairs, each through the mean expert:
    ``tokens * k * (numel(gate_up_proj) + numel(down_proj)) / experts``."""
    weights = [int(np.prod(graph.shape(node.value_arg(-1, name)))) for name in ("gate_up_proj", "down_proj")]
    routed = int(np.prod(graph.shape(node.value_arg(1, "top_k_index"))))
    return routed * sum(weights) / int(node.call.module.num_experts)


def _update(module: nn.Module, node, kept_in: int) -> Dict[str, Any]:
    return {"hidden_dim": int(cast(Tensor, module.gate_up_proj).shape[-1])} if hasattr(module, "hidden_dim") else {}


def _rows_per_expert(module: nn.Module) -> List[int]:
    """``gate_up_proj`` rows of every expert before this pruning."""
    if isinstance(module, RaggedExperts):
        return [2 * size for size in module.hidden_sizes]
    return [2 * int(cast(int, module.intermediate_dim))] * int(cast(int, module.num_experts))


def _hidden_sizes(module: nn.Module, kept: Dict[str, Dict[Any, Tensor]]) -> List[int]:
    """Hidden units kept per expert, from the kept (expert, row) indices of ``gate_up_proj``."""
    rows = _rows_per_expert(module)
    kept_rows = [indices for axis, indices in kept.get("gate_up_proj", {}).items()
                 if axis == (0, 1) or (isinstance(module, RaggedExperts) and axis == 0)]
    if not kept_rows:
        return [count // 2 for count in rows]
    ends = torch.tensor(np.cumsum(rows), dtype=torch.long)
    experts = torch.searchsorted(ends, kept_rows[0], right=True)
    return (torch.bincount(experts, minlength=len(rows)) // 2).tolist()


def restructure(module: nn.Module, kept: Dict[str, Dict[Any, Tensor]]) -> Tuple[nn.Module, Dict[str, Any]]:
    sizes = _hidden_sizes(module, kept)
    return RaggedExperts.from_module(module, sizes), {"hidden_sizes": sizes}


def restore(module: nn.Module, description: Dict[str, Any]) -> nn.Module:
    return RaggedExperts.from_module(module, description["hidden_sizes"])


def register_experts(class_path: str) -> None:
    """Read a Hugging Face experts class (by path, e.g. ``"transformers.models.mixtral.modeling_mixtral.
    MixtralExperts"``) with this module's rule; its layout is checked when a model is traced, and a module that
    differs is reported and left unpruned."""
    register_module(class_path, experts_propagate, zero_rule=experts_zero_rule, macs=experts_macs, update=_update,
                    input_channel_axis=-1, restructure=restructure, restore=restore)


for _class_path in EXPERTS_CLASSES:
    register_experts(_class_path)
register_module(RaggedExperts, ragged_experts_propagate, zero_rule=experts_zero_rule, macs=experts_macs,
                update=_update, input_channel_axis=-1, restructure=restructure, restore=restore)
