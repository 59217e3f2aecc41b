"""Fused quantizer kernels: each quantizer's forward in one pass and its backward in one pass (torch.compile).

The eager kernels of :mod:`.quantizer` make several elementwise passes over a tensor per quantizer (clip, power,
divide, round, rescale) and several more in the backward (the straight-through mask and one reduction per learned
scalar). Compiled by inductor (fused C++ loops on CPU, Triton kernels on GPU), the forward becomes one read of
``x`` and one write, and the backward one read of ``x`` and the incoming gradient that writes the input gradient
and reduces the ``d`` / ``q_m`` / ``t`` sums in the same loop. The scalar bookkeeping around them (magnitude
floors, the sign carried back to each raw parameter, ``kappa = t q^(t-1)``, the NaN flag) happens inside the same
compiled graph instead of a dozen eager calls on one-element tensors.

Switch: off by default (see :func:`set_fused_kernels` for the measured reasons); on with
``set_fused_kernels(True)`` or the environment variable ``OTO_FUSED_QUANTIZER=1``. If compilation is unavailable
or fails, a warning is logged once and the eager kernels are used from then on; nothing raises.

Shapes: every kernel sees the flattened tensor and is compiled with dynamic sizes, so a new layer shape does not
recompile (except once, for the backward, between tensors of at most and of more than 4096 elements: inductor
plans such reductions differently). What does specialise a graph is the dtype and the variant (linear, power,
with or without the ``t`` sum, DGE input gradient); each variant is its own function, so its cache holds a few
graphs per dtype at most, and a change of bit width changes tensor values only, never a graph.
"""
import logging
import math
import os
from typing import Any, Callable, Dict, Optional, Tuple, overload

import torch
from torch import Tensor

__all__ = ["set_fused_kernels", "fused_kernels_enabled", "ENVIRONMENT_VARIABLE"]

logger = logging.getLogger(__name__)

#: Environment variable read at import: ``1`` / ``true`` / ``on`` enables the fused kernels, anything else not.
ENVIRONMENT_VARIABLE = "OTO_FUSED_QUANTIZER"

_enabled = os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower() in ("1", "true", "on", "yes")
_failed = False
_compiled: Dict[str, Callable] = {}


def set_fused_kernels(enabled: bool) -> None:
    """Use the compiled, fused quantizer kernels (True) or the eager ones (False) from now on.

    Off by default. On CPU (2 cores, torch 2.13) the first use compiles each kernel variant it meets: about 50 s
    for the first on a cold inductor cache (10 s warm), a few seconds per further variant and dtype. That is lost
    in any real training run but not in a short script or a unit test; ``benchmarks/quant_overhead.py`` measures
    what it buys per training step. Enabling again after a compilation failure retries compilation.
    """
    global _enabled, _failed
    _enabled, _failed = bool(enabled), False


def fused_kernels_enabled() -> bool:
    """Whether quantizers use the fused kernels now (enabled, and no compilation failure since)."""
    return _enabled and not _failed


def usable_for(x: Tensor) -> bool:
    """Whether the fused kernels apply to ``x`` now: enabled, eager mode (not traced or compiled from outside),
    a floating tensor on a device inductor supports."""
    return (
        _enabled
        and not _failed
        and not (torch.jit.is_tracing() or torch.compiler.is_compiling())
        and x.is_floating_point()
        and x.device.type in ("cpu", "cuda")
    )


def _run(name: str, *args) -> Any:  # the kernel's result (a tensor or a tuple), or None
    """Call kernel ``name`` compiled; ``None`` (eager fallback from now on) if compilation or the call fails."""
    global _failed
    kernel = _compiled.get(name)
    if kernel is None:
        kernel = _compiled[name] = torch.compile(_KERNELS[name], dynamic=True)
    try:
        return kernel(*args)
    except Exception as error:  # any compiler or toolchain failure: never crash training for a speed-up
        _failed = True
        logger.warning("Fused quantizer kernels unavailable (%s: %s); using the eager kernels.",
                       type(error).__name__, error)
        return None


