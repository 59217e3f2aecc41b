"""Space analysis: run the operator catalogue over the graph and decide what can be pruned.

Passes, in order:

1. *propagation* — every node, in execution order, labels its outputs' axes with spaces and relates them
   to its inputs' and parameters' spaces (:mod:`only_train_once.operation.catalogue`); model inputs and
   outputs are pinned; calls the catalogue does not know pin everything they touch;
2. *shape literals and splits* — a ``view(B, L, 8, 64)`` whose ``8`` would change with pruning must read
   it from a module attribute we can update (else the heads are pinned); ``chunk`` outputs must prune alike;
3. *zero flow* — a pruned slice must be exactly zero wherever a later layer reads it, or removing it would
   change the output (``sigmoid(0) = 0.5``, ``x + 1``, BatchNorm without affine...); spaces that fail are
   pinned, with the operator named in the reason.

The result maps every element of every parameter axis to the prunable unit that owns it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Mapping, Optional, Tuple, cast

import numpy as np

from ..graph.pruning_axis import PruningAxis, length
from ..graph.trace import TracedFloat, TracedInt, ValueRef
from ..operation.catalogue import (ADD, AFFINE_NORM, CONCAT, DIV, GENERATE, MUL, PRESERVE, STEM, OpKind, RuleFindings,
                                   exact_shape_source)
from ..passes import Pass, run_passes
from .constant_channels import (ConstantFold, constant_units, fold_blocker, independent_output,
                                initial_constant_units, record_fold)
from .spaces import Owners, Space, SpaceSet

if TYPE_CHECKING:
    from ..graph.node import Node

logger = logging.getLogger(__name__)


@dataclass
class LiteralUpdate:
    """A module attribute holding a size that pruning changes (e.g. ``num_heads``): after pruning it becomes
    the kept size of ``axis`` of traced tensor ``value_id``."""

    module_name: str
    attribute: str
    value_id: str
    axis: int


@dataclass(frozen=True)
class MappedAxis:
    """A pruning axis of a parameter (one dim, or two dims read as one flattened axis, see
    :mod:`only_train_once.graph.pruning_axis`) whose index ``k`` is element ``index[k]`` of unit space ``space``.

    Why a map and not the axis's own space: a sparse mixture-of-experts tensor ``[experts, rows, width]`` holds a
    different unit in row ``j`` of every expert, so neither of its two axes has one owner per index, and the
    index-space algebra has no structure for "segment ``e`` of a unit space" (a concatenation of per-expert spaces
    would make one unit group per expert, but one tensor can be a member of one group only: the optimizer sees each
    parameter once). The experts' units are therefore one unit space, and this map says which unit owns each
    flattened (expert, row) index; gate and up rows of a hidden unit map to the same unit. After pruning, the
    experts' packed rows (one dim) map to their units the same way."""

    axis: PruningAxis
    space: Space
    index: np.ndarray


@dataclass
class UnknownOperator:
    node_id: str
    call_name: str
    scope: str
    detail: str = ""


