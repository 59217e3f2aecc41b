"""Run a model with its activation quantizers switched off (weights stay quantized).

Removing zeroed channels changes the order of floating-point sums by a few ulps; an activation that lands on a
rounding boundary then flips by one quantization step, so a fake-quantized model and its compressed twin can
differ by a few steps although they compute the same function. Comparisons made with activation rounding
bypassed are exact again; :func:`max_activation_step` bounds what rounding flips can add.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .quantizer import fake_quantize

#: Attribute of a layer bias that absorbed quantized constant input channels (pruned channels folded into the bias,
#: see ``subnet_construction.constant_folding``): what the bias becomes while activation rounding is bypassed.
EXACT_BIAS_OFFSET = "_oto_exact_offset"
_BIASED_CALLS = (torch._C._nn.linear, torch.conv1d, torch.conv2d, torch.conv3d)


class ActivationRoundingBypassed(TorchFunctionMode):
    """Inside this mode every activation ``fake_quantize`` call returns its input; weight quantizers
    (whose input is an ``nn.Parameter``) still run. A bias carrying :data:`EXACT_BIAS_OFFSET` runs with the offset
    added: it holds constant channels that its layer would have quantized, now without rounding."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is fake_quantize and not isinstance(args[0], nn.Parameter):
            return args[0]
        if func in _BIASED_CALLS:
            args, kwargs = _bypassed_bias(args, kwargs)
        return func(*args, **kwargs)


def _bypassed_bias(args, kwargs):
    if "bias" in kwargs:
        offset = getattr(kwargs["bias"], EXACT_BIAS_OFFSET, None)
        return (args, {**kwargs, "bias": kwargs["bias"] + offset}) if offset is not None else (args, kwargs)
    offset = getattr(args[2], EXACT_BIAS_OFFSET, None) if len(args) > 2 else None
    return (args[:2] + (args[2] + offset,) + args[3:], kwargs) if offset is not None else (args, kwargs)


class ActivationRoundingJittered(TorchFunctionMode):
    """Inside this mode every activation ``fake_quantize`` call first multiplies its input by ``1 +- relative``
    (a random sign per element, from a seeded generator): a perturbation of the size a changed summation order
    makes, so the rounding flips it causes show how much flips move *this* model's outputs."""

    def __init__(self, relative: float, seed: int = 0):
        super().__init__()
        self.relative = relative
        self.generator = torch.Generator().manual_seed(seed)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is fake_quantize and not isinstance(args[0], nn.Parameter):
            x = args[0]
            signs = torch.randint(0, 2, x.shape, generator=self.generator).to(x.dtype) * 2 - 1
            args = (x * (1 + self.relative * signs.to(x.device)),) + tuple(args[1:])
        return func(*args, **kwargs)


def max_activation_step(model: nn.Module) -> float:
    """Largest activation quantization step ``|d_quant_act|`` of the model (0 without activation quantizers)."""
    steps = [float(cast(Tensor, m.d_quant_act).detach().abs().max())
             for m in model.modules() if hasattr(m, "d_quant_act")]
    return max(steps, default=0.0)
