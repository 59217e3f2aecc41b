"""Where every prunable unit lives in the parameters: index maps built once per optimizer.

The param groups carry, for each parameter, the pruned axis (``p_axes``) and the global unit id of every index
along it (``p_unit_index``, -1 where no unit owns it). :class:`UnitLayout` turns them into :class:`UnitSlices`
records, so that every operation on a set of units -- zero it, scale it, gather its rows for an importance score
-- is an ``index_select`` / ``index_copy_`` / ``index_fill_`` / ``index_add_`` along that axis, whatever the layout
(output channels, transposed weights, attention heads, fused qkv, GroupNorm groups, concat-dependent BatchNorms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..graph.pruning_axis import PruningAxis, along


@dataclass
class UnitSlices:
    """The slices of one parameter that belong to prunable units.

    ``unit_index[k]`` is the global unit id of index ``k`` along ``axis`` (-1: none); ``owned`` is
    ``unit_index >= 0``; ``own_group`` tells whether the units are those of the parameter's own group (False
    for auxiliary groups, whose slices belong to the units of the groups they depend on).

    ``axis`` is a dimension of :attr:`target`, the tensor every in-place operation on units writes: the parameter
    itself, or, for a parameter pruned along two dimensions read as one (a mixture of experts' ``[experts, rows,
    width]`` tensor, see :mod:`~only_train_once.graph.pruning_axis`), a view of it with those dimensions merged.
    Tensors shaped like the parameter (gradients, their variants) are brought to that layout by :meth:`along`.
    """

    group_index: int
    param_index: int
    name: str
    param: Tensor
    axis: int
    unit_index: Tensor
    owned: Tensor
    own_group: bool
    target: Tensor
    pruning_axis: PruningAxis

    @classmethod
    def of(cls, group_index: int, param_index: int, name: str, param: Tensor, pruning_axis: PruningAxis,
           unit_index: Tensor, own_group: bool) -> "UnitSlices":
        target, axis = along(param, pruning_axis)
        return cls(group_index, param_index, name, param, axis, unit_index, unit_index >= 0, own_group, target,
                   pruning_axis)

    def along(self, tensor: Tensor) -> Tensor:
        """``tensor`` (shaped like the parameter) in the layout of :attr:`target`."""
        return along(tensor, self.pruning_axis)[0]

    @property
    def length(self) -> int:
        return int(self.unit_index.numel())

    def positions(self, unit_mask: Tensor) -> Tensor:
        """Indices along ``axis`` whose unit is set in the boolean ``unit_mask`` (over global ids, same device)."""
        hit = unit_mask[self.unit_index.clamp_min(0)] & self.owned
        return torch.nonzero(hit).flatten()

    def rows(self, tensor: Tensor) -> Tensor:
        """``tensor`` (shaped like the parameter) as ``[length, -1]``: one row per index along ``axis``."""
        moved = self.along(tensor).movedim(self.axis, 0)
        # flatten, not reshape(length, -1): a shard of a sharded parameter (:mod:`.fsdp`) may hold no rows
        return moved.flatten(1) if moved.dim() > 1 else moved.unsqueeze(1)


class UnitLayout:
    """Index maps of the units over every parameter of an optimizer's param groups.

    ``num_units`` is the size of the global id space; ``unit_group[u]`` is the index (into ``param_groups``) of
    the group that owns unit ``u``; ``group_ranges[i] = (start, count)`` for every unit-owning group ``i``.
    """

    def __init__(self, param_groups: Sequence[dict]):
        self.group_ranges: Dict[int, tuple] = {}
        for index, group in enumerate(param_groups):
            if group.get("is_prunable") and not group.get("is_auxiliary") and "p_unit_index" in group \
                    and group.get("global_start_idx") is not None:
                self.group_ranges[index] = (int(group["global_start_idx"]), int(group["num_groups"]))
        self.slices: List[UnitSlices] = []
        highest = max((start + count for start, count in self.group_ranges.values()), default=0)
        for index, group in enumerate(param_groups):
            axes = group.get("p_axes") or [None] * len(group["params"])
            maps = group.get("p_unit_index") or [None] * len(group["params"])
            for j, (param, axis, unit_index) in enumerate(zip(group["params"], axes, maps)):
                if axis is None or unit_index is None:
                    continue
                unit_index = unit_index.to(device=param.device, dtype=torch.long)
                if not bool((unit_index >= 0).any()):
                    continue
                highest = max(highest, int(unit_index.max()) + 1)
                axis = tuple(int(a) for a in axis) if isinstance(axis, tuple) else int(axis)
                self.slices.append(UnitSlices.of(index, j, group["p_names"][j], param, axis, unit_index,
                                                 not group.get("is_auxiliary", False)))
        self.num_units = highest
        self.unit_group = torch.full((highest,), -1, dtype=torch.long)
        for index, (start, count) in self.group_ranges.items():
            self.unit_group[start:start + count] = index
        self._unit_elements: Optional[Tensor] = None

    def own_slices(self, groups: Optional[set] = None) -> List[UnitSlices]:
        """Slices of unit-owning groups (those in ``groups`` if given): the ones importance scores read."""
        return [s for s in self.slices if s.own_group and s.group_index in self.group_ranges
                and (groups is None or s.group_index in groups)]

    def reduce_rows(self, slices: Sequence[UnitSlices], values: Sequence[Tensor]) -> Tensor:
        """``out[u] = sum over slices and rows of unit u of values`` (float64, on CPU).

        ``values[k]`` is a per-row vector (length ``slices[k].length``).
        """
        out = torch.zeros(self.num_units, dtype=torch.float64)
        for unit_slices, value in zip(slices, values):
            owned = unit_slices.owned
            out.index_add_(0, unit_slices.unit_index[owned].cpu(), value[owned].to(torch.float64).cpu())
        return out

    def sum_over_ranks(self, tensor: Tensor) -> Tensor:
        """Per-unit sums over every process that holds a part of the parameters: ``tensor`` itself here, where one
        process holds them whole; summed across the shards by :class:`.fsdp.ShardedUnitLayout`. Callers stack
        their vectors first, so that a sharded step costs one collective, not one per statistic or group."""
        return tensor

    def unit_elements(self) -> Tensor:
        """Number of parameter elements per unit over its own group's parameters (float64, static)."""
        if self._unit_elements is None:
            slices = self.own_slices()
            counts = [torch.full((s.length,), s.param.numel() // max(s.length, 1), dtype=torch.float64)
                      for s in slices]
            self._unit_elements = self.sum_over_ranks(self.reduce_rows(slices, counts))
        return self._unit_elements

    def mask(self, unit_ids: Sequence[int], device: Optional[torch.device] = None) -> Tensor:
        """Boolean mask over the global id space with ``unit_ids`` set."""
        mask = torch.zeros(self.num_units, dtype=torch.bool)
        if len(unit_ids):
            mask[torch.as_tensor(list(unit_ids), dtype=torch.long)] = True
        return mask if device is None else mask.to(device)

    def positions(self, unit_ids: Sequence[int]) -> List[Tensor]:
        """For every slice record, the indices along its axis owned by ``unit_ids`` (empty tensors where none)."""
        masks: Dict[torch.device, Tensor] = {}
        result = []
        for unit_slices in self.slices:
            device = unit_slices.unit_index.device
            if device not in masks:
                masks[device] = self.mask(unit_ids, device)
            result.append(unit_slices.positions(masks[device]))
        return result
