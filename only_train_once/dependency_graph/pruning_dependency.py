"""Partition every parameter into pruning zero-invariant groups (``build_pruning_dependency_graph``)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple, cast

import numpy as np

from ..compat import post_process_chunk_node  # noqa: F401 (the reference's import path)
from ..graph.node_group import GroupMember, GroupSet, NodeGroup, TensorTransform
from ..graph.unit_map import UnitMap
from ..passes import run_passes
from .adapters import settle_adapter_groups
from .analysis import AnalysisResult, SpaceAnalysis
from .layer_kinds import log_prunable_units

logger = logging.getLogger(__name__)

UNTRACED_KEY = -1  # group key of the parameters the traced forward never read
_ACCESSORY_OPS = frozenset({"batchnorm", "instancenorm", "groupnorm", "layernorm", "rmsnorm", "prelu"})

#: Fragments of pin reasons that mean the analyzer could not prove a group zero-invariant (a layout it does not
#: follow, or a size the model hard-codes), as opposed to groups that pruning would really change (model outputs,
#: normalised or mixed axes). Groups pinned for these are reported, since a model edit or a report may free them.
_CONSERVATIVE_REASONS = (
    "a concatenated space is reshaped", "a product space is split", "a space is both a product and a concatenation",
    "incompatible factorizations", "incompatible concatenations", "only one factor of a product space",
    "splits with fixed sizes", "uses the fixed size", "computes size", "size mismatch", "more dims than the result",
    "written by __setitem__",
)


def build_pruning_dependency_graph(graph) -> GroupSet:
    """Run the ``groups`` stage of the pipeline on ``graph`` (``analyze_spaces``, ``build_groups``,
    ``report_groups``); ``graph.analysis`` and ``graph.node_groups`` then show their results.

    Returns the node groups (id -> :class:`NodeGroup`), in the order of their first node.
    """
    from ..passes.pipeline import stage

    run_passes(stage("groups"), graph, graph.results, lint=graph.lint)
    return graph.node_groups


def analyze_spaces(graph) -> AnalysisResult:
    """Pass ``analyze_spaces``: the index-space analysis of ``graph`` (which unit owns each parameter slice)."""
    return SpaceAnalysis(graph).run().result()


def build_groups(graph) -> GroupSet:
    """Pass ``build_groups``: the pruning zero-invariant groups, from the analysis of the ``analyze_spaces`` pass.

    Each node lists the groups holding it in ``node_group_ids``; adapter (LoRA) groups are settled with their base.
    """
    unit_map = UnitMap.of_graph(graph, graph.analysis)
    groups = _GroupBuilder(graph, graph.analysis, unit_map).build()
    for node in graph.nodes.values():
        node.node_group_ids = []
    for group in groups:
        for node in group.nodes.values():
            if group.id not in node.node_group_ids:
                node.node_group_ids.append(group.id)
    settle_adapter_groups(groups, graph.root_module)
    return GroupSet.of(groups, unit_map)


def report_groups(graph) -> None:
    """Pass ``report_groups``: warn about unknown operators, conservatively pinned groups and models with nothing
    prunable; log the prunable units per layer kind."""
    groups = list(graph.node_groups.values())
    _report_unknown_operators(graph, graph.analysis)
    _report_conservative_groups(groups)
    _report_nothing_prunable(groups)
    log_prunable_units(groups, graph.root_module)


def _report_unknown_operators(graph, analysis: AnalysisResult) -> None:
    seen = set()
    for unknown in analysis.unknown_operators:
        if unknown.call_name in seen:
            continue
        seen.add(unknown.call_name)
        where = f" (in {unknown.scope})" if unknown.scope else ""
        logger.warning(
            "operator '%s'%s is not understood by the dependency analyzer; the channels it touches are left "
            "unprunable. If this operator should be prunable through, please report it with this message.%s",
            unknown.call_name, where, f" Detail: {unknown.detail}" if unknown.detail else "")


def _conservative_reason(group: NodeGroup) -> Optional[str]:
    """The group's conservative pin reason, if it is pinned for nothing else."""
    reasons = [part for reason in group.unprunable_reasons for part in reason.split("; ")]
    conservative = [r for r in reasons if any(fragment in r for fragment in _CONSERVATIVE_REASONS)]
    others = [r for r in reasons if r not in conservative and not r.endswith("of a pinned space")
              and r != "joined with a pinned space"]
    return conservative[0] if conservative and not others else None


