"""Per-unit sums that every importance criterion is a function of, computed in one pass over the parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..unit_layout import UnitLayout, UnitSlices


@dataclass
class UnitStatistics:
    """Vectors over the global unit ids (float64, CPU), summed over each unit's slices in its own group.

    ``param_sq_norm``: ``sum_p ||X_p,i||^2``; ``num_elements``: number of parameter elements of unit ``i``;
    ``graded_param_sq_norm``: ``||X_i||^2`` over the parameters that have a gradient variant;
    ``grad_sq_norm``: ``||G_i||^2``; ``param_grad_dot``: ``sum_p <X_p,i, G_p,i>`` (``G`` the gradient variant).
    """

    param_sq_norm: Tensor
    num_elements: Tensor
    graded_param_sq_norm: Tensor
    grad_sq_norm: Tensor
    param_grad_dot: Tensor


@torch.no_grad()
def unit_statistics(layout: UnitLayout, slices: Sequence[UnitSlices],
                    grads: Sequence[Optional[Tensor]]) -> UnitStatistics:
    """The :class:`UnitStatistics` of ``slices`` (``grads[k]``: gradient variant of ``slices[k]``, or None)."""
    param_sq, graded, grad_sq, dots = [], [], [], []
    graded_slices = []
    for unit_slices, grad in zip(slices, grads):
        # Row sums in the parameter's dtype (one pass each, no float64 copy of the tensors); the per-unit
        # accumulation over parameters is float64.
        rows = unit_slices.rows(unit_slices.param.detach())
        param_sq.append(torch.linalg.vecdot(rows, rows, dim=1))
        if grad is None:
            continue
        grad_rows = unit_slices.rows(grad.detach())
        graded_slices.append(unit_slices)
        graded.append(param_sq[-1])
        grad_sq.append(torch.linalg.vecdot(grad_rows, grad_rows, dim=1))
        dots.append(torch.linalg.vecdot(rows, grad_rows, dim=1))
    sums = layout.sum_over_ranks(torch.stack([
        layout.reduce_rows(slices, param_sq),
        layout.reduce_rows(graded_slices, graded),
        layout.reduce_rows(graded_slices, grad_sq),
        layout.reduce_rows(graded_slices, dots),
    ]))
    return UnitStatistics(param_sq_norm=sums[0], num_elements=layout.unit_elements(), graded_param_sq_norm=sums[1],
                          grad_sq_norm=sums[2], param_grad_dot=sums[3])
