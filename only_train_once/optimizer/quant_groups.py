"""Which parameters of a param group are quantizer parameters, and of which layer: decided once, by name.

A quantized layer registers ``d_quant_wt, q_m_wt, [t_quant_wt], [d_quant_act, q_m_act, [t_quant_act]]`` next to
its ``weight`` and ``bias`` (see :mod:`only_train_once.quantization.quant_layers`), and OTO puts them all in the
param group of the weight. :func:`classify_group` splits a group's parameter indices by role from the exact
name suffixes (the layer is the name prefix, so ``features.1`` never captures ``features.10``), and
:class:`QuantLayerTable` applies bit-width operations to many layers at once with a handful of kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, cast

import torch
from torch import Tensor

from ..quantization.quant_layers import QUANT_PARAMETER_NAMES
from ..quantization.quantizer import MIN_MAGNITUDE, bit_width, step_size_for_bits

WEIGHT_QUANT_NAMES = ("d_quant_wt", "q_m_wt", "t_quant_wt")
ACT_QUANT_NAMES = ("d_quant_act", "q_m_act", "t_quant_act")


@dataclass
class QuantLayer:
    """Indices (into its group's ``params``) of one quantized layer's parameters; None where absent."""

    name: str
    group_index: int
    weight: Optional[int] = None
    bias: Optional[int] = None
    roles: Dict[str, int] = field(default_factory=dict)

    def index(self, role: str) -> Optional[int]:
        return self.roles.get(role)

    @property
    def has_weight_quantizer(self) -> bool:
        return "d_quant_wt" in self.roles and "q_m_wt" in self.roles

    @property
    def has_act_quantizer(self) -> bool:
        return "d_quant_act" in self.roles and "q_m_act" in self.roles


@dataclass
class QuantGroup:
    """Parameter indices of one param group by role.

    ``weight_quant``: ``d/q_m/t`` of weight quantizers; ``act_quant``: those of activation quantizers;
    ``range_exponent_wt``: ``q_m_wt`` and ``t_quant_wt`` (what the joint step trains); ``plain``: every other
    parameter (weights, biases, norms); ``layers``: the quantized layers, in order of first appearance;
    ``weight_steps``: the ``d_quant_wt`` parameters.
    """

    layers: List[QuantLayer]
    weight_quant: List[int]
    act_quant: List[int]
    range_exponent_wt: List[int]
    plain: List[int]
    weight_steps: List[int] = field(default_factory=list)

    @property
    def quant(self) -> List[int]:
        return sorted(self.weight_quant + self.act_quant)


def classify_group(group: dict, group_index: int) -> QuantGroup:
    """Split ``group``'s parameters by role from their names (``p_names``)."""
    names = group["p_names"]
    by_name = {name: j for j, name in enumerate(names)}
    layers: Dict[str, QuantLayer] = {}
    weight_quant: List[int] = []
    act_quant: List[int] = []
    range_exponent: List[int] = []
    for j, name in enumerate(names):
        prefix, _, leaf = name.rpartition(".")
        if leaf not in QUANT_PARAMETER_NAMES:
            continue
        layer = layers.setdefault(prefix, QuantLayer(prefix, group_index))
        layer.roles[leaf] = j
        (weight_quant if leaf in WEIGHT_QUANT_NAMES else act_quant).append(j)
        if leaf in ("q_m_wt", "t_quant_wt"):
            range_exponent.append(j)
    for prefix, layer in layers.items():
        layer.weight = by_name.get(f"{prefix}.weight" if prefix else "weight")
        layer.bias = by_name.get(f"{prefix}.bias" if prefix else "bias")
    quant = set(weight_quant) | set(act_quant)
    plain = [j for j in range(len(names)) if j not in quant]
    weight_steps = [j for j in weight_quant if names[j].rpartition(".")[2] == "d_quant_wt"]
    return QuantGroup(list(layers.values()), weight_quant, act_quant, range_exponent, plain, weight_steps)


def unit_step(bits: float) -> float:
    """Step size per unit of range: ``d = q_m^t * unit_step(bits)`` gives ``bits`` bits (SPEC 4.4)."""
    return float(step_size_for_bits(bits, 1.0))


class QuantLayerTable:
    """The weight or activation quantizers (``kind`` ``"wt"`` / ``"act"``) of a list of layers, as tensors.

    ``steps``, ``ranges``, ``exponents`` are the layers' ``d``, ``q_m`` and ``t`` parameters (``t`` a constant 1
    for linear quantizers), in layer order; the methods read or write all of them with one kernel each.
    """

    def __init__(self, groups: Sequence[dict], layers: Sequence[QuantLayer], kind: str):
        self.layers = [l for l in layers if (l.has_weight_quantizer if kind == "wt" else l.has_act_quantizer)]
        self.steps: List[Tensor] = []
        self.ranges: List[Tensor] = []
        self.exponents: List[Tensor] = []
        for layer in self.layers:
            params = groups[layer.group_index]["params"]
            step = params[layer.index(f"d_quant_{kind}")]
            self.steps.append(step)
            self.ranges.append(params[layer.index(f"q_m_{kind}")])
            t_index = layer.index(f"t_quant_{kind}")
            self.exponents.append(params[t_index] if t_index is not None else torch.ones_like(step))
        self.position = {id(layer): k for k, layer in enumerate(self.layers)}

    def __len__(self) -> int:
        return len(self.layers)

    def select(self, layers: Sequence[QuantLayer]) -> List[int]:
        """Positions in this table of those of ``layers`` that have this quantizer."""
        return [self.position[id(l)] for l in layers if id(l) in self.position]

    def range_powers(self, rows: Sequence[int]) -> Tensor:
        """``max(|q_m|, MIN_MAGNITUDE) ^ t`` of the selected layers (detached)."""
        ranges = torch.cat([self.ranges[k].detach() for k in rows]).abs().clamp_min(MIN_MAGNITUDE)
        return ranges.pow(torch.cat([self.exponents[k].detach() for k in rows]))

    def bit_widths(self, rows: Sequence[int]) -> Tensor:
        """Unrounded bit widths of the selected layers."""
        steps = torch.cat([self.steps[k].detach() for k in rows])
        ranges = torch.cat([self.ranges[k].detach() for k in rows])
        exponents = torch.cat([self.exponents[k].detach() for k in rows])
        return cast(Tensor, bit_width(steps, ranges, exponents))  # tensors in, a tensor out

    @torch.no_grad()
    def clamp_bits(self, rows: Sequence[int], min_bits: float, max_bits: float) -> None:
        """Project each selected ``d`` into ``[d(max_bits), d(min_bits)]`` for its own ``q_m`` and ``t``."""
        if not rows:
            return
        powers = self.range_powers(rows)
        steps = torch.cat([self.steps[k] for k in rows])
        clamped = torch.minimum(torch.maximum(steps, powers * unit_step(max_bits)), powers * unit_step(min_bits))
        torch._foreach_copy_([self.steps[k] for k in rows], list(clamped.split(1)))

    @torch.no_grad()
    def set_bits(self, rows: Sequence[int], unit_steps: Tensor) -> None:
        """Set each selected ``d`` to ``q_m^t * unit_steps[k]``: a fixed bit width with the current range."""
        if not rows:
            return
        values = self.range_powers(rows) * unit_steps.to(self.steps[rows[0]].device)
        torch._foreach_copy_([self.steps[k] for k in rows], list(values.split(1)))
