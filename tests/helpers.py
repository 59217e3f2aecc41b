"""Test helpers: group checks shared by the graph, subnet and optimizer tests."""

from __future__ import annotations

import copy
import os
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.dependency_graph import param_groups as group_ops
from only_train_once.utils import model_outputs


def outputs(model: nn.Module, dummy_input) -> List[torch.Tensor]:
    model.eval()  # callers compare later forwards too: the model stays in eval mode
    return model_outputs(model, dummy_input)


def max_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max(((x.double() - y.double()).abs().max().item() for x, y in zip(a, b) if x.numel()), default=0.0)


def group_summary(oto: OTO) -> List[tuple]:
    """(num_groups, prunable, auxiliary, sorted non-quantizer param names) per group."""
    summary = []
    for group in oto.groups:
        names = sorted(n for n in group.param_names if not any(q in n for q in ("d_quant", "q_m_", "t_quant",
                                                                               "act_calibrated")))
        summary.append((group.num_groups, group.is_prunable, group.is_auxiliary, tuple(names)))
    return summary


def prunable_groups(oto: OTO) -> list:
    return [g for g in oto.groups if g.is_prunable and not g.is_auxiliary]


def group_by_param(oto: OTO, name: str):
    return next(g for g in oto.groups if name in g.param_names)


def zero_units(oto: OTO, group, units: Sequence[int]) -> None:
    """Zero the given units of one group (and their slices in auxiliary groups)."""
    param_groups = group_ops.get_param_groups(oto.graph)
    start = next(pg["global_start_idx"] for pg in param_groups if pg["id"] == group.id)
    group_ops.zero_global_units(param_groups, torch.tensor([start + u for u in units], dtype=torch.long))


def mask_hooks(oto: OTO, group, units: Sequence[int]) -> list:
    """Forward hooks that zero the group's channels at the output of every module owning its parameters."""
    graph = oto.graph
    analysis = graph.analysis
    chosen = np.zeros(group.num_groups, dtype=bool)
    chosen[list(units)] = True
    masks: Dict[int, list] = {}
    modules: Dict[int, nn.Module] = {}
    for node in group.nodes.values():
        module = node.call.module
        if module is None or not node.param_names or not node.outputs:
            continue
        out = node.outputs[0]
        for axis, space in enumerate(analysis.axes(out)):
            uids, indices = analysis.owners(space)
            hit = uids == group.key
            if not hit.any():
                continue
            keep = np.ones(uids.shape, dtype=bool)
            keep[hit] = ~chosen[indices[hit]]
            masks.setdefault(id(module), []).append((graph.shape(out), axis, torch.from_numpy(keep)))
            modules[id(module)] = module

    def hook(module, _inputs, output):
        for shape, axis, keep in masks[id(module)]:
            if isinstance(output, torch.Tensor) and tuple(output.shape) == shape:
                view = [1] * output.dim()
                view[axis] = -1
                output = output * keep.to(output.dtype).view(view)
        return output

    _zero_bare_parameters(oto, group, units)
    return [m.register_forward_hook(hook) for m in modules.values()]


_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
           nn.Embedding, nn.PReLU)


def _zero_bare_parameters(oto: OTO, group, units: Sequence[int]) -> None:
    """Bare parameters (layer scale, position embeddings) have no layer to mask after: zero their slices."""
    graph = oto.graph
    chosen = set(units)
    for member in group.members:
        module_name = member.name.rpartition(".")[0]
        if member.axis is None or isinstance(graph.modules.get(module_name), _LAYERS) or not member.is_parameter:
            continue
        keys, indices = member.owners
        positions = [i for i in range(keys.size) if keys[i] == group.key and indices[i] in chosen]
        with torch.no_grad():
            member.tensor.index_fill_(member.axis, torch.tensor(positions, dtype=torch.long), 0)


def check_zero_invariance(model_factory, dummy_input, seed: int = 0, max_groups: int = 6) -> int:
    """For up to ``max_groups`` prunable groups: zeroing half its units == masking them after its layers.

    Returns the number of groups checked.
    """
    checked = 0
    torch.manual_seed(seed)
    reference_model = model_factory().eval()
    oto_probe = OTO(reference_model, dummy_input)
    groups = [g for g in prunable_groups(oto_probe) if g.num_groups > 1 and g.is_trainable][:max_groups]
    for group in groups:
        zeroed = copy.deepcopy(reference_model)
        masked = copy.deepcopy(reference_model)
        oto_zeroed = OTO(zeroed, dummy_input)
        oto_masked = OTO(masked, dummy_input)
        twin = oto_zeroed.graph.node_groups[group.id]
        units = list(range(0, group.num_groups, 2))
        zero_units(oto_zeroed, twin, units)
        handles = mask_hooks(oto_masked, oto_masked.graph.node_groups[group.id], units)
        try:
            expected = outputs(masked, dummy_input)
        finally:
            for handle in handles:
                handle.remove()
        actual = outputs(zeroed, dummy_input)
        scale = max(1.0, max(t.abs().max().item() for t in expected if t.numel()))
        assert max_difference(expected, actual) <= 1e-5 * scale, f"group {group.id} is not zero-invariant"
        checked += 1
    return checked


def assert_lossless_subnet(model: nn.Module, dummy_input, out_dir, sparsity=None, seed: int = 0,
                           tolerance: float = 1e-4, unprunable: Sequence[str] = ()) -> OTO:
    """random_set_zero_groups + construct_subnet; the reloaded compressed model matches the full one."""
    from only_train_once.subnet_construction import load_model

    np.random.seed(seed)
    oto = OTO(model, dummy_input)
    if unprunable:
        oto.mark_unprunable_by_param_names(list(unprunable))
    oto.random_set_zero_groups(sparsity)
    oto.construct_subnet(out_dir=str(out_dir), tolerance=tolerance)
    full = load_model(oto.full_group_sparse_model_path)
    compressed = load_model(oto.compressed_model_path)
    difference = max_difference(outputs(full, dummy_input), outputs(compressed, dummy_input))
    scale = max(1.0, max(t.abs().max().item() for t in outputs(full, dummy_input) if t.numel()))
    assert difference <= tolerance * scale, f"compressed model differs by {difference}"
    return oto


def flip_bit(path: str, from_end: int = 1) -> bytes:
    """Flip the lowest bit of the byte ``from_end`` bytes before the end of ``path`` (tensor data, past the header
    of a weights file); returns the original byte, so that ``restore_byte`` can undo it."""
    with open(path, "r+b") as handle:
        handle.seek(-from_end, os.SEEK_END)
        original = handle.read(1)
        handle.seek(-from_end, os.SEEK_END)
        handle.write(bytes([original[0] ^ 1]))
    return original


def restore_byte(path: str, original: bytes, from_end: int = 1) -> None:
    with open(path, "r+b") as handle:
        handle.seek(-from_end, os.SEEK_END)
        handle.write(original)