class SpaceAnalysis:
    """Index-space analysis of one graph (see module docstring)."""

    def __init__(self, graph):
        self.graph = graph
        self.spaces = SpaceSet()
        self._axes: Dict[str, List[Space]] = {}
        self.owner_axis: Dict[str, int] = {}  # parameter value id -> the axis pruned with its group
        #: parameter value id -> axes whose indices map to units (see :class:`MappedAxis`)
        self.mapped_axes: Dict[str, List[MappedAxis]] = {}
        self.mapped_owner: Dict[str, MappedAxis] = {}  # parameter value id -> its mapped pruning axis
        self._claimed: List[Space] = []  # pruning axes claimed on derived weights (e.g. spectral norm)
        self.unknown_operators: List[UnknownOperator] = []
        self.literal_updates: List[LiteralUpdate] = []
        self._literal_nodes: List = []
        self._split_nodes: List[Tuple[Node, List[Space]]] = []
        self._generating: set = set()
        #: names of the convolutions whose forward standardises their weight (baked before input pruning)
        self.standardised_convs: List[str] = []
        self._owners: Dict[int, Owners] = {}
        self._units: Dict[int, FrozenSet[int]] = {}
        self._through_consumers: List[Space] = []
        self._made_nonzero: Dict[int, Node] = {}  # unit uid -> the call that first made its pruned slices nonzero
        self._constant: Dict[str, FrozenSet[int]] = {}  # value id -> units whose pruned slices are constants
        self._independent: Dict[str, bool] = {}  # value id -> whether it depends on no model input
        #: layers that absorb pruned constant channels into their bias, by module name (see constant_channels)
        self.constant_folds: Dict[str, ConstantFold] = {}

    # -- context used by the catalogue ----------------------------------------------------------------
    def shape(self, value_id: str) -> Tuple[int, ...]:
        return self.graph.values[value_id].shape

    def kind(self, value_id: str) -> str:
        return self.graph.values[value_id].kind

    def axes(self, value_id: str) -> List[Space]:
        axes = self._axes.get(value_id)
        if axes is None:
            value = self.graph.values[value_id]
            pinned = value.kind not in ("param", "buffer")
            origin = value.name or value.kind
            axes = [self.spaces.new(s, f"{origin}[{k}]", pinned=pinned) for k, s in enumerate(value.shape)]
            self._axes[value_id] = axes
        return axes

    def set_axes(self, value_id: str, axes: List[Space]) -> None:
        shape = self.shape(value_id)
        if len(axes) != len(shape) or any(a.size != s for a, s in zip(axes, shape)):
            raise ValueError(f"internal: axes {[a.size for a in axes]} do not match shape {shape}")
        self._axes[value_id] = list(axes)

    def pin(self, space: Space, reason: str) -> None:
        self.spaces.pin(space, reason)

    def pin_value(self, value_id: str, reason: str) -> None:
        for axis in self.axes(value_id):
            self.spaces.pin(axis, reason)

    def claim(self, value_id: Optional[str], axis: int, node) -> None:
        """``axis`` of parameter ``value_id`` is the one pruned with its group (first claim wins).

        Claims on tensors derived from parameters (a spectral-normalised weight) are remembered and decide
        the axis of the parameters they come from (see :meth:`best_axis`).
        """
        if value_id is None:
            return
        if self.kind(value_id) in ("param", "buffer"):
            self.owner_axis.setdefault(value_id, axis)
        else:
            self._claimed.append(self.axes(value_id)[axis])

    def claim_mapped(self, value_id: str, axis: PruningAxis, space: Space, index: np.ndarray, owner: bool) -> None:
        """Index ``k`` along ``axis`` of parameter ``value_id`` (a dim, or a pair of dims flattened) is element
        ``index[k]`` of unit space ``space`` (see :class:`MappedAxis`); ``owner``: the parameter is pruned along it
        with its group (a claim, as :meth:`claim`; a pair of dims must then be adjacent, so that the optimizer can
        write through a view). The caller pins the dims' own spaces: they own nothing."""
        shape = self.shape(value_id)
        if index.shape != (length(shape, axis),) or (owner and isinstance(axis, tuple) and axis[1] != axis[0] + 1):
            raise ValueError(f"internal: mapped axis {axis} of a {shape} tensor with an index of {index.shape}")
        mapped = MappedAxis(axis, space, np.asarray(index, dtype=np.int64))
        self.mapped_axes.setdefault(value_id, []).append(mapped)
        if owner:
            self.mapped_owner.setdefault(value_id, mapped)

    def unknown(self, node, detail: str = "") -> None:
        for value_id in node.call.inputs:
            self.pin_value(value_id, f"read by '{node.call.name}', which the analyzer does not understand")
        for out in node.outputs:
            self._axes[out] = [self.spaces.new(s, f"{node.call.name} output", pinned=True) for s in self.shape(out)]
        self.unknown_operators.append(UnknownOperator(node.id, node.call.name, node.scope, detail))

    def prune_through_consumer_columns(self, space: Space) -> None:
        """The units of ``space`` may stay nonzero where a linear layer reads them: that layer's weight is then
        pruned along its input axis, so the unit's columns are zeroed with it (multi-query attention heads)."""
        self._through_consumers.append(space)

    def record_literal_shape(self, node) -> None:
        self._literal_nodes.append(node)

    def record_split(self, node, parts: List[Space]) -> None:
        self._split_nodes.append((node, parts))

    def record_weight_standardisation(self, node) -> None:
        """The convolution running ``node`` standardises its own weight over its input channels: the subnet
        constructor bakes the standardisation from the full weight before pruning its inputs."""
        name = self.graph.module_names.get(id(node.call.module))
        if name is not None and name not in self.standardised_convs:
            self.standardised_convs.append(name)

    def mark_generating(self, node) -> None:
        self._generating.add(node.id)

    # -- driver ---------------------------------------------------------------------------------------
    def run(self) -> "SpaceAnalysis":
        """Run the analysis's own passes (:data:`ANALYSIS_PASSES`, see the module docstring); returns ``self``."""
        run_passes(ANALYSIS_PASSES, self)
        return self

    def result(self) -> "AnalysisResult":
        """The read-only view of this (finished) analysis that the later stages use."""
        return AnalysisResult(self)

    def propagate_all(self) -> None:
        """Pass ``propagate``: every node, in execution order, relates its outputs' spaces to its inputs'."""
        for node in self.graph.nodes.values():
            self._propagate(node)

    def pin_model_outputs(self) -> None:
        """Pass ``pin_model_outputs``: the model's outputs keep their sizes."""
        for value_id in self.graph.output_values:
            self.pin_value(value_id, "model output")

    def resolve_owners(self) -> None:
        """Pass ``resolve_owners``: normalise the space set after unions and pins, and forget the owners computed
        before (the later passes read owners, which must reflect every earlier union)."""
        self._refresh()

    def _propagate(self, node) -> None:
        kind: Optional[OpKind] = node.op_kind  # attached by the graph's attach_operators pass
        if kind is None:
            self.unknown(node)
            return
        try:
            findings = kind.propagate(self, node)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            logger.debug("rule for %s failed on %s: %s", node.call.name, node.id, error)
            self.unknown(node, detail=str(error))
            return
        if isinstance(findings, RuleFindings):  # user rules may return nothing
            node.cfg_params.update(findings.cfg_params)
            if findings.op_name is not None:
                node.op_name = findings.op_name
        for out in node.outputs:
            if out not in self._axes:
                self.unknown(node, detail="no output spaces")
                return

    # -- resolution -----------------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.spaces.normalize()
        self._owners = {}
        self._units = {}

    def owners(self, space: Space) -> Owners:
        """``(unit uids, unit indices)`` owning each element of ``space`` (uid -1 where not prunable)."""
        return self.spaces.resolve(space, self._owners)

    def units(self, space: Space) -> FrozenSet[int]:
        """uids of the prunable unit spaces owning some element of ``space``."""
        return self.spaces.units(space, self._units)

    def value_units(self, value_id: str) -> FrozenSet[int]:
        result: set = set()
        for axis in self.axes(value_id):
            result |= self.units(axis)
        return frozenset(result)

    def unit_space(self, uid: int) -> Space:
        return self.spaces.spaces[uid]

    def best_axis(self, value_id: str) -> Optional[int]:
        """Pruning axis of a parameter no layer claimed: an axis claimed on a weight derived from it,
        else the last axis carrying prunable units."""
        axes = self.axes(value_id)
        with_units = [k for k, a in enumerate(axes) if self.units(a)]
        claimed = {self.spaces.find(s).uid for s in self._claimed}
        preferred = [k for k in with_units if self.spaces.find(axes[k]).uid in claimed]
        none: List[Optional[int]] = [None]
        return (preferred or with_units or none)[0 if preferred else -1]

    def choose_bare_param_axes(self) -> None:
        """Give every parameter no operator claimed (bare parameters, derived weights) its pruning axis."""
        self._refresh()
        for value in self.graph.values.values():
            if value.kind not in ("param", "buffer") or value.id in self.owner_axis or value.id not in self._axes \
                    or value.id in self.mapped_owner:
                continue
            axis = self.best_axis(value.id)
            if axis is not None:
                self.owner_axis[value.id] = axis

    # -- validations ----------------------------------------------------------------------------------
    def check_splits(self) -> None:
        """Pass ``check_splits``: the parts of a ``chunk``/``split`` must prune alike, or they are pinned."""
        for node, parts in self._split_nodes:
            if len(parts) < 2:
                continue
            literal = node.call.name != "chunk"
            if literal and self._follow_split_sections(node, parts):
                continue
            resolutions = [self.owners(p) for p in parts]
            differ = any(not (np.array_equal(r[0], resolutions[0][0]) and np.array_equal(r[1], resolutions[0][1]))
                         for r in resolutions[1:])
            if literal and not differ and self._follow_split_size(node, parts):
                continue
            if literal or differ:
                reason = (f"'{node.call.name}' in {node.scope or 'the model'} splits with fixed sizes"
                          if literal else f"the outputs of '{node.call.name}' would be pruned differently")
                for part in parts:
                    if self.units(part):
                        self.pin(part, reason)

    def _follow_split_sections(self, node, parts: List[Space]) -> bool:
        """``x.split(self.split_indices, dim)`` with every section read from a module attribute (MambaOut's
        gated block) stays prunable, each part its own way: the constructor rewrites each section to the kept size
        of its part. Returns whether it was recorded."""
        sections = node.arg(1, "split_size_or_sections")
        if sections is None:
            sections = node.arg(1, "split_size")
        if not isinstance(sections, (list, tuple)) or len(sections) != len(parts):
            return False
        found = [_exact_attribute(size) for size in sections]
        attributes = [attribute for attribute in found if attribute is not None]
        # Only a tuple/list attribute holding exactly these sections (``split_indices[k]``): a plain int attribute
        # (EfficientViT's ``key_dim``) is shared by other parts and other calls, which one rewrite would break.
        if len(attributes) != len(found) or any(not _ELEMENT_ATTRIBUTE.fullmatch(a[1]) for a in attributes) \
                or len({a[1].split("[")[0] for a in attributes}) != 1 or len(set(attributes)) != len(attributes):
            return False
        dim = int(node.arg(2, "dim", 0) or 0)
        dim = dim + len(self.shape(node.outputs[0])) if dim < 0 else dim
        for (module_name, attribute), out in zip(attributes, node.outputs):
            self.literal_updates.append(LiteralUpdate(module_name, attribute, out, dim))
        return True

    def _follow_split_size(self, node, parts: List[Space]) -> bool:
        """``x.split(self.split_size, dim)`` into equal parts pruned alike (GPT-2's fused ``c_attn``) stays prunable:
        the constructor rewrites the attribute to the kept size of one part. Returns whether it was recorded."""
        size = node.arg(1, "split_size")
        if size is None:
            size = node.arg(1, "split_size_or_sections")
        attribute = _exact_attribute(size)
        if attribute is None or any(part.size != int(size) for part in parts):
            return False
        dim = int(node.arg(2, "dim", 0) or 0)
        dim = dim + len(self.shape(node.outputs[0])) if dim < 0 else dim
        self.literal_updates.append(LiteralUpdate(attribute[0], attribute[1], node.outputs[0], dim))
        return True

    def check_literal_shapes(self) -> None:
        """Sizes spelled out in view/reshape/expand calls must follow pruning, or their axes are pinned.

        Each int knows its origin (:class:`TracedInt`): a tensor size (``c = x.shape[-1]``) ties the two axes
        together; a module attribute (``self.num_heads``) is rewritten by the subnet constructor; a size
        derived from attributes (``self.num_heads * self.head_dim``) follows if one of them is rewritten for
        the same units; anything else that pruning would change (a hard-coded ``8``, ``c // heads``) pins.
        """
        for node in self._literal_nodes:
            for axis, literal in _shape_literals(node) or []:
                shape = exact_shape_source(literal)
                if shape is not None and axis < len(self.axes(node.outputs[0])):
                    self.spaces.union(self.axes(node.outputs[0])[axis], self.axes(shape[0])[shape[1]])
        self._refresh()
        pending: List[Tuple[Node, int, Any]] = []
        for node in self._literal_nodes:
            axes = self.axes(node.outputs[0])
            for axis, literal in _shape_literals(node) or []:
                if literal == -1 or axis >= len(axes) or exact_shape_source(literal) is not None:
                    continue
                if not self.units(axes[axis]) and not _has_shape_source(literal):
                    continue
                attribute = _exact_attribute(literal)
                if attribute is not None:
                    self.literal_updates.append(LiteralUpdate(attribute[0], attribute[1], node.outputs[0], axis))
                else:
                    pending.append((node, axis, literal))
        rewritten = {(u.module_name, u.attribute): u for u in self.literal_updates}
        for node, axis, literal in pending:
            self._check_derived_literal(node, axis, literal, rewritten)

    def _check_derived_literal(self, node, axis: int, literal, rewritten: Dict[Tuple[str, str], LiteralUpdate]) -> None:
        where = f"'{node.call.name}' in {node.scope or 'the model'}"
        out_axes = self.axes(node.outputs[0])
        units = self.units(out_axes[axis])
        if not isinstance(literal, TracedInt):
            self.pin(out_axes[axis], f"{where} uses the fixed size {literal}; read it from a module attribute or "
                                     "use -1 to make it prunable")
            return
        shape_spaces = [self.axes(v)[k] for kind, v, k in literal.sources if kind == "shape"]
        if shape_spaces and self._scales_a_pruned_size(literal, out_axes[axis], shape_spaces, rewritten):
            return
        if shape_spaces:
            for space in shape_spaces + [out_axes[axis]]:
                self.pin(space, f"{where} computes size {int(literal)} from other sizes")
            return
        followers = [rewritten[(m, a)] for kind, m, a in literal.sources if kind == "attr" and (m, a) in rewritten]
        same_units = [u for u in followers if self.units(self.axes(u.value_id)[u.axis]) == units]
        if len(units) != 1 or not same_units:
            self.pin(out_axes[axis], f"{where} computes size {int(literal)} from module attributes that pruning "
                                     "does not rewrite")

    def _scales_a_pruned_size(self, literal: TracedInt, out_axis: Space, shape_spaces: List[Space],
                              rewritten: Dict[Tuple[str, str], LiteralUpdate]) -> bool:
        """Whether ``literal`` is one pruned tensor size times constants and sizes the output axis as that same
        product, so it stays right after pruning: eager grouped-query attention's ``repeat_kv`` reshapes
        ``(B, kv_heads, n_rep, L, D)`` to ``(B, kv_heads * n_rep, L, D)``, with ``kv_heads`` read from the shape and
        ``n_rep`` a module attribute that whole-group pruning leaves unchanged."""
        with_units = [space for space in shape_spaces if self.units(space)]
        if len(with_units) != 1 or self.units(with_units[0]) != self.units(out_axis):
            return False
        attributes = [(m, a) for kind, m, a in literal.sources if kind == "attr"]
        if any(key in rewritten for key in attributes):
            return False
        modules = dict(self.graph.root_module.named_modules())
        factors = [space.size for space in shape_spaces] + [getattr(modules[m], a, None) for m, a in attributes]
        if not all(isinstance(f, int) for f in factors) or int(literal) != int(np.prod(cast(List[int], factors))):
            return False
        pruned = self.spaces.find(with_units[0])
        return any(self.spaces.find(f) is pruned for f in self.spaces.flat_factors(out_axis))

    def check_size_scalars(self) -> None:
        """A number computed from a size and used as a value (``attn * c ** -0.5`` with ``c = x.shape[1]``,
        ``x.sum(1) / c``) changes when that size is pruned, so the size is pinned."""
        rewritten = {(u.module_name, u.attribute): u for u in self.literal_updates}
        for node in self.graph.nodes.values():
            arithmetic = node.op_kind is not None and node.op_kind.op_name in _ARITHMETIC_OPS
            for scalar in _size_scalars((node.call.args, node.call.kwargs), arithmetic):
                reason = (f"'{node.call.name}' in {node.scope or 'the model'} uses {float(scalar):.4g}, computed "
                          "from a size that pruning changes")
                for kind, where, axis in scalar.sources:
                    if kind == "shape" and where in self._axes:
                        self.pin(self.axes(where)[axis], reason)
                    elif kind == "attr" and (where, axis) in rewritten:
                        update = rewritten[(where, axis)]
                        self.pin(self.axes(update.value_id)[update.axis], reason)

    # -- zero flow ------------------------------------------------------------------------------------
    def zero_flow(self) -> None:
        """Pass ``zero_flow``: pin the spaces whose pruned slices would not stay exactly zero where a later layer
        reads them (see the module docstring)."""
        nonzero: Dict[str, FrozenSet[int]] = {}
        self._made_nonzero = {}
        self._constant, self._independent, self.constant_folds = {}, {}, {}

        def nz(value_id: str) -> FrozenSet[int]:
            known = nonzero.get(value_id)
            if known is None:
                known = self._initial_nonzero(value_id)
                nonzero[value_id] = known
            return known

        for node in self.graph.nodes.values():
            kind = node.op_kind
            if kind is None:
                for out in node.outputs:
                    nonzero[out] = self.value_units(out)
                continue
            for out in node.outputs:
                nonzero[out] = self._zero_rule(node, kind, out, nz) & self.value_units(out)
                self._remember_where_made_nonzero(node, nonzero[out], nz)
            self._track_constants(node, nonzero, nz)

    def _track_constants(self, node, nonzero: Dict[str, FrozenSet[int]], nz) -> None:
        """Record which units of ``node``'s outputs are pruned constants (zero included), and whether the outputs
        depend on the model input, for :meth:`_stem_rule` (see :mod:`.constant_channels`)."""
        for ref in node.tensor_args:  # values no call produced (parameters, buffers, model inputs)
            if ref not in self._constant:
                value = self.graph.values[ref]
                self._independent[ref] = value.kind in ("param", "buffer")
                zero = self.value_units(ref) - nz(ref)
                self._constant[ref] = initial_constant_units(self, ref, zero)
        independent = independent_output(node, self._independent.__getitem__)
        for out in node.outputs:
            self._independent[out] = independent
            zero = self.value_units(out) - nonzero[out]
            self._constant[out] = zero | constant_units(self, node, out, self._constant.__getitem__,
                                                        self._independent.__getitem__)

    def _remember_where_made_nonzero(self, node, out_nonzero: FrozenSet[int], nz) -> None:
        """The first call at which a unit's pruned slices stop being zero (``x + bias``, ``sigmoid``), named in the
        reason when a later layer pins the unit."""
        before: set = set()
        for ref in node.tensor_args:
            before |= nz(ref)
        for uid in out_nonzero - before:
            self._made_nonzero.setdefault(uid, node)

    def _initial_nonzero(self, value_id: str) -> FrozenSet[int]:
        value = self.graph.values[value_id]
        units = self.value_units(value_id)
        if value.kind == "param" and value.requires_grad and value_id in self.owner_axis:
            return units - self.units(self.axes(value_id)[self.owner_axis[value_id]])
        return units

    def pin_units(self, units, reason: str) -> None:
        """Pin the prunable unit spaces ``units`` (uids), for zero rules."""
        self._pin_units(units, reason)

    def _pin_nonzero_units(self, units, reason: str, detail: str = "") -> None:
        """Pin ``units``, naming for each the call that made its pruned slices nonzero (when one did), then
        ``detail``."""
        for uid in sorted(units):
            origin = self._made_nonzero.get(uid)
            where = f" (made nonzero by '{origin.call.name}' in {origin.scope or 'the model'})" if origin else ""
            self.pin(self.unit_space(uid), reason + where + detail)

    def _pin_units(self, units, reason: str) -> None:
        for uid in sorted(units):
            self.pin(self.unit_space(uid), reason)

    def _zero_rule(self, node, kind: OpKind, out: str, nz) -> FrozenSet[int]:
        refs = node.tensor_args
        category = kind.zero
        if node.id in self._generating:
            category = GENERATE
        elif kind.zero_rule is not None:
            return kind.zero_rule(self, node, out, nz)
        if category == PRESERVE:
            return nz(refs[0]) if refs else self.value_units(out)
        if category == GENERATE:
            return self.value_units(out)
        if category == MUL:
            return self._mul_rule(out, refs, nz)
        if category == ADD:
            return self._add_rule(node, out, refs, nz)
        if category == DIV:
            return self._div_rule(node, out, refs, nz)
        if category == CONCAT:
            result: FrozenSet[int] = frozenset()
            for ref in refs:
                result |= nz(ref)
            return result
        if category == STEM:
            return self._stem_rule(node, out, nz)
        if category == AFFINE_NORM:
            return self._norm_rule(node, out, refs, nz)
        return self._custom_rule(node, out, refs, nz)

    def _mul_rule(self, out, refs, nz) -> FrozenSet[int]:
        result = set()
        for uid in self.value_units(out):
            holders = [r for r in refs if uid in self.value_units(r)]
            if holders and all(uid in nz(r) for r in holders):
                result.add(uid)
        return frozenset(result)

    def _add_rule(self, node, out, refs, nz) -> FrozenSet[int]:
        scalar_nonzero = any(_is_nonzero_number(a) for a in node.call.args[:2])
        if node.call.name in ("masked_fill", "masked_fill_", "where"):
            scalar_nonzero = True
        result = set()
        for uid in self.value_units(out):
            holders = [r for r in refs if uid in self.value_units(r)]
            if scalar_nonzero or len(holders) < len(refs) or any(uid in nz(r) for r in holders):
                result.add(uid)
        return frozenset(result)

    def _div_rule(self, node, out, refs, nz) -> FrozenSet[int]:
        reverse = node.call.name == "__rtruediv__"
        args = node.call.args
        numerator, denominator = (args[1], args[0]) if reverse else (args[0], args[1] if len(args) > 1 else None)
        units = self.value_units(out)
        if isinstance(denominator, ValueRef):
            zero_in_denominator = self.value_units(denominator.value_id) - nz(denominator.value_id)
            self._pin_units(zero_in_denominator & units, f"'{node.call.name}' would divide a pruned zero by zero")
        if isinstance(numerator, ValueRef):
            held = self.value_units(numerator.value_id)
            return (nz(numerator.value_id) | (units - held)) & units
        return units if _is_nonzero_number(numerator) else frozenset()

    def _stem_rule(self, node, out, nz) -> FrozenSet[int]:
        name = node.op_kind.op_name
        x = node.value_arg(0, "input") if name != "multiheadattention" else node.value_arg(0, "query")
        weight = node.value_arg(1, "weight") if name != "multiheadattention" else node.value_arg(5, "in_proj_weight")
        if name in ("conv", "convtranspose"):
            contracted = self.units(self.axes(x)[1])
        elif name == "embedding":
            contracted = frozenset()
        else:
            contracted = self.units(self.axes(x)[-1])
        live = contracted & nz(x)
        live -= self._zeroed_columns(node, weight, live)
        live -= self._fold_constants(node, x, 1 if name in ("conv", "convtranspose") else -1,
                                     live & self._constant.get(x, frozenset()))
        self._pin_nonzero_units(live, f"pruned channels reach '{node.call.name}' in {node.scope or 'the model'}"
                                      " without being zero there")
        out_axes = self.axes(out)
        channel_axis = 1 if name in ("conv", "convtranspose") else len(out_axes) - 1
        produced = self.units(out_axes[channel_axis])
        passed = nz(x) if name != "embedding" else frozenset()
        if name in ("conv", "convtranspose", "linear") and node.value_arg(2, "bias") is not None:
            # The bias reaches every position of the other axes: a Linear over the token axis (MLP-Mixer) makes
            # the pruned channels it carries equal to its bias.
            passed = passed | (self.value_units(out) - produced)
        if weight is not None and self.graph.values[weight].requires_grad:
            return passed - produced
        return passed | produced

    def _fold_constants(self, node, x: str, axis: int, constant: FrozenSet[int]) -> FrozenSet[int]:
        """Units of ``constant`` (pruned slices constant at this layer's input) that the layer absorbs into its bias
        (see :mod:`.constant_channels`); those it cannot absorb are pinned here, naming why. Returns the absorbed."""
        if not constant:
            return frozenset()
        blocker = fold_blocker(self, node)
        if blocker is not None:
            self._pin_nonzero_units(constant, f"pruned channels reach '{node.call.name}' in "
                                              f"{node.scope or 'the model'} without being zero there",
                                    f": a constant, which the layer cannot fold into its bias since {blocker}")
            return constant
        axis = axis % len(self.shape(x))
        record_fold(self, node, x, axis, self.constant_folds)
        return constant

    def _zeroed_columns(self, node, weight: Optional[str], live: FrozenSet[int]) -> FrozenSet[int]:
        """Units of ``live`` (nonzero at this layer's input) removed through the layer's input columns instead
        (see :meth:`prune_through_consumer_columns`): a trainable linear weight whose output axis carries no unit
        is claimed along its input axis, so those columns are zeroed with their units. Returns the units."""
        allowed = frozenset().union(*(self.units(space) for space in self._through_consumers))
        units = live & allowed
        if not units or weight is None or node.op_kind.op_name != "linear":
            return frozenset()
        value = self.graph.values[weight]
        axes = self.axes(weight)
        if value.kind != "param" or not value.requires_grad or self.units(axes[0]) or not units <= self.units(axes[-1]):
            return frozenset()
        self.owner_axis[weight] = len(axes) - 1
        return units

    def _norm_rule(self, node, out, refs, nz) -> FrozenSet[int]:
        x = refs[0]
        channel_units = self.units(self.axes(x)[1])
        name = node.op_kind.op_name
        weight_index = node.op_kind.weight_index
        weight = node.value_arg(weight_index if weight_index is not None else -1, "weight")
        zeroed = weight is not None and self.graph.values[weight].requires_grad
        if name == "batchnorm" and not zeroed:
            return nz(x) | channel_units
        if name == "instancenorm" and not zeroed and not node.arg(5, "use_input_stats", True):
            return nz(x) | channel_units
        if weight is not None and not zeroed:
            return nz(x) | channel_units
        return nz(x) - channel_units

    def _custom_rule(self, node, out, refs, nz) -> FrozenSet[int]:
        name = node.op_kind.op_name
        if name == "matmul":
            return self._matmul_rule(node, out, refs, nz)
        if name == "matvec":
            a, b = refs[:2]
            contracted = self.units(self.axes(a)[-1])
            self._pin_units(contracted & nz(a) & nz(b), f"'{node.call.name}' contracts pruned slices that are not zero")
            return nz(a) & self.value_units(out)
        if name == "attention":
            # A head is zero where its values are; a query head without values of its own (multi-query attention)
            # averages the shared values, so it is not.
            value = node.value_arg(2, "value")
            return nz(value) | (self.value_units(out) - self.value_units(value))
        if name == "reduce":
            x = refs[0]
            reduced = node.cfg_params.get("reduced_axes", [])
            axes = self.axes(x)
            for k in reduced:
                self._pin_units(self.units(axes[k]) & nz(x), f"'{node.call.name}' sums pruned slices that are not zero")
            return nz(x)
        if name == "clamp":
            return nz(refs[0]) if _keeps_zero(node) else self.value_units(out)
        if name == "pow":
            exponent = node.arg(1, "exponent")
            base = node.arg(0, "input")
            if isinstance(base, ValueRef) and isinstance(exponent, (int, float)) and exponent > 0:
                return nz(base.value_id)
            return self.value_units(out)
        return self.value_units(out)

    def _matmul_rule(self, node, out, refs, nz) -> FrozenSet[int]:
        if node.call.name == "addmm":
            bias, a, b = refs[0], refs[1], refs[2]
        else:
            bias, (a, b) = None, refs[:2]
        contracted = self.units(self.axes(a)[-1])
        self._pin_units(contracted & nz(a) & nz(b), f"'{node.call.name}' contracts pruned slices that are not zero")
        out_axes = self.axes(out)
        rows, cols = self.units(out_axes[-2]), self.units(out_axes[-1])
        result = set((nz(a) & rows) | (nz(b) & cols))
        for uid in self.value_units(out) - rows - cols:
            holders = [r for r in (a, b) if uid in self.value_units(r)]
            if all(uid in nz(r) for r in holders):
                result.add(uid)
        if bias is not None:
            result |= nz(bias) | (self.value_units(out) - self.value_units(bias))
        return frozenset(result)


