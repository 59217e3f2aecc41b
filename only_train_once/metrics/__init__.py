"""Cost metrics over the traced graph: FLOPs, MACs, BOPs, parameter count, weight size, average bit width.

MACs of a node come from its catalogue entry (conv, transposed conv, linear, activation matmuls and
attention); FLOPs count multiplications, as the reference does, so they equal MACs. BOPs multiply a node's
MACs by its module's weight and activation bit widths (32 for float layers). Weight size counts each module's
own parameters once, at its weight bit width, in bits.
"""

from __future__ import annotations

from typing import Dict, List

from torch import nn


def _scale(value: float, in_million: bool, in_billion: bool) -> float:
    if in_million:
        return value / 1e6
    if in_billion:
        return value / 1e9
    return value


def node_macs(graph, node) -> float:
    kind = node.op_kind
    if kind is None or kind.macs is None:
        return 0.0
    return float(kind.macs(node, graph))


def _group_of(graph) -> Dict[str, str]:
    owner: Dict[str, str] = {}
    for group_id, group in graph.node_groups.items():
        for node_id in group.nodes:
            owner.setdefault(node_id, group_id)
    return owner


def _per_node(graph, values: Dict[str, float], in_million: bool, in_billion: bool) -> dict:
    owner = _group_of(graph)
    by_groups: Dict[str, float] = {group_id: 0.0 for group_id in graph.node_groups}
    for node_id, value in values.items():
        if node_id in owner:
            by_groups[owner[node_id]] += value
    return {"total": _scale(sum(values.values()), in_million, in_billion),
            "by_node_groups": {k: _scale(v, in_million, in_billion) for k, v in by_groups.items()},
            "by_nodes": {k: _scale(v, in_million, in_billion) for k, v in values.items()}}


def _ordered_nodes(graph) -> List:
    """Nodes in node-group order, then the nodes outside any group (reference ``layer_info`` order)."""
    ordered: Dict[str, object] = {}
    for group in graph.node_groups.values():
        for node_id, node in group.nodes.items():
            ordered.setdefault(node_id, node)
    for node_id, node in graph.nodes.items():
        ordered.setdefault(node_id, node)
    return list(ordered.values())


def compute_flops(graph, in_million: bool = True, in_billion: bool = False) -> dict:
    return _per_node(graph, {n.id: node_macs(graph, n) for n in graph.nodes.values()}, in_million, in_billion)


def compute_macs(graph, in_million: bool = True, in_billion: bool = False, layerwise: bool = False) -> dict:
    macs = {n.id: node_macs(graph, n) for n in graph.nodes.values()}
    result = _per_node(graph, macs, in_million, in_billion)
    if layerwise:
        result["layer_info"] = [{"name": n.id, "type": n.op_name, "macs": _scale(macs[n.id], in_million, in_billion)}
                                for n in _ordered_nodes(graph)]
    return result


def compute_bops(graph, in_million: bool = True, in_billion: bool = False, layerwise: bool = False) -> dict:
    bops, info = {}, []
    for node in _ordered_nodes(graph):
        weight_bit, activation_bit = node.op.weight_bit, node.op.activation_bit
        bops[node.id] = node_macs(graph, node) * weight_bit * activation_bit
        info.append({"name": node.id, "type": node.op_name, "weight_bitwidth": weight_bit,
                     "activation_bitwidth": activation_bit, "bops": _scale(bops[node.id], in_million, in_billion)})
    result = _per_node(graph, bops, in_million, in_billion)
    if layerwise:
        result["layer_info"] = info
    return result


def compute_num_params(model: nn.Module, in_million: bool = True, in_billion: bool = False) -> float:
    return _scale(float(sum(p.numel() for p in model.parameters())), in_million, in_billion)


def compute_weight_size(graph, in_million: bool = True, in_billion: bool = False, layerwise: bool = False) -> dict:
    """Bits to store the weights: each module's own parameters once, at the module's weight bit width."""
    counted = set()
    sizes: Dict[str, float] = {}
    info = []
    for node in _ordered_nodes(graph):
        op = node.op
        size, num_params = 0.0, 0
        key = id(op.module) if op.module is not None else None
        if op.num_params and key not in counted:
            if key is not None:
                counted.add(key)
            num_params, size = op.num_params, op.weight_size
        sizes[node.id] = size
        info.append({"name": node.id, "type": node.op_name, "weight_bitwidth": op.weight_bit,
                     "num_params": num_params, "weight_size": _scale(size, in_million, in_billion)})
    result = _per_node(graph, sizes, in_million, in_billion)
    if layerwise:
        result["layer_info"] = info
    return result


def print_layer_breakdown(macs_info: dict, bops_info: dict) -> None:
    """Print a table of per-layer MACs and BOPs from ``compute_macs/compute_bops(layerwise=True)`` results."""
    if "layer_info" not in macs_info or "layer_info" not in bops_info:
        print("Error: No layer information found in the provided data")
        return
    print("Layer-by-layer breakdown:")
    print(f"{'Layer':<30}{'Type':<15}{'MACs (M)':<15}{'BOPs (M)':<15}")
    print("-" * 75)
    total_macs = total_bops = 0.0
    for macs, bops in zip(macs_info["layer_info"], bops_info["layer_info"]):
        print(f"{macs['name']:<30}{macs['type']:<15}{macs['macs']:<15.2f}{bops['bops']:<15.2f}")
        total_macs += macs["macs"]
        total_bops += bops["bops"]
    print("-" * 75)
    print(f"Total MACs: {total_macs:.2f} M")
    print(f"Total BOPs: {total_bops:.2f} M")