# ---------------------------------------------------------------------------------------------------------------
# Kernel bodies (traced by torch.compile; the same operation order as the eager kernels, so the same values)
# ---------------------------------------------------------------------------------------------------------------
def _magnitudes(x: Tensor, d: Tensor, q_m: Tensor, floor: float) -> Tuple[Tensor, Tensor]:
    d_eff = d.to(x.dtype).abs().clamp_min(floor)
    q_eff = q_m.to(x.dtype).abs().clamp_min(floor)
    return d_eff, q_eff


def _scaled_levels(x: Tensor, clipped: Tensor, d: Tensor, t: Optional[Tensor], tiny: float):
    """``(s, ln m)``: ``s = sign(x) * m^t / d`` with ``m = |clipped|`` (``t = None``: ``clipped / d``), and the
    log magnitude where a power needs it."""
    if t is None:
        return clipped / d, None
    log_magnitude = torch.log(clipped.abs().clamp_min(tiny))
    # The exponent floored as in the eager kernel (see _exponent_floor there: a subnormal exp is ~60x slower).
    exponent_floor = math.log(torch.finfo(torch.float64 if x.dtype == torch.float64 else torch.float32).tiny) + 1.0
    power = torch.exp(torch.clamp_min(log_magnitude * t, exponent_floor))
    return power / d * torch.sign(x), log_magnitude


def _signed(grad: Tensor, param: Tensor) -> Tensor:
    grad = grad.reshape(param.shape).to(param.dtype)
    return torch.where(param < 0, -grad, grad)


def _forward_linear(x, d, q_m, floor):
    d_eff, q_eff = _magnitudes(x, d, q_m, floor)
    return torch.round(torch.clamp(x, -q_eff, q_eff) / d_eff) * d_eff


def _forward_power(x, d, q_m, t, floor, tiny):
    d_eff, q_eff = _magnitudes(x, d, q_m, floor)
    s, _ = _scaled_levels(x, torch.clamp(x, -q_eff, q_eff), d_eff, t.to(x.dtype), tiny)
    return torch.round(s) * d_eff


def _backward(g, x, d, q_m, t, floor, tiny, lo, hi, power: bool, t_sum: bool, dge_bits: Optional[Tensor]):
    """``(grad_x, grad_d, grad_q_m, grad_t or None, any NaN)`` for one quantizer, gradients of SPEC 4.2."""
    d_eff, q_eff = _magnitudes(x, d, q_m, floor)
    t_eff = None if t is None else t.to(x.dtype)
    clipped = torch.clamp(x, -q_eff, q_eff)
    grad_x = torch.where((x > lo) & (x < hi), g, torch.zeros_like(g))
    if dge_bits is not None:
        inv_k = dge_bits.to(x.dtype) / 20.0
        grad_x = (grad_x * (torch.abs(x - d_eff / 2) ** (inv_k - 1.0) * inv_k)).clamp(-3, 3)
    sum_q = (g * torch.sign(x - clipped)).sum()
    s, log_magnitude = _scaled_levels(x, clipped, d_eff, t_eff if power else None, tiny)
    grad_d = _signed((g * (torch.round(s) - s)).sum(), d)
    kappa = 1.0 if t_eff is None else t_eff * q_eff ** (t_eff - 1.0)
    grad_q = _signed(sum_q * kappa, q_m)
    checked = [grad_d, grad_q] + ([grad_x.sum().reshape(1)] if dge_bits is not None else [])
    grad_t = None
    if t_sum:
        if log_magnitude is None:
            log_magnitude = torch.log(clipped.abs().clamp_min(tiny))
        grad_t = ((g * log_magnitude * s).sum() * d_eff).reshape(t.shape).to(t.dtype)
        checked.append(grad_t)
    return grad_x, grad_d, grad_q, grad_t, torch.isnan(torch.cat([c.reshape(-1) for c in checked])).any()


# One function per variant: a compiled function caches a bounded number of graphs (dtype x variant would exceed it).
def _backward_linear(g, x, d, q_m, floor, tiny, lo, hi):
    return _backward(g, x, d, q_m, None, floor, tiny, lo, hi, False, False, None)


def _backward_linear_t_sum(g, x, d, q_m, t, floor, tiny, lo, hi):
    return _backward(g, x, d, q_m, t, floor, tiny, lo, hi, False, True, None)