def _report_conservative_groups(groups: List[NodeGroup]) -> None:
    by_reason: "OrderedDict[str, List[NodeGroup]]" = OrderedDict()
    for group in groups:
        if group.is_prunable or not group.trainable_members():
            continue
        reason = _conservative_reason(group)
        if reason is not None:
            by_reason.setdefault(reason, []).append(group)
    if not by_reason:
        return
    shown = list(by_reason.items())[:3]
    details = "; ".join(f"{len(pinned)} (e.g. {pinned[0].trainable_members()[0].name}): {reason}"
                        for reason, pinned in shown)
    if len(by_reason) > len(shown):
        details += f"; and {len(by_reason) - len(shown)} more reasons"
    logger.warning(
        "%d pruning groups are left unprunable because the dependency analyzer cannot prove them zero-invariant: "
        "%s. The compressed model stays exact; each group's `unprunable_reasons` lists why. A size hard-coded in "
        "the model can be read from a module attribute or the tensor's shape instead; for a layout the analyzer "
        "does not follow, please report it with this message.", sum(map(len, by_reason.values())), details)


def _report_nothing_prunable(groups: List[NodeGroup]) -> None:
    """One warning at build time when no group can be pruned, naming the commonest reasons, so a model the
    analyzer cannot compress is known before training rather than after."""
    trainable = [g for g in groups if g.trainable_members()]
    if not trainable or any(g.is_prunable for g in trainable):
        return
    counts: "OrderedDict[str, int]" = OrderedDict()
    for group in trainable:
        for reason in group.unprunable_reasons:
            for part in reason.split("; "):
                if part != "joined with a pinned space" and not part.endswith("of a pinned space"):
                    counts[part] = counts.get(part, 0) + 1
    common = sorted(counts.items(), key=lambda item: -item[1])[:3]
    logger.warning(
        "no pruning group of this model is prunable: training will quantize (if asked) but cannot remove "
        "structures. Commonest reasons: %s. Each group's `unprunable_reasons` lists why; please report the model if "
        "a layer should be prunable.", "; ".join(f"{reason} ({count} groups)" for reason, count in common) or "none")


