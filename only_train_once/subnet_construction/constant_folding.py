"""Fold pruned constant channels into the bias of the layer that reads them (see
:mod:`only_train_once.dependency_graph.constant_channels`).

Before the tensors shrink, the full group-sparse model runs once on the traced dummy input; a hook on every folding
layer reads the constant ``c`` of each removed input channel (checked equal at every position), and the layer's
contribution from those channels alone, ``layer(c) - layer(0)``, becomes a constant per output channel. After the
tensors shrink it is added to the layer's bias (a bias is created where the layer had none). Weight+activation
layers quantize ``c`` on the way in; the rounding-bypassed contribution rides along on the bias (see
:data:`~only_train_once.quantization.rounding.EXACT_BIAS_OFFSET`) so that the verifier's exact comparison stays exact.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Tuple, cast

import torch
from torch import nn

from ..graph.inputs import copy_input
from ..quantization.rounding import EXACT_BIAS_OFFSET, ActivationRoundingBypassed
from ..utils import eval_mode, run_model
from .plan import MaskLookup, PruningPlan, removed_mask
from .verification import SubnetConstructionError

#: A removed channel must be constant to this relative precision across positions (float rounding only).
CONSTANT_TOLERANCE = 1e-5


def folded_contributions(graph, model: nn.Module, masks: MaskLookup) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """Per folding layer (module name) with removed input channels: the contribution of those channels to each
    full output channel, with activation rounding and without it (equal for float layers)."""
    folds = []
    for fold in graph.analysis.constant_folds:
        removed = removed_mask(graph.analysis, graph.analysis.axes(fold.value_id)[fold.axis], masks)
        if removed.any():
            folds.append((fold, torch.from_numpy(removed)))
    if not folds:
        return {}
    modules = dict(model.named_modules())
    rounded = _contributions(graph, modules, folds)
    if not any(hasattr(m, "d_quant_act") for m in model.modules()):
        return {name: (delta, delta) for name, delta in rounded.items()}
    with ActivationRoundingBypassed():
        exact = _contributions(graph, modules, folds)
    return {name: (rounded[name], exact[name]) for name in rounded}


def add_folded_biases(model: nn.Module, contributions: Dict[str, Tuple[torch.Tensor, torch.Tensor]],
                      plan: PruningPlan, added: Dict[str, int]) -> None:
    """Add each layer's contribution (its kept output channels) to its bias, after the tensors shrank; the names and
    sizes of biases created go into ``added``. The tensors are new: the group check shares the originals."""
    for name, (rounded, exact) in contributions.items():
        module = model.get_submodule(name)
        kept = plan.keep.get(f"{name}.weight", {}).get(0)
        if kept is not None:
            rounded, exact = rounded[kept], exact[kept]
        if module.bias is None:
            added[name] = int(rounded.numel())
            weight = cast(torch.Tensor, module.weight)
            bias = nn.Parameter(rounded.to(weight.dtype), requires_grad=weight.requires_grad)
        else:
            old = cast(torch.Tensor, module.bias)
            bias = nn.Parameter(old.detach() + rounded.to(old.dtype), requires_grad=old.requires_grad)
        if not torch.equal(rounded, exact):
            setattr(bias, EXACT_BIAS_OFFSET, (exact - rounded).to(bias.dtype))
        module.bias = bias


def _contributions(graph, modules: Dict[str, nn.Module], folds: List) -> Dict[str, torch.Tensor]:
    model = modules[""]
    with _captured_inputs([modules[fold.module_name] for fold, _ in folds]) as inputs, eval_mode(model), \
            torch.no_grad():
        run_model(model, copy_input(graph.dummy_input))
    result = {}
    with torch.no_grad():
        for fold, removed in folds:
            module = modules[fold.module_name]
            constants = _removed_constants(inputs[id(module)], fold, removed)
            result[fold.module_name] = _contribution(module, constants, removed)
    return result


@contextlib.contextmanager
def _captured_inputs(layers: List[nn.Module]) -> Iterator[Dict[int, torch.Tensor]]:
    inputs: Dict[int, torch.Tensor] = {}

    def remember(module, args):
        inputs[id(module)] = args[0].detach()

    handles = [layer.register_forward_pre_hook(remember) for layer in layers]
    try:
        yield inputs
    finally:
        for handle in handles:
            handle.remove()


def _removed_constants(x: torch.Tensor, fold, removed: torch.Tensor) -> torch.Tensor:
    """The value of each removed channel of layer input ``x``, which must be the same at every position."""
    values = x.movedim(fold.axis, -1)[..., removed.to(x.device)].reshape(-1, int(removed.sum()))
    constants = values[0]
    spread = (values - constants).abs().max()
    if spread > CONSTANT_TOLERANCE * max(float(constants.abs().max()), 1.0):
        raise SubnetConstructionError(
            f"pruned channels read by {fold.module_name} vary by {float(spread):.3g} across positions, so they "
            "cannot be folded into its bias; please report the model (mark the group unprunable meanwhile)")
    return constants


def _contribution(module: nn.Module, constants: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """``module(c) - module(0)`` per output channel, for an input holding ``constants`` in the removed channels
    (one position of a Linear, one unpadded kernel window of a convolution)."""
    weight = cast(torch.Tensor, module.weight)
    if isinstance(module, nn.Linear):
        probe = torch.zeros(1, module.in_features, dtype=weight.dtype, device=weight.device)
        probe[0, removed.to(weight.device)] = constants.to(weight.dtype)
    else:
        conv: Any = module  # a convolution: its geometry is read by name
        window = [d * (k - 1) + 1 for k, d in zip(conv.kernel_size, conv.dilation)]
        probe = torch.zeros(1, conv.in_channels, *window, dtype=weight.dtype, device=weight.device)
        probe[0, removed.to(weight.device)] = constants.to(weight.dtype).view(-1, *[1] * len(window))
    delta = module(probe) - module(torch.zeros_like(probe))
    return delta.reshape(delta.shape[0], delta.shape[1], -1)[0, :, 0]
