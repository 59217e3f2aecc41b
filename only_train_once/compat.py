"""The reference-compatibility surface, in one place: names kept only so scripts written for the reference run.

The core does not use anything defined here. Each name is re-exported at the path the reference used (SPEC section
"Module layout"), so ``from only_train_once.transform import tensor_transformation``,
``from only_train_once.dependency_graph.pruning_dependency import post_process_chunk_node``,
``node.is_conv()`` and ``oto.h2spg()`` keep working (``only_train_once.graph.NodeGroupComposedOp`` is an alias of
``NodeGroup`` defined there). This module imports nothing from the library at import time, so any module may use it.

- :class:`TensorTransform` views (``tensor_transformation`` & co.): how the reference reshaped a parameter into
  ``[num_groups, -1]`` rows. This library's optimizers and subnet constructor use the per-index unit maps of
  :class:`~only_train_once.graph.node_group.GroupMember`, which cover every case these describe (and transposed or
  fused layouts they do not).
- :class:`ReferenceNodePredicates`, :class:`ReferenceGraphMethods`, :class:`ReferenceOTOMethods`: methods the
  reference's classes had, mixed into ``Node``, ``Graph`` and ``OTO``.
- :class:`ReferenceNodeGroupNames`, :class:`ReferenceOptimizerNames`: the reference's misleading attribute names
  (``num_groups``, ``auxilary_node_groups``, ``pruned_group_idxes``) as aliases, mixed into ``NodeGroup`` and the
  pruning optimizers.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch


class TensorTransform(IntEnum):
    """How a member parameter is laid out against its group's units: the reference's ``p_transform`` label, kept
    in the param-group schema (``GroupMember.transform``); the optimizers use the per-index unit maps instead."""

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


def post_process_chunk_node(graph):
    """The reference's chunk post-processing: chunk/split outputs are handled by the analysis itself.

    Rebuilds the groups (so edits to the graph since the last build are taken into account) and returns them.
    """
    from .dependency_graph import build_pruning_dependency_graph

    return build_pruning_dependency_graph(graph)


class ReferenceNodePredicates:
    """The reference's ``Node`` predicates, read from the node's ``op_name`` and ``cfg_params``."""

    op_name: str
    cfg_params: Dict[str, Any]
    quant_param_names: List[str]

    def is_conv(self) -> bool:
        return self.op_name == "conv"

    def is_convtranspose(self) -> bool:
        return self.op_name == "convtranspose"

    def is_linear(self) -> bool:
        return self.op_name == "linear"

    def is_qlinear(self) -> bool:
        return self.op_name == "linear" and bool(self.quant_param_names)

    def is_concat(self, axis: Optional[int] = None) -> bool:
        return self.op_name == "concat" and (axis is None or self.cfg_params.get("axis") == axis)

    def is_dummy(self) -> bool:
        return False


class ReferenceGraphMethods:
    """The reference's ``Graph`` look-ups."""

    nodes: Dict[str, Any]
    if TYPE_CHECKING:
        @property
        def node_groups(self) -> Mapping[str, Any]: ...

    def visited_dict(self) -> Dict[str, bool]:
        return {node_id: False for node_id in self.nodes}

    def get_nodes_by_param_name(self, param_name: str) -> List[Any]:
        return [n for n in self.nodes.values() if param_name in n.all_param_names]

    def get_node_groups_by_param_name(self, param_name: str) -> List[Any]:
        return [g for g in self.node_groups.values() if param_name in g.param_names]


class ReferenceNodeGroupNames:
    """The reference's ``NodeGroup`` attribute names that mislead, as aliases of the library's: ``num_groups`` is
    the number of prunable *units* (channels, heads...), not of groups; ``auxilary_node_groups`` is misspelt."""

    auxiliary_node_groups: List[Any]
    if TYPE_CHECKING:
        @property
        def num_units(self) -> int: ...

    @property
    def num_groups(self) -> int:
        return self.num_units

    @property
    def auxilary_node_groups(self) -> List[Any]:
        return self.auxiliary_node_groups


class ReferenceOptimizerNames:
    """The reference's optimizer attribute name that misleads: ``pruned_group_idxes`` holds global *unit* ids."""

    if TYPE_CHECKING:
        @property
        def pruned_unit_ids(self) -> List[int]: ...

    @property
    def pruned_group_idxes(self) -> List[int]:
        return self.pruned_unit_ids


class ReferenceOTOMethods:
    """The reference's ``OTO`` entry points this library does not provide."""

    def h2spg(self, **kwargs):
        raise NotImplementedError("H2SPG is not part of this library; use hesso() or geta()")


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
