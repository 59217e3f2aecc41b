"""The traced graph: one IR shared by every pass (QADG folding, dependency analysis, metrics, drawing)."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from ..compat import ReferenceGraphMethods
from ..operation import catalogue
from ..operation.operator import Operator
from ..operation.registry import opaque_call_name
from ..passes import run_passes
from ..utils import warn_ignored
from .lint import lint_graph
from .node import Node
from .node_group import GroupSet
from .trace import CaptureResult, ValueRef, capture, map_value_refs, node_id_at

logger = logging.getLogger(__name__)

# Catalogue kinds whose nodes are named after the traced function itself (``relu``, ``add``...).
_NAMED_BY_CALL = frozenset({"elementwise", "add", "mul", "div", "reduce", "softmax", "constant", "pow", "slice",
                            "setitem", "expand", "repeat", "unbind", "stack", "pad", "resize", "split"})
_ALIASES = {"radd": "add", "iadd": "add", "rmul": "mul", "imul": "mul", "truediv": "div", "rtruediv": "div",
            "itruediv": "div", "isub": "sub", "rsub": "sub", "getitem": "slice", "rmatmul": "matmul"}


def op_name_of(call_name: str) -> str:
    """The node op name of a traced call (``__radd__`` -> ``add``, ``conv2d`` -> ``conv``)."""
    kind = catalogue.lookup(call_name)
    if kind is not None and kind.op_name not in _NAMED_BY_CALL:
        return kind.op_name
    clean = call_name.strip("_")
    return _ALIASES.get(clean, clean)


class Graph(ReferenceGraphMethods):
    """A model's computation as nodes and edges.

    Build it with ``Graph(model, dummy_input)``. ``nodes`` maps node ids to :class:`Node` in execution order;
    successors and predecessors are kept as maps so every neighbour look-up is O(1). ``values`` describes
    every tensor seen (shape, kind, producing node). The constructor runs the ``graph`` stage of
    :data:`only_train_once.passes.pipeline.PIPELINE`; ``node_groups`` and ``analysis`` show the results of the
    ``groups`` stage, run by :func:`only_train_once.dependency_graph.build_pruning_dependency_graph`.
    """

    def __init__(self, model: Optional[nn.Module] = None, dummy_input: Any = None, trace_onnx: bool = True,
                 skip_patterns: Union[None, str, Sequence[str]] = None, strict_out_nodes: bool = False):
        if skip_patterns is not None and not isinstance(skip_patterns, (str, list, tuple)):
            raise ValueError("skip_patterns must be None, a string such as 'conv->relu', or a list of such strings")
        if isinstance(skip_patterns, str):
            skip_patterns = [skip_patterns]
        self._model = model
        self.dummy_input = dummy_input
        self.trace_onnx = trace_onnx
        if not trace_onnx:
            warn_ignored("Graph", "trace_onnx", "the graph is always captured from the model's torch operations")
        self.skip_patterns = list(skip_patterns or [])
        self.strict_out_nodes = strict_out_nodes
        self.nodes: "OrderedDict[str, Node]" = OrderedDict()
        self._succ: Dict[str, Dict[str, None]] = {}
        self._pred: Dict[str, Dict[str, None]] = {}
        self.values: Dict[str, Any] = {}
        self.input_values: List[str] = []
        self.output_values: List[str] = []
        self.modules: Dict[str, nn.Module] = {}
        self.parameters: Dict[str, nn.Parameter] = {}
        self.buffers: Dict[str, torch.Tensor] = {}
        #: What each pass returned, by pass name (see :mod:`only_train_once.passes.pipeline`); ``analysis`` and
        #: ``node_groups`` are read-only views of it.
        self.results: Dict[str, Any] = {}
        self.theme = None
        if model is None:
            return
        from ..passes.pipeline import stage
        run_passes(stage("graph"), self, self.results, lint=self.lint)

    # -- results of the passes ------------------------------------------------------------------------
    @property
    def analysis(self):
        """The ``AnalysisResult`` of the last ``analyze_spaces`` pass (which unit owns each parameter slice), None
        before it ran."""
        return self.results.get("analyze_spaces")

    @property
    def node_groups(self) -> GroupSet:
        """Group id -> :class:`NodeGroup`, as built by the last ``build_groups`` pass (empty before it ran)."""
        groups = self.results.get("build_groups")
        return GroupSet() if groups is None else groups

    @property
    def unit_map(self):
        """The :class:`~only_train_once.graph.unit_map.UnitMap` of the last ``build_groups`` pass (which unit owns
        each index of every parameter and buffer axis), None before it ran."""
        return self.node_groups.unit_map

    @property
    def node_group_clusters(self) -> Dict[int, list]:
        """Cluster id -> groups, from the last :meth:`cluster_node_groups` (empty before)."""
        return self.results.get("cluster_node_groups", {})

    @property
    def params_grad(self) -> Dict[str, nn.Parameter]:
        """The parameters that require gradients, by name."""
        return {n: p for n, p in self.parameters.items() if p.requires_grad}

    @property
    def params_no_grad(self) -> Dict[str, torch.Tensor]:
        """The parameters that do not require gradients, and the buffers, by name."""
        trained = self.params_grad
        return {n: t for n, t in {**self.parameters, **self.buffers}.items() if n not in trained}

    def lint(self) -> None:
        """Check the IR's invariants; raises :class:`~only_train_once.graph.lint.GraphInvariantError`
        naming the first one broken (the invariants: :data:`only_train_once.graph.lint.INVARIANTS`)."""
        lint_graph(self, self._succ, self._pred)

    # -- construction ---------------------------------------------------------------------------------
    def index_model(self) -> None:
        """Pass ``index_model``: one walk over the module tree: modules, parameters and buffers by name (first
        name wins)."""
        self.module_names: Dict[int, str] = {}
        self.tensor_names: Dict[int, tuple] = {}
        for module_name, module in self.root_module.named_modules():
            self.modules[module_name] = module
            self.module_names[id(module)] = module_name
            prefix = module_name + "." if module_name else ""
            for store, kind, target in ((module._parameters, "param", self.parameters),
                                        (module._buffers, "buffer", self.buffers)):
                for key, tensor in store.items():
                    if tensor is None or id(tensor) in self.tensor_names:
                        continue
                    self.tensor_names[id(tensor)] = (prefix + key, kind)
                    target[prefix + key] = tensor
        self.param_names = list(self.parameters) + list(self.buffers)

    def capture(self) -> int:
        """Pass ``capture``: run the model on the dummy input and build the IR from the recorded calls; returns how
        many calls were recorded (the recording itself is not kept: the calls of dead nodes would stay alive)."""
        result = capture(self.root_module, self.dummy_input, self.module_names, self.tensor_names, opaque_call_name)
        self._build(result)
        return len(result.calls)

    def _build(self, result: CaptureResult) -> None:
        self.values = result.values
        self.input_values = list(result.input_values)
        self.output_values = list(result.output_values)
        activation_kinds = ("input", "activation")
        for index, call in enumerate(result.calls):
            inputs = [v for v in call.inputs if self.values[v].kind in activation_kinds]
            param_names = [name for v in call.inputs
                           if self.values[v].kind in ("param", "buffer") and (name := self.values[v].name) is not None]
            node = Node(call, op_name_of(call.name), inputs, list(call.outputs), param_names,
                        [self.values[v].shape for v in inputs],
                        self.values[call.outputs[0]].shape if call.outputs else None, index)
            self.nodes[node.id] = node
            self._succ[node.id] = {}
            self._pred[node.id] = {}
            for value_id in inputs:
                producer = self.values[value_id].producer
                if producer is not None and producer in self.nodes:
                    self._link(producer, node.id)

    def _link(self, src: str, dst: str) -> None:
        self._succ[src][dst] = None
        self._pred[dst][src] = None

    def remove_dead_nodes(self) -> int:
        """Pass ``remove_dead_nodes``: drop nodes that do not contribute to any model output (shape arithmetic,
        calibration, dead code); returns how many were dropped."""
        alive = set()
        stack = [self.values[v].producer for v in self.output_values if self.values[v].producer in self.nodes]
        while stack:
            node_id = stack.pop()
            if node_id in alive:
                continue
            alive.add(node_id)
            stack.extend(self._pred[node_id])
        dead = [n for n in self.nodes if n not in alive]
        for node_id in dead:
            self.remove_node(self.nodes[node_id])
        return len(dead)

    def apply_skip_patterns(self) -> int:
        """Pass ``skip_patterns``: remove the chains named by ``skip_patterns``; returns the number of nodes removed."""
        return sum(self.skip_pattern(pattern) for pattern in self.skip_patterns)

    def renumber(self) -> None:
        """Pass ``renumber``: number the remaining nodes consecutively, so a quantized model gets its float twin's
        node ids."""
        mapping = {old: node_id_at(k) for k, old in enumerate(self.nodes)}
        nodes = OrderedDict()
        for index, (old, node) in enumerate(self.nodes.items()):
            node.index = index
            node.id = node.call.id = mapping[old]
            nodes[node.id] = node
        for value in self.values.values():
            if value.producer is not None:
                value.producer = mapping.get(value.producer)
        self._succ = {mapping[k]: {mapping[d]: None for d in v} for k, v in self._succ.items()}
        self._pred = {mapping[k]: {mapping[d]: None for d in v} for k, v in self._pred.items()}
        self.nodes = nodes

    def attach_operators(self) -> None:
        """Pass ``attach_operators``: give every node its catalogue entry and its operator description."""
        modules = self.modules
        named_params = {**self.parameters, **self.buffers}
        for node in self.nodes.values():
            node.op_kind = catalogue.lookup(node.call.name)
            module_name = None
            if node.all_param_names:
                module_name = node.all_param_names[0].rpartition(".")[0]
            module = modules.get(module_name) if module_name is not None else None
            node.op = Operator(node, module, module_name, named_params)

    # -- adjacency ------------------------------------------------------------------------------------
    def successors(self, node: Union[Node, str]) -> List[Node]:
        node_id = node if isinstance(node, str) else node.id
        return [self.nodes[n] for n in self._succ[node_id]]

    def predecessors(self, node: Union[Node, str]) -> List[Node]:
        node_id = node if isinstance(node, str) else node.id
        return [self.nodes[n] for n in self._pred[node_id]]

    def remove_node(self, node: Node, reconnect: bool = False) -> None:
        """Delete ``node``; with ``reconnect`` its predecessors are linked to its successors."""
        preds, succs = list(self._pred[node.id]), list(self._succ[node.id])
        for p in preds:
            self._succ[p].pop(node.id, None)
        for s in succs:
            self._pred[s].pop(node.id, None)
        if reconnect:
            for p in preds:
                for s in succs:
                    self._link(p, s)
        del self._succ[node.id], self._pred[node.id], self.nodes[node.id]

    def replace_input(self, node: Node, old: str, new: str) -> None:
        """Make ``node`` read value ``new`` wherever it read ``old``: its argument template, its value lists, its
        parameter names (when ``new`` is a parameter or buffer) and its incoming edges all follow."""
        call = node.call
        swap = lambda ref: ValueRef(new) if ref.value_id == old else ref  # noqa: E731
        call.args, call.kwargs = map_value_refs(call.args, swap), map_value_refs(call.kwargs, swap)
        node.invalidate_arguments()
        call.inputs = [new if v == old else v for v in call.inputs]
        value = self.values[new]
        if value.kind in ("param", "buffer"):
            node.inputs = [v for v in node.inputs if v != old]
            position = len([v for v in call.inputs[:call.inputs.index(new)]
                            if self.values[v].kind in ("param", "buffer")])
            node.param_names.insert(position, value.name)
        else:
            node.inputs = [new if v == old else v for v in node.inputs]
        self._relink_inputs(node)

    def _relink_inputs(self, node: Node) -> None:
        """Make ``node``'s incoming edges those from the producers of the values it reads (edges that stay keep
        their place, so neighbour order, and with it group order, does not change)."""
        producers = dict.fromkeys(p for p in (self.values[v].producer for v in node.inputs) if p in self.nodes)
        for src in [s for s in self._pred[node.id] if s not in producers]:
            self._succ[src].pop(node.id, None)
            self._pred[node.id].pop(src)
        for src in producers:
            if src not in self._pred[node.id]:
                self._link(src, node.id)

    @property
    def edges(self) -> List[tuple]:
        """``(src_id, dst_id, label)`` for every edge, in node order."""
        return [(src, dst, None) for src, dsts in self._succ.items() for dst in dsts]

    def shape(self, value_id: str):
        """Shape of a traced tensor."""
        return self.values[value_id].shape

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def outgoing(self, nodes: Union[Node, Iterable[Node]]) -> List[Node]:
        """Successors of ``nodes`` outside the set."""
        members = [nodes] if isinstance(nodes, Node) else list(nodes)
        ids = {n.id for n in members}
        seen: Dict[str, None] = {}
        for n in members:
            for s in self._succ[n.id]:
                if s not in ids:
                    seen[s] = None
        return [self.nodes[s] for s in seen]

    def incoming(self, nodes: Union[Node, Iterable[Node]]) -> List[Node]:
        """Predecessors of ``nodes`` outside the set."""
        members = [nodes] if isinstance(nodes, Node) else list(nodes)
        ids = {n.id for n in members}
        seen: Dict[str, None] = {}
        for n in members:
            for p in self._pred[n.id]:
                if p not in ids:
                    seen[p] = None
        return [self.nodes[p] for p in seen]

    @property
    def input_nodes(self) -> List[Node]:
        inputs = set(self.input_values)
        return [n for n in self.nodes.values() if any(v in inputs for v in n.inputs)]

    @property
    def output_nodes(self) -> List[Node]:
        producers = [self.values[v].producer for v in self.output_values]
        return [self.nodes[p] for p in dict.fromkeys(producers) if p in self.nodes]

    @property
    def root_module(self) -> nn.Module:
        if self._model is None:
            raise RuntimeError("this Graph was made without a model: pass the model to Graph(model, dummy_input)")
        return self._model

    @property
    def inputs(self) -> List[str]:
        return list(self.input_values)

    # -- skip patterns --------------------------------------------------------------------------------
    def skip_pattern(self, pattern: str) -> int:
        """Remove every chain of nodes whose op names match ``"a->b->c"``; returns the number removed.

        Nodes left without a path to a model output are removed too. The result is no longer the model's
        exact computation, so a warning is logged: use it only to hide sub-graphs the analyzer should ignore.
        """
        names = [p.strip().lower() for p in re.split(r"->|>", pattern) if p.strip()]
        if not names:
            raise ValueError(f"empty skip pattern {pattern!r}: use op names joined by '->', e.g. 'conv->relu'")
        matched: Dict[str, None] = {}
        for node in list(self.nodes.values()):
            for chain in self._match_chain(node, names):
                matched.update(dict.fromkeys(chain))
        for node_id in matched:
            self.remove_node(self.nodes[node_id])
        self.remove_dead_nodes()
        if matched:
            logger.warning("skip pattern %r removed %d nodes; the analysis no longer sees the model's exact "
                           "computation, so check the compressed model's outputs", pattern, len(matched))
        return len(matched)

    def _match_chain(self, node: Node, names: List[str]) -> List[List[str]]:
        if node.op_name != names[0]:
            return []
        if len(names) == 1:
            return [[node.id]]
        chains = []
        for succ in self.successors(node):
            for rest in self._match_chain(succ, names[1:]):
                chains.append([node.id] + rest)
        return chains

    # -- passes over the graph (thin delegations kept from the reference API) -------------------------
    def get_param_groups(self) -> List[dict]:
        from ..dependency_graph import param_groups
        return param_groups.get_param_groups(self)

    def set_trainable(self) -> None:
        from ..dependency_graph import param_groups
        param_groups.set_trainable(self)

    def cluster_node_groups(self, num_clusters: int = 1) -> Dict[int, list]:
        from ..dependency_graph import param_groups
        clusters = param_groups.cluster_node_groups(self, num_clusters)
        self.results["cluster_node_groups"] = clusters
        return clusters

    def random_set_zero_groups(self, target_group_sparsity: Optional[float] = None,
                               num_group_divisible: int = 2) -> None:
        from ..dependency_graph import param_groups
        param_groups.random_set_zero_groups(self, target_group_sparsity, num_group_divisible)

    def compute_flops(self, in_million: bool = True, in_billion: bool = False) -> dict:
        from .. import metrics
        return metrics.compute_flops(self, in_million, in_billion)

    def compute_macs(self, in_million: bool = True, in_billion: bool = False, layerwise: bool = False) -> dict:
        from .. import metrics
        return metrics.compute_macs(self, in_million, in_billion, layerwise)

    def compute_bops(self, in_million: bool = True, in_billion: bool = False, layerwise: bool = False) -> dict:
        from .. import metrics
        return metrics.compute_bops(self, in_million, in_billion, layerwise)

    def compute_weight_size(self, in_million: bool = True, in_billion: bool = False, layerwise: bool = False) -> dict:
        from .. import metrics
        return metrics.compute_weight_size(self, in_million, in_billion, layerwise)

    def build_dot(self, vertical: bool = False, by_node_groups: bool = True, display_params: bool = True,
                  display_flops: bool = True, display_macs: bool = True):
        from .. import visualization
        return visualization.build_dot(self, vertical, by_node_groups, display_params, display_flops, display_macs)

    def __repr__(self) -> str:
        return f"Graph({len(self.nodes)} nodes, {len(self.node_groups)} node groups)"