class _GroupBuilder:
    def __init__(self, graph, analysis: AnalysisResult, unit_map: UnitMap):
        self.graph = graph
        self.analysis = analysis
        self.unit_map = unit_map
        self.groups: Dict[Tuple[str, int], NodeGroup] = {}
        self.member_of: Dict[str, Tuple[str, int]] = {}
        self.named_tensors = {**graph.parameters, **graph.buffers}
        self.parameter_names = set(graph.parameters)

    # Group key: ("unit", uid) for a prunable unit space, ("space", uid) for a pinned or concatenated one.
    # An axis whose elements all belong to prunable units of several spaces (MambaOut's fc1 rows: a gate half
    # holding the units of two spaces, then those spaces again) joins the group of its first element's units; its
    # index map gives every element its own unit, so each part is scored and zeroed with its own units.
    def _key_for(self, owners, root) -> Tuple[str, int]:
        uids = owners[0]
        if root.from_concat:
            return ("space", root.uid)
        if uids.size and (uids >= 0).all():
            return ("unit", int(uids[0]))
        return ("space", root.uid)

    def _group(self, key: Tuple[str, int], size: int) -> NodeGroup:
        group = self.groups.get(key)
        if group is None:
            group = NodeGroup(key[1], size)
            group.is_unit_group = key[0] == "unit"
            self.groups[key] = group
        return group

    def build(self) -> List[NodeGroup]:
        analysis = self.analysis
        for node in self.graph.nodes.values():
            self._add_node_params(node)
        for node in self.graph.nodes.values():
            if node.op_name == "concat":
                axis = node.cfg_params.get("axis", 1)
                root = analysis.spaces.find(analysis.axes(node.outputs[0])[axis])
                self._group(("space", root.uid), root.size)
        for node in self.graph.nodes.values():
            self._place_node(node)
        self._add_untraced_parameters()
        ordered = sorted(self.groups.values(), key=lambda g: self._first_position(g))
        for group in ordered:
            self._finish(group)
        return [g for g in ordered if g.nodes or g.members]

    def _first_position(self, group: NodeGroup) -> Tuple[int, int]:
        positions = [node.index for node in group.nodes.values()]
        return (min(positions) if positions else 1 << 30, group.key)

    def _add_node_params(self, node) -> None:
        analysis = self.analysis
        owned: Optional[Tuple[str, int]] = None
        unplaced: List[str] = []
        for value_id in node.call.inputs:
            value = self.graph.values[value_id]
            if value.kind not in ("param", "buffer") or value.name is None:
                continue
            if value.name in self.member_of:
                owned = owned or self.member_of[value.name]
                continue
            mapped = analysis.mapped_owner(value_id)
            axis = analysis.owner_axis.get(value_id) if mapped is None else mapped.axis
            if axis is None and value.shape and max(value.shape) > 1:
                axis = 0
            if axis is None:
                unplaced.append(value.name)
                continue
            space = mapped.space if mapped is not None else analysis.axes(value_id)[cast(int, axis)]
            owners = self.unit_map.owners(value.name, axis)
            root = analysis.spaces.find(space)
            key = self._key_for(owners, root)
            group = self._group(key, analysis.unit_space(key[1]).size if key[0] == "unit" else root.size)
            transform = self._transform(node, value.name, axis, len(value.shape), key)
            group.members.append(GroupMember(value.name, self.named_tensors[value.name], axis, owners,
                                             value.name in self.parameter_names, transform, node.op_name, node.id))
            self.member_of[value.name] = key
            owned = owned or key
        for name in node.quant_param_names + unplaced:
            if name in self.member_of or name not in self.named_tensors:
                continue
            if owned is None:
                owned = ("space", -2 - len(self.groups))
                self._group(owned, 1)
            self.groups[owned].members.append(GroupMember(name, self.named_tensors[name], None, None,
                                                          name in self.parameter_names, TensorTransform.NO_PRUNE,
                                                          node.op_name, node.id))
            self.member_of[name] = owned
        if owned is not None:
            self.groups[owned].add_node(node)

    def _add_untraced_parameters(self) -> None:
        """Parameters the traced forward never read (train-only branches...) still train, unpruned."""
        missing = [name for name in self.graph.parameters if name not in self.member_of]
        if not missing:
            return
        logger.warning("%d parameters are not used by the traced forward (e.g. %s); they are trained but never "
                       "pruned. Trace in the configuration you train if they matter.", len(missing),
                       ", ".join(missing[:3]))
        group = self._group(("space", UNTRACED_KEY), 1)
        group.label = "untraced-parameters"
        for name in missing:
            group.members.append(GroupMember(name, self.named_tensors[name], None, None, True,
                                             TensorTransform.NO_PRUNE, "", ""))
            self.member_of[name] = ("space", UNTRACED_KEY)

    def _transform(self, node, name: str, axis, ndim: int, key) -> TensorTransform:
        if isinstance(axis, tuple):  # a mixture of experts' flattened (expert, row) axis: rows, expert-major
            return TensorTransform.BASIC
        if axis != 0:
            return TensorTransform.TRANSPOSE
        if node.op_name == "groupnorm":
            return TensorTransform.MULTIHEAD_NUMHEAD_SPREAD
        if node.op_name in _ACCESSORY_OPS:
            return TensorTransform.ACCESSORY
        if key[0] == "unit":
            unit_size = self.analysis.unit_space(key[1]).size
            if self.named_tensors[name].shape[0] != unit_size:
                return TensorTransform.MULTIHEAD_NUMHEAD
        return TensorTransform.BASIC

    def _place_node(self, node) -> None:
        """Param-less nodes join the group of the channels they carry (for drawing, metrics and node-id APIs).

        Their output channels decide, else their input channels; nodes carrying no group's channels (input-side
        reshapes) form a parameter-free, unprunable group per channel space, as in the reference.
        """
        if node.all_param_names:
            return
        analysis = self.analysis
        candidates = [self._channel_axis(out) for out in node.outputs]
        candidates += [self._channel_axis(value_id) for value_id in node.inputs]
        first = None
        for space in candidates:
            if space is None:
                continue
            key = self._key_for(analysis.owners(space), analysis.spaces.find(space))
            first = first or key
            if key in self.groups:
                self.groups[key].add_node(node)
                return
        if first is not None:
            root = analysis.spaces.find(candidates[0]) if candidates[0] is not None else None
            self._group(first, root.size if root is not None else 1).add_node(node)

    def _channel_axis(self, value_id: str):
        axes = self.analysis.axes(value_id)
        if not axes:
            return None
        return axes[1] if len(axes) > 1 else axes[0]

    def _finish(self, group: NodeGroup) -> None:
        analysis = self.analysis
        key_space = analysis.unit_space(group.key) if group.key >= 0 else None
        group.nodes = OrderedDict(sorted(group.nodes.items(), key=lambda item: item[1].index))
        if group.key == UNTRACED_KEY:
            group.mark_unprunable("not used by the traced forward")
        elif not group.is_unit_group:
            if key_space is not None and key_space.from_concat:
                self._make_auxiliary(group)
            else:
                reasons = self._pin_reasons(key_space) if key_space is not None else []
                group.mark_unprunable("; ".join(reasons[:3]) or "no prunable channels")
        if not group.trainable_members():
            group.is_trainable = False
            group.mark_unprunable("no trainable parameters")
        elif group.is_auxiliary and not any(m.axis is not None for m in group.trainable_members()):
            group.mark_unprunable("no prunable parameters")

    def _pin_reasons(self, space) -> List[str]:
        """Why ``space`` is not prunable: its own pin reasons, else those of its factors (a head space pinned
        through its product structure)."""
        spaces = self.analysis.spaces
        reasons = list(spaces.reasons(space))
        if not reasons:
            for factor in spaces.flat_factors(space):
                reasons.extend(r for r in spaces.reasons(factor) if r not in reasons)
        return reasons

    def _make_auxiliary(self, group: NodeGroup) -> None:
        analysis = self.analysis
        uids, indices = analysis.owners(analysis.unit_space(group.key))
        owned = np.flatnonzero(uids >= 0)
        distinct, first = np.unique(uids[owned], return_index=True)
        dependents: "OrderedDict[int, int]" = OrderedDict()
        for position in sorted(owned[first]):
            dependents[int(uids[position])] = int(position - indices[position])
        if not dependents:
            group.mark_unprunable("; ".join(analysis.spaces.reasons(analysis.unit_space(group.key))[:3])
                                  or "concatenated channels are not prunable")
            return
        group.is_auxiliary = True
        for uid, offset in dependents.items():
            dependent = self.groups.get(("unit", uid))
            if dependent is None:
                continue
            group.dependent_node_groups.append(dependent)
            dependent.auxiliary_node_groups.append((group, offset))
        if not group.members:
            group.mark_unprunable("no parameters")
