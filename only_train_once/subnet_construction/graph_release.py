"""Let the traced graph release the data of the tensors ``construct_subnet`` replaces.

The graph keeps every parameter and buffer of the traced model (its groups read them while training, its
operator descriptions count them). Once
pruning has replaced a tensor by its shrunk form, the graph's reference alone would keep the full tensor alive
until the end: with every replaced tensor kept, ``construct_subnet`` held the full model and the compressed one
at once. Each replaced tensor is swapped in the graph for a data-free stand-in on the meta device with its shape,
dtype and ``requires_grad``: the graph still describes the model before pruning, and an optimizer built from it
afterwards still sees that the model's tensors changed (``StaleParametersError``).
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch
from torch import nn


def _stand_in(tensor: torch.Tensor) -> torch.Tensor:
    data = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
    return nn.Parameter(data, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else data


def graph_releaser(graph) -> Callable[[torch.Tensor], None]:
    """A callback for :func:`.apply.apply_plan`'s ``on_replaced``: the graph lets go of each replaced tensor."""
    members: Dict[int, List] = {}
    for group in graph.node_groups.values():
        for member in group.members:
            members.setdefault(id(member.tensor), []).append(member)
    names: Dict[int, List] = {}
    operators = [node.op for node in graph.nodes.values() if node.op is not None]
    for store in [graph.parameters, graph.buffers] + [op.name_to_param for op in operators]:
        for name, tensor in store.items():
            names.setdefault(id(tensor), []).append((store, name))

    def release(old: torch.Tensor) -> None:
        stand_in = _stand_in(old)
        for store, name in names.pop(id(old), ()):
            store[name] = stand_in
        for member in members.pop(id(old), ()):
            member.tensor = stand_in

    return release