def _keeps_zero(node) -> bool:
    """Whether a clamp/threshold call maps 0 to 0."""
    name = node.call.name.rstrip("_")
    if name == "threshold":
        threshold, value = node.arg(1, "threshold"), node.arg(2, "value")
        return value == 0 or (isinstance(threshold, (int, float)) and threshold < 0)
    if name == "clamp_min":
        low, high = node.arg(1, "min"), None
    elif name == "clamp_max":
        low, high = None, node.arg(1, "max")
    else:
        low, high = node.arg(1, "min"), node.arg(2, "max")
    if isinstance(low, ValueRef) or isinstance(high, ValueRef):
        return False
    return (low is None or low <= 0) and (high is None or high >= 0)


def _is_nonzero_number(value) -> bool:
    return isinstance(value, (int, float, complex)) and not isinstance(value, bool) and value != 0


def _shape_literals(node) -> Optional[List[Tuple[int, int]]]:
    """``(output axis, literal size)`` for the integers a view/reshape/expand call spelled out."""
    name = node.call.name
    args = node.call.args
    if name in ("view", "reshape", "expand", "broadcast_to"):
        sizes = args[1:]
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = sizes[0]
        if "shape" in node.call.kwargs:
            sizes = node.call.kwargs["shape"]
        if "size" in node.call.kwargs:
            sizes = node.call.kwargs["size"]
    elif name == "unflatten":
        dim = int(node.arg(1, "dim"))
        sizes_arg = node.arg(2, "sizes")
        ndim_in = len(node.input_shape[0]) if node.input_shape else 0
        dim = dim + ndim_in if dim < 0 else dim
        return [(dim + k, s) for k, s in enumerate(sizes_arg)]
    else:
        return None
    if not all(isinstance(s, int) for s in sizes):
        return None
    return list(enumerate(sizes))


