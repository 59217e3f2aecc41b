"""Tensor transforms: how a parameter is viewed as ``[num_groups, -1]`` rows, one row per prunable unit.

Kept for compatibility with the reference API (SPEC section 6.8). Inside this library the optimizers and
the subnet constructor use the per-index unit maps of :class:`~only_train_once.graph.node_group.GroupMember`,
which cover every case these transforms describe (and transposed or fused layouts they do not).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Iterable, List, Sequence, Union

import torch


class TensorTransform(IntEnum):
    NO_UPDATE = 0
    NO_PRUNE = 1
    BASIC = 2
    ACCESSORY = 3
    MULTIHEAD_HEADDIM = 4
    MULTIHEAD_NUMHEAD = 5
    REVERSE_MULTIHEAD_HEADDIM = 6
    REVERSE_MULTIHEAD_NUMHEAD = 7
    AUXILIARY = 8
    TRANSPOSE = 9
    MULTIHEAD_NUMHEAD_SPREAD = 10
    REVERSE_MULTIHEAD_NUMHEAD_SPREAD = 11
    TOTAL = 12


SPREAD_TRANSFORM_MAP = {TensorTransform.MULTIHEAD_NUMHEAD_SPREAD: TensorTransform.MULTIHEAD_NUMHEAD}
_ROW_BLOCKS = (TensorTransform.BASIC, TensorTransform.ACCESSORY, TensorTransform.MULTIHEAD_NUMHEAD,
               TensorTransform.MULTIHEAD_NUMHEAD_SPREAD)


def is_spread_transformation(transform) -> bool:
    return transform in (TensorTransform.MULTIHEAD_NUMHEAD_SPREAD, TensorTransform.REVERSE_MULTIHEAD_NUMHEAD_SPREAD)


def tensor_transformation(tensor: torch.Tensor, transform, num_groups: int = 1, num_heads: int = 1,
                          head_dim: int = 1) -> torch.Tensor:
    """View ``tensor`` as ``[num_groups, -1]`` rows according to ``transform``."""
    if transform in (TensorTransform.NO_UPDATE, TensorTransform.NO_PRUNE):
        return tensor
    if transform in _ROW_BLOCKS:
        return tensor.reshape(num_groups, -1)
    if transform == TensorTransform.MULTIHEAD_HEADDIM:
        return tensor.reshape(num_heads, num_groups, -1).transpose(0, 1).reshape(num_groups, -1)
    if transform == TensorTransform.TRANSPOSE:
        if tensor.dim() == 1:
            return tensor.reshape(num_groups, -1)
        if tensor.dim() == 2:
            return tensor.t().reshape(num_groups, -1)
        if tensor.dim() == 4:
            return tensor.transpose(0, 1).reshape(num_groups, -1)
        raise ValueError(f"TRANSPOSE supports 1-, 2- and 4-D tensors, got {tensor.dim()}-D")
    if transform == TensorTransform.REVERSE_MULTIHEAD_HEADDIM:
        return tensor.reshape(num_groups, num_heads, -1).transpose(0, 1).reshape(num_heads * num_groups, -1)
    if transform == TensorTransform.REVERSE_MULTIHEAD_NUMHEAD:
        return tensor.reshape(num_groups * head_dim, -1) if tensor.dim() > 1 else tensor.reshape(-1)
    raise ValueError(f"unsupported tensor transform {transform!r}")


def tensor_transformation_param_group(tensor: torch.Tensor, transform, param_group: dict) -> torch.Tensor:
    """:func:`tensor_transformation` with sizes read from a param group (lists are applied left to right)."""
    if isinstance(transform, list):
        view = tensor
        for entry, config in transform:
            if entry == TensorTransform.MULTIHEAD_HEADDIM:
                view = tensor_transformation(view, entry, config["head_dim"], config["num_heads"])
            else:
                view = tensor_transformation(view, entry, config["num_heads"])
        return view
    if transform == TensorTransform.MULTIHEAD_HEADDIM:
        return tensor_transformation(tensor, transform, param_group["num_groups"], param_group["num_heads"])
    return tensor_transformation(tensor, transform, param_group["num_groups"])


def index_transformation(indices: Union[Sequence[int], torch.Tensor], transform, num_heads: int = 1,
                         head_dim: int = 1) -> List[int]:
    """Map unit indices to the dim-0 (or transposed-dim) indices they cover."""
    indices = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if transform == TensorTransform.MULTIHEAD_HEADDIM:
        return [i + head_dim * h for h in range(num_heads) for i in indices]
    if transform in (TensorTransform.MULTIHEAD_NUMHEAD, TensorTransform.MULTIHEAD_NUMHEAD_SPREAD):
        return [i * head_dim + r for i in indices for r in range(head_dim)]
    return indices


def index_transformation_param_group(indices: Iterable[int], transform, param_group: dict) -> List[int]:
    if isinstance(transform, list):
        return list(indices)
    return index_transformation(list(indices), transform, param_group.get("num_heads", 1),
                                param_group.get("head_dim", 1))