def _backward_power(g, x, d, q_m, t, floor, tiny, lo, hi):
    return _backward(g, x, d, q_m, t, floor, tiny, lo, hi, True, False, None)


def _backward_power_t_sum(g, x, d, q_m, t, floor, tiny, lo, hi):
    return _backward(g, x, d, q_m, t, floor, tiny, lo, hi, True, True, None)


def _backward_dge(g, x, d, q_m, bits, floor, tiny, lo, hi):
    return _backward(g, x, d, q_m, None, floor, tiny, lo, hi, False, False, bits)


_KERNELS: Dict[str, Callable] = {
    "forward_linear": _forward_linear,
    "forward_power": _forward_power,
    "backward_linear": _backward_linear,
    "backward_linear_t_sum": _backward_linear_t_sum,
    "backward_power": _backward_power,
    "backward_power_t_sum": _backward_power_t_sum,
    "backward_dge": _backward_dge,
}


# ---------------------------------------------------------------------------------------------------------------
# Entry points used by the quantizer (``None``: use the eager kernels)
# ---------------------------------------------------------------------------------------------------------------
def _floors(dtype: torch.dtype, floor: float) -> Tuple[float, float]:
    return max(floor, torch.finfo(dtype).tiny), torch.finfo(dtype).tiny


@overload
def _plain(tensor: Tensor, flat: bool = False) -> Tensor: ...


@overload
def _plain(tensor: Optional[Tensor], flat: bool = False) -> Optional[Tensor]: ...


def _plain(tensor: Optional[Tensor], flat: bool = False) -> Optional[Tensor]:
    """``tensor`` (flattened if ``flat``) as a detached non-view alias. A compiled function guards on the base
    of a view argument (its shape and strides), which would recompile for every new layer shape, and on
    ``requires_grad``, which would recompile when a quantizer is frozen."""
    if tensor is None:
        return None
    return (tensor.reshape(-1) if flat else tensor).detach()


def quantize(x: Tensor, d: Tensor, q_m: Tensor, exponent: Optional[Tensor], floor: float) -> Optional[Tensor]:
    """``Q(x)`` in one pass (``exponent`` ``None``: linear), or ``None`` where the fused kernels do not apply."""
    if not usable_for(x):
        return None
    magnitude_floor, tiny = _floors(x.dtype, floor)
    flat, d, q_m = _plain(x, flat=True), _plain(d), _plain(q_m)
    if exponent is None:
        out = _run("forward_linear", flat, d, q_m, magnitude_floor)
    else:
        out = _run("forward_power", flat, d, q_m, _plain(exponent), magnitude_floor, tiny)
    return None if out is None else out.view(x.shape)


def gradients(grad_output: Tensor, x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor], exponent_is_one: bool,
              needs_t: bool, clip_val: Tuple[float, float], floor: float,
              dge_bits: Optional[Tensor] = None) -> Optional[Tuple]:
    """``(grad_x, grad_d, grad_q_m, grad_t, any_nan)`` in one pass over ``x`` and ``grad_output``, or ``None``.

    ``t`` is the raw exponent (``None``: linear quantizer); ``exponent_is_one`` takes the linear path for the
    value (the eager ``t = 1`` shortcut); the ``t`` sum is computed only if ``needs_t``. ``dge_bits`` (a tensor)
    selects the DGE input gradient for that bit width.
    """
    if not usable_for(x):
        return None
    magnitude_floor, tiny = _floors(x.dtype, floor)
    args = (_plain(grad_output, flat=True), _plain(x, flat=True), _plain(d), _plain(q_m))
    scalars = (magnitude_floor, tiny, float(clip_val[0]), float(clip_val[1]))
    if dge_bits is not None:
        result = _run("backward_dge", *args, _plain(dge_bits), *scalars)
    elif t is None or (exponent_is_one and not needs_t):
        result = _run("backward_linear", *args, *scalars)
    else:
        variant = ("backward_linear" if exponent_is_one else "backward_power") + ("_t_sum" if needs_t else "")
        result = _run(variant, *args, _plain(t), *scalars)
    if result is None:
        return None
    grad_x, grad_d, grad_q, grad_t, any_nan = result
    return grad_x.view(x.shape), grad_d, grad_q, grad_t, any_nan