def _exact_attribute(literal) -> Optional[Tuple[str, str]]:
    if isinstance(literal, TracedInt) and literal.exact:
        ((kind, module_name, attribute),) = literal.sources
        if kind == "attr":
            return module_name, attribute
    return None


_ARITHMETIC_OPS = frozenset({"mul", "div", "add", "pow"})
_ELEMENT_ATTRIBUTE = re.compile(r"\w+\[\d+\]")


def _size_scalars(template, arithmetic: bool):
    """The traced numbers among a call's arguments used as values: every :class:`TracedFloat`, and the
    :class:`TracedInt` operands of arithmetic calls (elsewhere ints are sizes and dims, checked on their own)."""
    if isinstance(template, TracedFloat) or (arithmetic and isinstance(template, TracedInt)):
        yield template
    elif isinstance(template, (list, tuple)):
        for item in template:
            yield from _size_scalars(item, arithmetic)
    elif isinstance(template, dict):
        for item in template.values():
            yield from _size_scalars(item, arithmetic)


def _has_shape_source(literal) -> bool:
    return any(kind == "shape" for kind, _, _ in getattr(literal, "sources", ()))



class AnalysisResult:
    """What the ``analyze_spaces`` pass returns (``graph.analysis``): read-only queries over a finished
    :class:`SpaceAnalysis`, without the context methods (``pin``, ``claim``, ``set_axes``...) the catalogue's rules
    use while it runs."""

    def __init__(self, analysis: SpaceAnalysis):
        self._analysis = analysis

    @property
    def spaces(self) -> SpaceSet:
        """The index spaces and their unions, factorisations and pins."""
        return self._analysis.spaces

    @property
    def owner_axis(self) -> Mapping[str, int]:
        """Parameter value id -> the axis pruned with its group."""
        return MappingProxyType(self._analysis.owner_axis)

    @property
    def unknown_operators(self) -> Tuple[UnknownOperator, ...]:
        return tuple(self._analysis.unknown_operators)

    @property
    def literal_updates(self) -> Tuple[LiteralUpdate, ...]:
        """Module attributes holding sizes that pruning changes, with where to read their new values."""
        return tuple(self._analysis.literal_updates)

    @property
    def constant_folds(self) -> Tuple[ConstantFold, ...]:
        """Layers that absorb pruned constant channels of their input into their bias."""
        return tuple(self._analysis.constant_folds.values())

    @property
    def standardised_convs(self) -> Tuple[str, ...]:
        """Names of the convolutions whose forward standardises their weight."""
        return tuple(self._analysis.standardised_convs)

    def axes(self, value_id: str) -> List[Space]:
        """The space of each axis of traced value ``value_id``."""
        return self._analysis.axes(value_id)

    def mapped_axes(self, value_id: str) -> Tuple[MappedAxis, ...]:
        """Axes of parameter ``value_id`` whose indices map to units (a mixture of experts' tensors)."""
        return tuple(self._analysis.mapped_axes.get(value_id, ()))

    def mapped_owner(self, value_id: str) -> Optional[MappedAxis]:
        """The mapped axis parameter ``value_id`` is pruned along with its group, if it has one."""
        return self._analysis.mapped_owner.get(value_id)

    def mapped_owners(self, mapped: MappedAxis) -> Owners:
        """``(unit uids, unit indices)`` owning each index of a mapped axis."""
        uids, indices = self.owners(mapped.space)
        return uids[mapped.index], indices[mapped.index]

    def owners(self, space: Space) -> Owners:
        """``(unit uids, unit indices)`` owning each element of ``space`` (uid -1 where not prunable)."""
        return self._analysis.owners(space)

    def units(self, space: Space) -> FrozenSet[int]:
        return self._analysis.units(space)

    def value_units(self, value_id: str) -> FrozenSet[int]:
        return self._analysis.value_units(value_id)

    def unit_space(self, uid: int) -> Space:
        return self._analysis.unit_space(uid)

#: The passes of :meth:`SpaceAnalysis.run`, in order (the analysis is their target).
ANALYSIS_PASSES = (
    Pass("propagate", SpaceAnalysis.propagate_all, "analysis"),
    Pass("pin_model_outputs", SpaceAnalysis.pin_model_outputs, "analysis"),
    Pass("choose_bare_param_axes", SpaceAnalysis.choose_bare_param_axes, "analysis"),
    Pass("resolve_owners", SpaceAnalysis.resolve_owners, "analysis"),
    Pass("check_splits", SpaceAnalysis.check_splits, "analysis"),
    Pass("check_literal_shapes", SpaceAnalysis.check_literal_shapes, "analysis"),
    Pass("check_size_scalars", SpaceAnalysis.check_size_scalars, "analysis"),
    Pass("resolve_owners", SpaceAnalysis.resolve_owners, "analysis"),
    Pass("zero_flow", SpaceAnalysis.zero_flow, "analysis"),
    Pass("resolve_owners", SpaceAnalysis.resolve_owners, "analysis"),
)
