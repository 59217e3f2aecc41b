"""``Graph.lint()``: the IR's invariants, checked one by one (the pass runner calls it after every pass in tests).

Each check names the invariant it guards, so a pass that corrupts the graph is caught at the pass, not three
passes later as a ``KeyError`` in an unrelated loop.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

from .trace import node_id_at

Adjacency = Dict[str, Dict[str, None]]


class GraphInvariantError(RuntimeError):
    """The graph IR broke one of its invariants (``invariant`` names it); a pass left the graph inconsistent."""

    def __init__(self, invariant: str, detail: str):
        super().__init__(f"graph invariant '{invariant}' broken: {detail}. This is a bug in the pass that ran last "
                         "(the error's note names it); please report it with this message")
        self.invariant = invariant


def _node_ids(graph, succ: Adjacency, pred: Adjacency) -> None:
    """Every node is stored under its own id, ``node-<index>``, and its recorded call carries the same id."""
    for key, node in graph.nodes.items():
        if key != node.id or node.id != node_id_at(node.index) or node.call.id != node.id:
            raise GraphInvariantError("node_ids", f"node stored as {key!r} has id {node.id!r}, index {node.index} "
                                      f"and call id {node.call.id!r}; all must be 'node-<index>'")


def _values_exist(graph, succ: Adjacency, pred: Adjacency) -> None:
    """Every value a node reads or writes, and every model input and output, is described in ``graph.values``."""
    for node in graph.nodes.values():
        for value_id in (*node.inputs, *node.outputs, *node.call.inputs):
            if value_id not in graph.values:
                raise GraphInvariantError("values_exist", f"{node.id} uses value {value_id!r}, unknown to the graph")
    for value_id in (*graph.input_values, *graph.output_values):
        if value_id not in graph.values:
            raise GraphInvariantError("values_exist", f"model input/output {value_id!r} is unknown to the graph")


def _producers(graph, succ: Adjacency, pred: Adjacency) -> None:
    """Each value a node outputs names that node as its producer."""
    for node in graph.nodes.values():
        for value_id in node.outputs:
            producer = graph.values[value_id].producer
            if producer != node.id:
                raise GraphInvariantError("producers", f"{node.id} outputs {value_id!r}, whose producer is "
                                          f"{producer!r}")


def _adjacency(graph, succ: Adjacency, pred: Adjacency) -> None:
    """The successor and predecessor maps cover exactly the graph's nodes and mirror each other."""
    if set(succ) != set(graph.nodes) or set(pred) != set(graph.nodes):
        stray = sorted((set(succ) | set(pred)) ^ set(graph.nodes))
        raise GraphInvariantError("adjacency", f"the adjacency maps and the node table disagree on {stray[:5]}")
    for src, dsts in succ.items():
        for dst in dsts:
            if src not in pred[dst]:
                raise GraphInvariantError("adjacency", f"edge {src} -> {dst} is a successor but not a predecessor")
    for dst, srcs in pred.items():
        for src in srcs:
            if dst not in succ[src]:
                raise GraphInvariantError("adjacency", f"edge {src} -> {dst} is a predecessor but not a successor")


def _edges_follow_values(graph, succ: Adjacency, pred: Adjacency) -> None:
    """There is an edge ``p -> n`` exactly when ``n`` reads an activation that ``p`` produced."""
    for node in graph.nodes.values():
        producers = {graph.values[v].producer for v in node.inputs} & graph.nodes.keys()
        if producers != set(pred[node.id]):
            missing, extra = sorted(producers - set(pred[node.id])), sorted(set(pred[node.id]) - producers)
            raise GraphInvariantError("edges_follow_values", f"{node.id} reads values of {missing} without an "
                                      f"edge from them, and has edges from {extra} without reading their values")


def _group_members(graph, succ: Adjacency, pred: Adjacency) -> None:
    """Every tensor a group holds is the model's parameter or buffer of that name."""
    named = {**graph.buffers, **graph.parameters}
    for group in graph.node_groups.values():
        for member in group.members:
            if named.get(member.name) is not member.tensor:
                raise GraphInvariantError("group_members", f"group {group.id} holds {member.name!r}, which is not "
                                          "that tensor of the model")


def _group_nodes(graph, succ: Adjacency, pred: Adjacency) -> None:
    """Every node of a group is a node of the graph, and lists the group among its ``node_group_ids``."""
    for group in graph.node_groups.values():
        for key, node in group.nodes.items():
            if graph.nodes.get(key) is not node or group.id not in node.node_group_ids:
                raise GraphInvariantError("group_nodes", f"group {group.id} holds node {key!r}, which is not the "
                                          "graph's node of that id or does not list the group")
    for node in graph.nodes.values():
        for group_id in node.node_group_ids:
            if group_id not in graph.node_groups:
                raise GraphInvariantError("group_nodes", f"{node.id} lists group {group_id!r}, which the graph "
                                          "does not have")


#: The invariants, in the order they are checked (later checks rely on the earlier ones).
INVARIANTS: Tuple[Tuple[str, Callable], ...] = (
    ("node_ids", _node_ids),
    ("values_exist", _values_exist),
    ("producers", _producers),
    ("adjacency", _adjacency),
    ("edges_follow_values", _edges_follow_values),
    ("group_members", _group_members),
    ("group_nodes", _group_nodes),
)


def lint_graph(graph, succ: Adjacency, pred: Adjacency) -> None:
    """Check every invariant of :data:`INVARIANTS`; raises :class:`GraphInvariantError` at the first broken one."""
    for _, check in INVARIANTS:
        check(graph, succ, pred)
