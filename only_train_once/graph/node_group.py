"""Node groups: pruning zero-invariant groups (PZIGs) of the traced graph.

A node group owns a set of parameter slices that are pruned together. For a *prunable* group with
``num_units = G`` there are ``G`` units (channels, heads, GroupNorm groups): unit ``i`` is every element,
along each member parameter's pruning axis, that :class:`GroupMember.unit_index` maps to ``i``. Zeroing
one unit's slices leaves the rest of the network's output unchanged; removing them (and the matching
input slices of consumers) yields a smaller network computing the same function.

An *auxiliary* group holds parameters that sit after a channel concatenation (a BatchNorm after
``torch.cat``): its slices belong to the units of the groups whose channels were concatenated
(its dependents), and are pruned with them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from ..compat import ReferenceNodeGroupNames, TensorTransform
from .pruning_axis import PruningAxis
from .unit_map import Owners, UnitMap, global_unit_ids



@dataclass
class GroupMember:
    """One parameter (or buffer) of a node group.

    ``axis`` is the dimension pruned with the group (None: not pruned, e.g. quantizer scalars), or a pair of
    adjacent dimensions read as one flattened axis (a mixture of experts' tensors, see
    :mod:`~only_train_once.graph.pruning_axis`); ``owners`` is the unit map's entry for that axis
    (:mod:`.unit_map`): the key of the unit group owning each index (-1: none) and the unit's index inside that
    group.
    """

    name: str
    tensor: torch.Tensor
    axis: Optional[PruningAxis]
    owners: Optional[Owners]
    is_parameter: bool
    transform: TensorTransform
    op_name: str
    node_id: str

    @property
    def trainable(self) -> bool:
        return self.is_parameter and bool(self.tensor.requires_grad)


class NodeGroup(ReferenceNodeGroupNames):
    """A pruning zero-invariant group of nodes (see module docstring). (``num_groups`` and
    ``auxilary_node_groups`` are the reference's names of ``num_units`` and ``auxiliary_node_groups``.)"""

    def __init__(self, key: int, num_units: int, is_auxiliary: bool = False):
        self.key = key
        self._id: Optional[str] = None
        self._nodes: "OrderedDict[str, Any]" = OrderedDict()
        self.members: List[GroupMember] = []
        self._num_units = int(num_units)
        self.is_auxiliary = is_auxiliary
        self.is_unit_group = not is_auxiliary
        self.is_trainable = True
        self.unprunable_reasons: List[str] = []
        self.dependent_node_groups: List["NodeGroup"] = []
        #: ``(auxiliary group, offset of this group's units in its concatenated channels)``
        self.auxiliary_node_groups: List[Tuple["NodeGroup", int]] = []
        self.extra_param_group_attrs: Dict[str, object] = {}
        self.label: Optional[str] = None  # id of a group without nodes
        self.pruning_redundant_idxes: List[int] = []
        self.pruning_important_idxes: List[int] = []

    # -- identity -----------------------------------------------------------------------------------
    @property
    def nodes(self) -> "OrderedDict[str, Any]":
        """Node id -> node, in execution order. Add nodes with :meth:`add_node` (or assign a new mapping), which
        keeps :attr:`id` current."""
        return self._nodes

    @nodes.setter
    def nodes(self, nodes: "OrderedDict[str, Any]") -> None:
        self._nodes = nodes
        self._id = None

    @property
    def id(self) -> str:
        # Built once per change of the nodes: joining thousands of node ids on every read made the build quadratic.
        if self._id is None:
            self._id = "_".join(self._nodes) if self._nodes else None
        return self._id or self.label or f"group-{self.key}"

    @property
    def num_units(self) -> int:
        """The number of prunable units (channels, heads, GroupNorm groups) of the group."""
        return self._num_units

    @property
    def param_names(self) -> List[str]:
        return [m.name for m in self.members]

    @property
    def output_nodes(self) -> List[Any]:
        return [n for n in self.nodes.values() if n.op_kind is not None and n.op_kind.is_stem]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        kind = "aux" if self.is_auxiliary else ("prunable" if self.is_prunable else "unprunable")
        return f"NodeGroup({self.id}, {self.num_units} units, {kind}, params={self.param_names})"

    # -- node helpers kept from the reference API ----------------------------------------------------
    def add_node(self, node) -> None:
        self._nodes[node.id] = node
        self._id = None

    def add_nodes(self, nodes) -> None:
        for node in nodes:
            self.add_node(node)

    def contain_node(self, node) -> bool:
        return node.id in self.nodes

    def contain_some_nodes(self, nodes) -> bool:
        return any(n.id in self.nodes for n in nodes)

    def contain_op(self, op_name: str) -> bool:
        return any(n.op_name == op_name or type(n.op).__name__ == op_name or n.op._type == op_name
                   for n in self.nodes.values())

    def num_nodes(self, op_name: Optional[str] = None) -> int:
        return len(self.get_nodes(op_name))

    def get_nodes(self, op_name: Optional[str] = None, only_stem: bool = False) -> List[Any]:
        nodes = [n for n in self.nodes.values() if op_name is None or n.op_name == op_name]
        return [n for n in nodes if n.is_stem] if only_stem else nodes

    def get_node_ids(self, skip_output_node: bool = False) -> List[str]:
        return list(self.nodes)

    def contain_stem_op(self) -> bool:
        return any(n.is_stem for n in self.nodes.values())

    def contain_concat(self, axis: int = 1) -> bool:
        return any(n.is_concat(axis) for n in self.nodes.values())

    def get_concat_nodes(self, axis: int = 1) -> List[Any]:
        return [n for n in self.nodes.values() if n.is_concat(axis)]

    def get_modules(self) -> List[Any]:
        seen: Dict[int, Any] = {}
        for node in self.nodes.values():
            if node.op.module is not None:
                seen.setdefault(id(node.op.module), node.op.module)
        return list(seen.values())

    def contain_lora(self) -> bool:
        return any("lora_" in m.name for m in self.members)

    # -- parameters ---------------------------------------------------------------------------------
    @property
    def is_prunable(self) -> bool:
        """Whether the group's units may be pruned: derived from :attr:`unprunable_reasons`, its one record."""
        return not self.unprunable_reasons

    @is_prunable.setter
    def is_prunable(self, prunable: bool) -> None:
        # Reference scripts assign the flag; the reason then says so.
        if prunable:
            self.unprunable_reasons.clear()
        else:
            self.mark_unprunable("is_prunable set to False")

    def mark_unprunable(self, reason: str) -> None:
        """Record why the group may not be pruned (which makes :attr:`is_prunable` False)."""
        if reason not in self.unprunable_reasons:
            self.unprunable_reasons.append(reason)

    def trainable_members(self) -> List[GroupMember]:
        return [m for m in self.members if m.trainable]

    def unit_index(self, member: GroupMember, unit_offsets: Dict[int, int]) -> Optional[torch.Tensor]:
        """Global unit id of each index along ``member.axis`` (-1 where no prunable unit owns it)."""
        if member.axis is None or member.owners is None:
            return None
        return torch.from_numpy(global_unit_ids(member.owners, unit_offsets)).to(member.tensor.device)

    def get_param_groups(self, unit_offsets: Optional[Dict[int, int]] = None) -> dict:
        """The optimizer-facing description of this group (SPEC section 5.3 schema, plus index maps).

        ``unit_offsets`` maps each prunable group's key to the global id of its first unit; with it every
        pruned parameter gets ``p_unit_index`` (global unit id per index along ``p_axes``).
        """
        members = self.trainable_members()
        offsets = unit_offsets or {}
        group = {
            "id": self.id,
            "num_groups": self.num_units,
            "is_prunable": self.is_prunable,
            "is_auxiliary": self.is_auxiliary,
            "unprunable_reasons": list(self.unprunable_reasons),
            "p_names": [m.name for m in members],
            "params": [m.tensor for m in members],
            "p_transform": [m.transform for m in members],
            "op_names": [m.op_name for m in members],
            "node_ids": [m.node_id for m in members],
            "p_axes": [m.axis for m in members],
            "p_unit_index": [self.unit_index(m, offsets) for m in members],
            "auxiliary_ngs": [(aux.id, offset) for aux, offset in self.auxiliary_node_groups],
            "op": members[-1].op_name if members else None,
        }
        group.update(self.extra_param_group_attrs)
        return group


class GroupSet(OrderedDict):
    """The result of the ``build_groups`` pass: group id -> :class:`NodeGroup`, in the order of each group's first
    node (``graph.node_groups`` shows it), and the :class:`UnitMap` the groups were built from (``unit_map``)."""

    unit_map: Optional[UnitMap] = None

    @classmethod
    def of(cls, groups: List[NodeGroup], unit_map: Optional[UnitMap] = None) -> "GroupSet":
        result = cls((group.id, group) for group in groups)
        result.unit_map = unit_map
        return result

    def prunable(self) -> List[NodeGroup]:
        """The groups whose units may be pruned (auxiliary groups included)."""
        return [group for group in self.values() if group.is_prunable]
