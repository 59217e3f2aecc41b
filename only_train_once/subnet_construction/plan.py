"""The pruning plan: which indices of which tensor axes survive, derived from the zeroed units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import numpy as np
import torch

from ..dependency_graph.param_groups import zero_units_by_group
from ..graph.pruning_axis import PruningAxis


@dataclass
class PruningPlan:
    """``keep[tensor name][axis]`` = sorted indices kept along that axis (only axes that shrink are listed). An
    axis may be a pair of dimensions read as one flattened axis (:mod:`~only_train_once.graph.pruning_axis`).

    ``pruned_units`` maps a unit group's key to a boolean mask over its units (True: removed).
    """

    keep: Dict[str, Dict[PruningAxis, torch.Tensor]] = field(default_factory=dict)
    pruned_units: Dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not self.keep


def pruned_unit_masks(graph, tensors: Optional[Dict[str, torch.Tensor]] = None) -> Dict[int, np.ndarray]:
    """Boolean mask of zeroed units per prunable group; at least one unit of each group is kept.

    ``tensors`` (name -> tensor): read the zeros from another copy of the traced model.
    """
    masks: Dict[int, np.ndarray] = {}
    for key, zero_units in zero_units_by_group(graph, tensors).items():
        size = graph.analysis.unit_space(key).size
        mask = np.zeros(size, dtype=bool)
        mask[zero_units] = True
        if mask.all():
            mask[0] = False
        if mask.any():
            masks[key] = mask
    return masks


class MaskLookup:
    """The removed-unit masks of many unit groups (``{group key: boolean mask over its units}``), flattened once so
    that finding which elements of a space belong to removed units is one vectorised lookup."""

    def __init__(self, masks: Dict[int, np.ndarray]):
        self.keys = np.array(sorted(masks), dtype=np.int64)
        sizes = np.array([masks[key].size for key in self.keys], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.flat = np.concatenate([masks[key] for key in self.keys]) if masks else np.zeros(0, dtype=bool)

    def removed(self, uids: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """For elements owned by unit ``indices[i]`` of group ``uids[i]``: whether that unit is removed."""
        removed = np.zeros(uids.shape, dtype=bool)
        if not self.keys.size or not uids.size:
            return removed
        position = np.minimum(np.searchsorted(self.keys, uids), self.keys.size - 1)
        known = self.keys[position] == uids
        removed[known] = self.flat[self.offsets[position[known]] + indices[known]]
        return removed


def removed_mask(analysis, space, masks: Union[Dict[int, np.ndarray], MaskLookup]) -> np.ndarray:
    """Which elements of ``space`` belong to pruned units."""
    lookup = masks if isinstance(masks, MaskLookup) else MaskLookup(masks)
    return lookup.removed(*analysis.owners(space))


def build_plan(graph, tensors: Optional[Dict[str, torch.Tensor]] = None) -> PruningPlan:
    """Kept indices for every parameter and buffer axis that loses elements.

    The zeroed units are read from the traced model, or from ``tensors`` (name -> tensor of a copy of it).
    """
    return plan_for_masks(graph, pruned_unit_masks(graph, tensors))


def plan_for_masks(graph, masks: Dict[int, np.ndarray]) -> PruningPlan:
    """Kept indices for every parameter and buffer axis that loses elements when the units of ``masks`` (a boolean
    mask of removed units per unit group key) are removed (read from the graph's unit map)."""
    plan = PruningPlan(pruned_units=masks)
    if not masks:
        return plan
    lookup = MaskLookup(masks)
    for name, axis, owners in graph.unit_map:
        removed = lookup.removed(*owners)
        if removed.any():
            plan.keep.setdefault(name, {})[axis] = torch.from_numpy(np.flatnonzero(~removed).astype(np.int64))
    return plan


def _keep(plan: PruningPlan, name: str, axis: PruningAxis, removed: np.ndarray) -> None:
    if removed.any():
        plan.keep.setdefault(name, {})[axis] = torch.from_numpy(np.flatnonzero(~removed).astype(np.int64))


def kept_size(graph, masks: Union[Dict[int, np.ndarray], MaskLookup], value_id: str, axis: int) -> int:
    """Size of ``axis`` of traced tensor ``value_id`` after pruning."""
    space = graph.analysis.axes(value_id)[axis]
    return int(space.size - removed_mask(graph.analysis, space, masks).sum())

