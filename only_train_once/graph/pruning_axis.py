"""The axis a group member is pruned along: one dimension, or two dimensions read as one flattened axis.

Most parameters are pruned along one dimension (a weight's rows). The experts of a sparse mixture-of-experts layer
keep all their weights in one 3-D tensor (``gate_up_proj``: ``[experts, 2 * hidden units, model width]``); a unit
there is *one expert's* hidden unit, so the pruned indices are pairs (expert, row). Reading dims ``(0, 1)`` as one
flattened axis of ``experts * rows`` indices turns every pair into one index, and every operation the library does
on a set of units (zero, select, copy, add along the axis) stays one ``index_*`` call on a view of the tensor.

``axis`` is therefore an ``int`` or a pair ``(outer, inner)`` of dimensions; the flattened index is
``outer_index * size(inner) + inner_index``. :func:`along` gives a view (writes reach the tensor), which needs the
two dimensions adjacent (``inner == outer + 1``) and viewable; :func:`flattened` also reads non-adjacent pairs
(a copy), which the subnet constructor needs for the experts' ``down_proj`` ``[experts, width, hidden units]``.
"""

from __future__ import annotations

from typing import Tuple, Union

from torch import Tensor

PruningAxis = Union[int, Tuple[int, int]]


def is_flattened(axis: PruningAxis) -> bool:
    return isinstance(axis, tuple)


def along(tensor: Tensor, axis: PruningAxis) -> Tuple[Tensor, int]:
    """``(view, dim)``: ``tensor`` with its pruning axis as dimension ``dim`` of ``view``, sharing storage.

    For an ``int`` axis this is ``(tensor, axis)``. For adjacent dimensions ``(a, a + 1)`` it is
    ``tensor.view(...)`` with the two merged; a tensor whose layout cannot be viewed so raises (a silent copy would
    lose in-place writes)."""
    if isinstance(axis, int):
        return tensor, axis
    outer, inner = axis
    if inner != outer + 1:
        raise ValueError(f"a flattened pruning axis written in place needs adjacent dims, got {axis}")
    shape = tuple(tensor.shape)
    return tensor.view(shape[:outer] + (shape[outer] * shape[inner],) + shape[inner + 1:]), outer


def flattened(tensor: Tensor, axis: PruningAxis) -> Tuple[Tensor, int]:
    """Like :func:`along` for reading: a non-adjacent pair ``(a, b)`` moves ``b`` next to ``a`` first (a copy)."""
    if isinstance(axis, int):
        return tensor, axis
    outer, inner = axis
    if inner != outer + 1:
        tensor = tensor.movedim(inner, outer + 1)
    return tensor.flatten(outer, outer + 1), outer


def length(shape, axis: PruningAxis) -> int:
    """Number of indices along ``axis`` of a tensor of ``shape``."""
    if isinstance(axis, int):
        return int(shape[axis])
    return int(shape[axis[0]]) * int(shape[axis[1]])
