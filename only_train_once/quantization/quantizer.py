"""Quantizer mathematics: symmetric learned-step fake quantization (SPEC section 4).

A quantizer maps a tensor ``x`` to ``Q(x) = sign(x) * d * round(min(|x|, q_m)^t / d)`` with three learned
scalars: the step ``d``, the clipping range ``q_m`` and, for the nonlinear quantizer, the exponent ``t``
(``t = 1`` is the linear quantizer). Its bit width is ``b = log2(q_m^t / d + 1) + 1``.

Everything a quantized layer needs goes through :func:`fake_quantize`, the single traced unit of this package
(see its docstring for the tracing contract). The autograd functions behind it are
:class:`SymQuantizerLinear`, :class:`SymQuantizerNonLinear` and :class:`DGEQuantizer`.

Robustness (fixes SPEC 12.5 Q5): ``d`` and ``q_m`` enter the quantizer through their magnitudes, floored at
:data:`MIN_MAGNITUDE`, so a negative or zero value cannot flip or break the quantizer. Their gradients are taken
with respect to the magnitude and carried back to the raw parameter with its sign; the floor itself is passed
straight through, so a parameter sitting at the floor can still move away from it. For ``q_m`` this replaces the
reference's ``+1e-6`` guard on the nonlinear range, which moved the saturation level by up to one step for small
``q_m``.

Speed: the forward and backward kernels come in two implementations with equal results, the eager ones below
and the fused compiled ones of :mod:`.fused` (``set_fused_kernels(True)``, off by default). A weight whose
quantizer parameters are all frozen (``requires_grad=False``) is quantized once per change of the weight or of
those parameters (their version counters) and served from a cache in between, e.g. across the forwards of
gradient accumulation or of an evaluation loop. On CPU float32/float64 inputs the eager kernels take ``d``,
``q_m``, ``t`` as Python numbers (one host read each) instead of one-element tensors, and the backward reduces
all its sums with one matrix-vector product.
"""
import math
from enum import Enum
from typing import Iterator, Optional, Sequence, Tuple, Type, TypeVar, Union, cast, overload

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.overrides import handle_torch_function, has_torch_function
from torch.utils.weak import WeakIdKeyDictionary

from . import fused

__all__ = [
    "MIN_MAGNITUDE",
    "DEFAULT_CLIP_VAL",
    "QuantizationType",
    "QuantizationMode",
    "NanInGradientError",
    "bit_width",
    "step_size_for_bits",
    "fake_quantize",
    "effective_scalars",
    "is_tracing",
    "SymQuantizerLinear",
    "SymQuantizerNonLinear",
    "DGEQuantizer",
]

#: Floor applied to ``|d|`` and ``|q_m|`` (also the ``q_m`` floor of :func:`step_size_for_bits`). Raised to the
#: smallest normal number of the input dtype where that is larger (float16).
MIN_MAGNITUDE = 1e-10

#: Default clip values: the input gradient is zero where ``x <= lo`` or ``x >= hi``.
DEFAULT_CLIP_VAL = (-2.0, 2.0)

ClipVal = Tuple[float, float]
Scalar = Union[float, int, Tensor]


_E = TypeVar("_E", bound="_ParsableEnum")


class _ParsableEnum(Enum):
    """Enum whose members can be given by value, with an error that lists the valid values."""

    @classmethod
    def parse(cls: Type[_E], value: Union[_E, str]) -> _E:
        """Return the member ``value`` names (a member or its string value); ``ValueError`` otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(repr(member.value) for member in cls)
            raise ValueError(f"Unknown {cls.__name__} {value!r}; valid values are {valid}.") from None


class QuantizationType(_ParsableEnum):
    """Which quantizer a layer uses."""

    SYMMETRIC_LINEAR = "symmetric+linear"
    SYMMETRIC_NONLINEAR = "symmetric+nonlinear"
    DGE = "dge"


class QuantizationMode(_ParsableEnum):
    """What a layer quantizes: its weight only, or its weight and its input activation."""

    WEIGHT_ONLY = "weight_only"
    WEIGHT_AND_ACTIVATION = "weight_and_activation"


class NanInGradientError(Exception):
    """A quantizer's backward produced a NaN gradient; ``message`` says which one and what to check."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _magnitude_floor(dtype: torch.dtype) -> float:
    return max(MIN_MAGNITUDE, torch.finfo(dtype).tiny)


def is_tracing() -> bool:
    """True under the TorchScript tracer, torch.compile or torch.export: no host reads of tensor values then."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


# ---------------------------------------------------------------------------------------------------------------
# Bit width <-> step size (SPEC 4.4)
# ---------------------------------------------------------------------------------------------------------------
def _as_tensor(value: Scalar) -> Tensor:
    return value if isinstance(value, Tensor) else torch.tensor(float(value), dtype=torch.float64)


def _range_power(q_m: Scalar, t: Optional[Scalar]) -> Tensor:
    q = _as_tensor(q_m).abs().clamp_min(MIN_MAGNITUDE)
    return q if t is None else q.pow(_as_tensor(t))


def _result(value: Tensor, *args: Optional[Scalar]) -> Union[float, Tensor]:
    return value if any(isinstance(arg, Tensor) for arg in args) else float(value)


def bit_width(d: Scalar, q_m: Scalar, t: Optional[Scalar] = None) -> Union[float, Tensor]:
    """Bit width ``log2(|q_m|^t / |d| + 1) + 1`` of a quantizer (unrounded).

    ``d`` and ``q_m`` are used through their floored magnitudes, as in the quantizer, so ``q_m = 0`` gives one
    bit instead of ``log(0)``. ``t`` defaults to 1 (linear quantizer). Returns a float when every argument is a
    Python number, else a tensor broadcast from the arguments.
    """
    ratio = _range_power(q_m, t) / _as_tensor(d).abs().clamp_min(MIN_MAGNITUDE)
    return _result(torch.log2(ratio + 1.0) + 1.0, d, q_m, t)


def step_size_for_bits(bits: Scalar, q_m: Scalar, t: Optional[Scalar] = None) -> Union[float, Tensor]:
    """Step size ``d = q^t / (2^(bits - 1) - 1)`` giving ``bits`` bits, the inverse of :func:`bit_width`.

    ``q = max(|q_m|, MIN_MAGNITUDE)``, the maximum over the tensor when ``q_m`` is a tensor; ``t`` defaults to 1.
    ``bit_width(step_size_for_bits(b, q_m, t), q_m, t) == b`` up to floating-point rounding. Raises ``ValueError``
    for ``bits <= 1`` given as a number (no representable step). Returns a float for Python-number arguments,
    else a 0-dim tensor.
    """
    if not isinstance(bits, Tensor) and float(bits) <= 1.0:
        raise ValueError(f"A quantizer needs more than 1 bit, got bits={bits}.")
    exponent = None if t is None else _as_tensor(t).reshape(())
    levels = torch.pow(2.0, _as_tensor(bits).reshape(()) - 1.0) - 1.0
    return _result(_range_power(q_m, exponent).max() / levels, bits, q_m, t)


# ---------------------------------------------------------------------------------------------------------------
# Forward and backward kernels shared by the autograd functions
# ---------------------------------------------------------------------------------------------------------------
def effective_scalars(x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor]):
    """``(|d|, |q_m|)`` floored, and ``t``, on ``x``'s device and in its dtype."""
    floor = _magnitude_floor(x.dtype)
    d_eff = d.to(device=x.device, dtype=x.dtype).abs().clamp_min(floor)
    q_eff = q_m.to(device=x.device, dtype=x.dtype).abs().clamp_min(floor)
    t_eff = None if t is None else t.to(device=x.device, dtype=x.dtype)
    return d_eff, q_eff, t_eff


#: Input dtypes whose kernels may take the quantizer scalars as Python numbers: an operation on a float32 or
#: float64 tensor rounds a Python scalar to the tensor's dtype, the value a one-element tensor of that dtype holds.
_HOST_SCALAR_DTYPES = (torch.float32, torch.float64)


def _host_values(x: Tensor, params: Sequence[Optional[Tensor]]) -> Optional[Tuple[Optional[float], ...]]:
    """The raw quantizer parameters as Python numbers where ``x`` is a CPU float32/float64 tensor outside tracing,
    else ``None``. On CPU a host read costs about a microsecond, while every operation on a one-element tensor
    (abs, floor, power, sign, reshape, cast) costs a dispatch; a quantizer pays some thirty of them per call."""
    if is_tracing() or x.device.type != "cpu" or x.dtype not in _HOST_SCALAR_DTYPES:
        return None
    if any(param is not None and (param.device.type != "cpu" or param.numel() != 1) for param in params):
        return None
    return tuple(None if param is None else param.item() for param in params)


def _effective_host_scalars(values: Tuple[Optional[float], ...], dtype: torch.dtype):
    """:func:`effective_scalars` of the Python numbers :func:`_host_values` read: ``(|d|, |q_m|)`` floored, and
    ``t``."""
    floor = _magnitude_floor(dtype)
    d_raw, q_raw, t_raw = values
    assert d_raw is not None and q_raw is not None  # d and q_m are tensors
    return max(abs(d_raw), floor), max(abs(q_raw), floor), t_raw


def _kernel_scalars(x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor]):
    """:func:`effective_scalars` as Python numbers where :func:`_host_values` allows, else as tensors."""
    values = _host_values(x, (d, q_m, t))
    return effective_scalars(x, d, q_m, t) if values is None else _effective_host_scalars(values, x.dtype)


#: Elements per block of the CPU elementwise chains. The chains are bound by memory traffic, not arithmetic: run
#: block by block, their temporaries stay in cache and are recycled by the allocator instead of being faulted in
#: fresh for every operation; a block is large enough to amortise the per-operation dispatch.
CPU_BLOCK_SIZE = 1 << 18


def _blocks(*tensors: Tensor) -> Iterator[Tuple[Tensor, ...]]:
    """Matching flat blocks of same-shaped ``tensors``: blocks of ``CPU_BLOCK_SIZE`` elements for contiguous CPU
    tensors in eager mode, else the whole tensors once."""
    blocked = (
        not is_tracing()
        and tensors[0].device.type == "cpu"
        and tensors[0].numel() > CPU_BLOCK_SIZE
        and all(tensor.is_contiguous() for tensor in tensors)
    )
    if not blocked:
        yield tensors
        return
    yield from zip(*(tensor.view(-1).split(CPU_BLOCK_SIZE) for tensor in tensors))


@overload
def _exponent(t: Optional[Tensor]) -> Optional[Tensor]: ...


@overload
def _exponent(t: Union[None, float, Tensor]) -> Union[None, float, Tensor]: ...


def _exponent(t: Union[None, float, Tensor]) -> Union[None, float, Tensor]:
    """``t``, or ``None`` for the linear quantizer and, in eager mode, for ``t == 1`` (one host read of a tensor
    ``t``; none on the meta device, where a model is analysed without values)."""
    if isinstance(t, float):
        return None if t == 1.0 else t
    return None if t is None or (not is_tracing() and not t.is_meta and float(t) == 1.0) else t


def _exponent_floor(dtype: torch.dtype) -> float:
    """Lower bound on ``t * ln m`` before the exp of the power ``m^t``: one above the log of the smallest normal
    float32 (float64 for float64 inputs). An exp whose result is subnormal or underflows takes a slow path on CPU
    (about 60x slower per element, measured with one thread on AVX-512), and every exact zero (a ReLU output, whose
    magnitude is floored at the smallest normal number) lands there once ``t > 1``. The margin of one keeps the
    rounding of the bound itself above the subnormal range. The floor changes ``m^t`` only where it is below
    ``e * tiny`` (about 3e-38 in float32 and below, float16 and bfloat16 computing in float32), far below any
    quantization step; zeros stay zeros through ``sign(x)``."""
    return math.log(torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).tiny) + 1.0


def power_of_log(log_magnitude: Tensor, t: Scalar, out: Tensor) -> Tensor:
    """``m^t = exp(t * ln m)`` written into ``out``, the exponent floored by :func:`_exponent_floor`."""
    return torch.mul(log_magnitude, t, out=out).clamp_(min=_exponent_floor(log_magnitude.dtype)).exp_()


def _quantize_into(x: Tensor, d: Tensor, q: Tensor, t: Optional[Tensor], out: Tensor) -> None:
    """Write ``Q(x) = sign(x) * d * round(min(|x|, q)^t / d)`` into ``out`` (effective scalars; ``t = None``: 1)."""
    if t is None:
        # Round-half-to-even is odd-symmetric: sign(x) * round(min(|x|, q)/d) == round(clamp(x, -q, q)/d).
        torch.clamp(x, max=q, out=out).clamp_(min=-q).div_(d)  # two tensor bounds at once is ~4x slower on CPU
    else:
        # min(|x|, q)^t as exp(t * ln(.)), |x| floored at the smallest normal number (log of 0 is ~10x slower on
        # CPU); sign(0) = 0 restores the zeros.
        magnitude = torch.abs(x, out=out).clamp_(max=q).clamp_(min=torch.finfo(x.dtype).tiny)
        power_of_log(magnitude.log_(), t, magnitude).div_(d).mul_(torch.sign(x))
    out.round_().mul_(d)


def _quantize(x: Tensor, d: Tensor, q: Tensor, t: Optional[Tensor]) -> Tensor:
    """``Q(x)`` with effective scalars (``t = None``: linear quantizer)."""
    out = torch.empty_like(x)
    exponent = _exponent(t)
    for x_block, out_block in _blocks(x, out):
        _quantize_into(x_block, d, q, exponent, out_block)
    return out


def _gradient_factors(x: Tensor, d: Scalar, q: Scalar, t: Optional[Scalar], needs: Tuple[bool, bool, bool]) -> Tensor:
    """The per-element factors of the requested ``(d, q_m, t)`` gradient sums, one row each, for a flat ``x``.

    With ``c = clamp(x, -q, q)``, ``m = |c| = min(|x|, q)``, ``v = m^t`` and ``s = sign(x) * v / d``: ``rho =
    round(s) - s`` (the ``d`` row); ``sign(x - c)``, which is ``sign(x)`` where ``|x| > q`` and 0 elsewhere (the
    ``q_m`` row); ``s * ln m`` (the ``t`` row, the ``t`` gradient over ``d``). Rows are written in place, with one
    scratch buffer (``c``, then ``s``).
    """
    needs_d, needs_q, needs_t = needs
    rows = x.new_empty(sum(needs), x.numel())
    row_d, row_q, row_t = (rows[sum(needs[:i])] if need else None for i, need in enumerate(needs))
    clipped = torch.clamp(x, max=q).clamp_(min=-q)
    if needs_q:
        torch.sub(x, clipped, out=row_q).sign_()
    if not (needs_d or needs_t):
        return rows
    log_magnitude = None
    if t is not None or needs_t:
        buffer = row_t if needs_t else row_d  # ln m is last read when s is formed, before row_d is written
        log_magnitude = torch.abs(clipped, out=buffer).clamp_(min=torch.finfo(x.dtype).tiny).log_()
    if t is None:
        s = clipped.div_(d)
    else:
        assert log_magnitude is not None  # computed above whenever t is given
        s = power_of_log(log_magnitude, t, clipped).div_(d).mul_(torch.sign(x))
    if needs_t:
        assert row_t is not None  # a row per requested gradient
        row_t.mul_(s)
    if needs_d:
        torch.round(s, out=row_d).sub_(s)
    return rows


def _gradient_sums(grad_output: Tensor, x: Tensor, d: Scalar, q: Scalar, t: Optional[Scalar],
                   needs: Tuple[bool, bool, bool]) -> Tensor:
    """The reductions behind the requested ``(d, q_m, t)`` gradients of SPEC 4.2: ``sum(g * factor)`` for each
    row of :func:`_gradient_factors`, as one vector (one entry per requested gradient, in that order).

    All sums come from one matrix-vector product per block of ``CPU_BLOCK_SIZE`` elements; the factors are
    recomputed from ``x``, so no tensor of the input's size is kept between forward and backward.
    """
    exponent = _exponent(t)
    total = None
    for x_block, grad_block in _blocks(x, grad_output):
        factors = _gradient_factors(x_block.reshape(-1), d, q, exponent, needs)
        sums = torch.mv(factors, grad_block.reshape(-1))
        total = sums if total is None else total.add_(sums)
    assert total is not None  # _blocks yields at least one block
    return total


def _ste_input_grad(grad_output: Tensor, x: Tensor, clip_val: ClipVal) -> Tensor:
    """Straight-through input gradient: ``grad_output`` where ``lo < x < hi``, zero elsewhere."""
    lo, hi = clip_val
    x_min, x_max = torch.aminmax(x)
    if bool((x_min > lo) & (x_max < hi)):
        return grad_output  # nothing clipped (the usual case for weights): no copy
    return torch.ops.aten.hardtanh_backward(grad_output, x, lo, hi)


def _signed_like(grad: Tensor, param: Tensor) -> Tensor:
    """Carry a gradient taken w.r.t. ``|param|`` back to ``param`` (sign +1 at zero), shaped and typed like it."""
    grad = grad.reshape(param.shape).to(param.dtype)
    return torch.where(param < 0, -grad, grad)


def _check_finite(**grads: Optional[Tensor]) -> None:
    present = {name: grad for name, grad in grads.items() if grad is not None}
    if not present or is_tracing():
        return
    nan = torch.isnan(torch.stack([grad.reshape(-1)[0] for grad in present.values()]))
    if bool(nan.any()):
        _raise_nan([name for name, is_nan in zip(present, nan.tolist()) if is_nan])


def _raise_nan(names: Sequence[str]) -> None:
    raise NanInGradientError(
        f"NaN in the quantizer gradient of {', '.join(names)}. Check the layer input and the upstream loss for NaN "
        "or inf values, and the quantizer parameters (d, q_m, t) for non-finite values."
    )


def _check_threshold(q_s: Scalar) -> None:
    if float(q_s) != 0.0:
        raise ValueError(f"Only the zero threshold q_s = 0 is supported, got q_s={q_s!r}.")


def _quantize_raw(x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor]) -> Tensor:
    """``Q(x)`` from the raw parameters: the fused kernel where enabled, else the eager one."""
    fused_value = fused.quantize(x, d, q_m, _exponent(t), MIN_MAGNITUDE)
    return fused_value if fused_value is not None else _quantize(x, *_kernel_scalars(x, d, q_m, t))


def _forward(ctx, x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor], clip_val: ClipVal) -> Tensor:
    ctx.save_for_backward(x, d, q_m, t)
    ctx.clip_val = clip_val
    return _quantize_raw(x, d, q_m, t)


def _fused_backward(ctx, saved: Tuple, grad_output: Tensor, dge_bits: Optional[Tensor] = None) -> Optional[Tuple]:
    """``(grad_x, grad_d, grad_q_m, grad_t)`` from the fused kernel (unrequested entries ``None``), or ``None``
    where it does not apply or found a NaN (the eager path then raises the detailed error). ``saved``: the
    context's saved tensors, read once per backward (each read unpacks and checks them again)."""
    x, d, q_m, t = saved
    needs = ctx.needs_input_grad[:3] + (t is not None and ctx.needs_input_grad[3],)
    result = fused.gradients(grad_output, x, d, q_m, t, t is not None and _exponent(t) is None, needs[3],
                             ctx.clip_val, MIN_MAGNITUDE, dge_bits)
    if result is None or bool(result[-1]):
        return None
    return tuple(grad if need else None for grad, need in zip(result[:4], needs))


def _scalar_grads(saved: Tuple, grad_output: Tensor, needs_d: bool, needs_q: bool, needs_t: bool):
    """Gradients of ``d``, ``q_m`` and ``t`` (SPEC 4.2), shaped and typed like the parameters; raises
    :class:`NanInGradientError` for a NaN among them."""
    needs = (needs_d, needs_q, needs_t)
    if not any(needs):
        return None, None, None
    x, d, q_m, t = saved
    values = _host_values(x, (d, q_m, t))
    if values is None:
        return _scalar_grads_on_device(x, d, q_m, t, grad_output, needs)
    d_eff, q_eff, t_eff = _effective_host_scalars(values, x.dtype)
    sums = iter(_gradient_sums(grad_output, x, d_eff, q_eff, t_eff, needs).tolist())
    kappa = 1.0 if t_eff is None else t_eff * q_eff ** (t_eff - 1.0)
    # A gradient taken w.r.t. |param| goes back to param with its sign (+1 at zero).
    d_raw, q_raw = cast(float, values[0]), cast(float, values[1])
    factors = (-1.0 if d_raw < 0 else 1.0, kappa * (-1.0 if q_raw < 0 else 1.0), d_eff)
    grads = [next(sums) * factor if need else None for need, factor in zip(needs, factors)]
    nan = [name for name, grad in zip(("d", "q_m", "t"), grads) if grad is not None and math.isnan(grad)]
    if nan:
        _raise_nan(nan)
    return tuple(None if grad is None else torch.tensor([grad], dtype=param.dtype).reshape(param.shape)
                 for grad, param in zip(grads, (d, q_m, t)))


def _scalar_grads_on_device(x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor], grad_output: Tensor,
                            needs: Tuple[bool, bool, bool]):
    """:func:`_scalar_grads` with the scalars kept on ``x``'s device (no host read: no device synchronisation)."""
    d_eff, q_eff, t_eff = effective_scalars(x, d, q_m, t)
    sums = iter(_gradient_sums(grad_output, x, d_eff, q_eff, t_eff, needs))
    sum_d, sum_q, sum_t = (next(sums) if need else None for need in needs)
    # a sum per requested gradient (None for the others); t's is requested only when t is given
    grad_d = _signed_like(cast(Tensor, sum_d), d) if needs[0] else None
    grad_q = None
    if needs[1]:
        kappa = 1.0 if t_eff is None else t_eff * q_eff.pow(t_eff - 1.0)
        grad_q = _signed_like(cast(Tensor, sum_q) * kappa, q_m)
    grad_t = None
    if needs[2]:
        assert t is not None
        grad_t = (cast(Tensor, sum_t) * d_eff).reshape(t.shape).to(t.dtype)
    _check_finite(d=grad_d, q_m=grad_q, t=grad_t)
    return grad_d, grad_q, grad_t


def _onnx_quantize(g, x, d, q_m, t=None):
    """ONNX graph of the forward in standard operators (Abs, Max, Min, Neg, Div, Round, Mul, Pow, Sign)."""
    dtype = x.type().dtype()

    def like_x(value):  # parameters may be float32 for a float16 input
        return value if value.type().dtype() == dtype else g.op("CastLike", value, x)

    floor = g.op("Constant", value_t=torch.tensor(_magnitude_floor(dtype), dtype=dtype))
    d_eff = g.op("Max", g.op("Abs", like_x(d)), floor)
    q_eff = g.op("Max", g.op("Abs", like_x(q_m)), floor)
    if t is None:
        clipped = g.op("Min", g.op("Max", x, g.op("Neg", q_eff)), q_eff)
        return g.op("Mul", g.op("Round", g.op("Div", clipped, d_eff)), d_eff)
    magnitude = g.op("Pow", g.op("Min", g.op("Abs", x), q_eff), like_x(t))
    levels = g.op("Mul", g.op("Round", g.op("Div", magnitude, d_eff)), d_eff)
    return g.op("Mul", levels, g.op("Sign", x))


class SymQuantizerLinear(torch.autograd.Function):
    """Symmetric uniform quantizer ``d * round(clamp(x, -q_m, q_m) / d)`` with learned ``d`` and ``q_m``.

    ``apply(x, d, q_m, clip_val=(-2.0, 2.0), q_s=0)``; ``d``, ``q_m`` are shape-``[1]`` tensors, ``q_s`` must be 0.
    Backward: straight-through ``x`` gradient inside the clip values, ``dL/dd = sum(g * rho)``,
    ``dL/dq_m = sum(g * sign(x))`` over ``|x| > q_m`` (SPEC 4.2).
    """

    @staticmethod
    def forward(ctx, x, d, q_m, clip_val=DEFAULT_CLIP_VAL, q_s=0.0):
        _check_threshold(q_s)
        return _forward(ctx, x, d, q_m, None, clip_val)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        saved = ctx.saved_tensors
        fused_grads = _fused_backward(ctx, saved, grad_output)
        if fused_grads is not None:
            return (*fused_grads[:3], None, None)
        needs = ctx.needs_input_grad
        grad_x = _ste_input_grad(grad_output, saved[0], ctx.clip_val) if needs[0] else None
        grad_d, grad_q, _ = _scalar_grads(saved, grad_output, needs[1], needs[2], False)
        return grad_x, grad_d, grad_q, None, None

    @staticmethod
    def symbolic(g, x, d, q_m, clip_val=DEFAULT_CLIP_VAL, q_s=0.0):
        return _onnx_quantize(g, x, d, q_m)


class SymQuantizerNonLinear(torch.autograd.Function):
    """Symmetric nonlinear quantizer ``sign(x) * d * round(min(|x|, q_m)^t / d)`` with learned ``d``, ``q_m``, ``t``.

    ``apply(x, d, q_m, t, clip_val=(-2.0, 2.0), q_s=0)``. Backward as the linear quantizer with
    ``dL/dq_m`` scaled by ``t * q_m^(t-1)``, plus ``dL/dt = sum(g * sign(x) * v * ln(min(|x|, q_m)))`` with
    ``v = min(|x|, q_m)^t`` (SPEC 4.2). ``t = 1`` skips the power in eager mode.
    """

    @staticmethod
    def forward(ctx, x, d, q_m, t, clip_val=DEFAULT_CLIP_VAL, q_s=0.0):
        _check_threshold(q_s)
        return _forward(ctx, x, d, q_m, t, clip_val)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        saved = ctx.saved_tensors
        fused_grads = _fused_backward(ctx, saved, grad_output)
        if fused_grads is not None:
            return (*fused_grads, None, None)
        needs = ctx.needs_input_grad
        grad_x = _ste_input_grad(grad_output, saved[0], ctx.clip_val) if needs[0] else None
        grad_d, grad_q, grad_t = _scalar_grads(saved, grad_output, needs[1], needs[2], needs[3])
        return grad_x, grad_d, grad_q, grad_t, None, None

    @staticmethod
    def symbolic(g, x, d, q_m, t, clip_val=DEFAULT_CLIP_VAL, q_s=0.0):
        return _onnx_quantize(g, x, d, q_m, t)


class DGEQuantizer(torch.autograd.Function):
    """Linear quantizer with the DGE input gradient (SPEC 4.3).

    ``apply(x, d, q_m, clip_val, q_s, num_bits)``; forward as :class:`SymQuantizerLinear`. Input gradient
    ``clamp(g * 1[lo < x < hi] * (1/k) * |x - d/2|^(1/k - 1), -3, 3)`` with ``k = 5 * 4 / num_bits``; ``num_bits``
    ``None`` means the quantizer's current rounded bit width. ``d`` and ``q_m`` gradients as the linear quantizer.
    """

    @staticmethod
    def forward(ctx, x, d, q_m, clip_val=DEFAULT_CLIP_VAL, q_s=0.0, num_bits=None):
        _check_threshold(q_s)
        ctx.num_bits = num_bits
        return _forward(ctx, x, d, q_m, None, clip_val)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        saved = ctx.saved_tensors
        fused_grads = _fused_backward(ctx, saved, grad_output, DGEQuantizer._bits(ctx))
        if fused_grads is not None:
            return (*fused_grads[:3], None, None, None)
        needs = ctx.needs_input_grad
        grad_x = DGEQuantizer._input_grad(ctx, grad_output) if needs[0] else None
        grad_d, grad_q, _ = _scalar_grads(saved, grad_output, needs[1], needs[2], False)
        _check_finite(x=None if grad_x is None else grad_x.sum())
        return grad_x, grad_d, grad_q, None, None, None

    @staticmethod
    def _bits(ctx) -> Tensor:
        """The bit width of the input gradient: ``num_bits``, or the current rounded one (a 0-dim tensor)."""
        x, d, q_m = ctx.saved_tensors[:3]
        if ctx.num_bits is not None:
            return torch.tensor(float(ctx.num_bits), device=x.device)
        return torch.round(cast(Tensor, bit_width(*effective_scalars(x, d, q_m, None)[:2]))).reshape(())

    @staticmethod
    def _input_grad(ctx, grad_output: Tensor) -> Tensor:
        x, d, q_m = ctx.saved_tensors[:3]
        d_eff = effective_scalars(x, d, q_m, None)[0]
        inv_k = float(DGEQuantizer._bits(ctx)) / 20.0  # 1/k with k = 5 * (4 / num_bits)
        slope = (x - d_eff / 2).abs_().pow_(inv_k - 1.0).mul_(inv_k)
        return torch.ops.aten.hardtanh_backward(grad_output, x, *map(float, ctx.clip_val)).mul_(slope).clamp_(-3, 3)

    @staticmethod
    def symbolic(g, x, d, q_m, clip_val=DEFAULT_CLIP_VAL, q_s=0.0, num_bits=None):
        return _onnx_quantize(g, x, d, q_m)


# ---------------------------------------------------------------------------------------------------------------
# Weights under a frozen quantizer: quantized once per change, not once per forward
# ---------------------------------------------------------------------------------------------------------------
#: Parameter -> (key, quantized value, whether every element lies strictly inside the clip values). The key holds
#: the storage and version counter of the weight and of each quantizer parameter: an optimizer step, a
#: ``load_state_dict`` or any in-place write under ``no_grad`` bumps a version and so invalidates the entry.
_frozen_weight_cache = WeakIdKeyDictionary()


class _FrozenQuantizer(torch.autograd.Function):
    """Hands out a cached ``Q(x)``; backward is the straight-through input gradient (the quantizer is frozen)."""

    @staticmethod
    def forward(ctx, x, value, inside_clip, clip_val):
        ctx.inside_clip, ctx.clip_val = inside_clip, clip_val
        ctx.save_for_backward(None if inside_clip else x)
        return value.view_as(value)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        if ctx.inside_clip:
            return grad_output, None, None, None
        return torch.ops.aten.hardtanh_backward(grad_output, ctx.saved_tensors[0], *ctx.clip_val), None, None, None


def _version_key(tensors: Sequence[Tensor]) -> Tuple:
    return tuple((tensor.data_ptr(), tensor._version, tensor.shape, tensor.dtype) for tensor in tensors)


def _frozen_weight_quantize(x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor], clip_val: ClipVal,
                            quant_type: QuantizationType) -> Optional[Tensor]:
    """``Q(x)`` from the cache where ``x`` is a Parameter whose quantizer cannot change the result between two of
    its writes (its ``d``, ``q_m``, ``t`` do not require grad; straight-through quantizers); ``None`` otherwise.

    Gradient accumulation and repeated evaluation then quantize each weight once per optimizer step. Writes that
    bypass the version counter (through ``.data``) are not seen: use ``torch.no_grad()`` and in-place operations
    on the Parameter itself, as torch optimizers do.
    """
    params = (d, q_m) if t is None else (d, q_m, t)
    if (not isinstance(x, nn.Parameter) or quant_type is QuantizationType.DGE or is_tracing()
            or any(param.requires_grad for param in params)):
        return None
    key = _version_key((x, *params))
    entry = _frozen_weight_cache.get(x)
    if entry is None or entry[0] != key:
        with torch.no_grad():
            value = _quantize_raw(x, d, q_m, t)
            x_min, x_max = torch.aminmax(x)
            entry = (key, value, bool((x_min > clip_val[0]) & (x_max < clip_val[1])))
        _frozen_weight_cache[x] = entry
    _, value, inside_clip = entry
    if torch.is_grad_enabled() and x.requires_grad:
        return _FrozenQuantizer.apply(x, value, inside_clip, clip_val)
    return value.view_as(value)


# ---------------------------------------------------------------------------------------------------------------
# The traced unit
# ---------------------------------------------------------------------------------------------------------------
def fake_quantize(
    x: Tensor,
    d: Tensor,
    q_m: Tensor,
    t: Optional[Tensor] = None,
    clip_val: Sequence[float] = DEFAULT_CLIP_VAL,
    quant_type: Union[QuantizationType, str] = QuantizationType.SYMMETRIC_LINEAR,
    num_bits: Optional[int] = None,
) -> Tensor:
    """Fake-quantize ``x`` (same shape and dtype) with step ``d``, range ``q_m`` and, if nonlinear, exponent ``t``.

    ``d``, ``q_m``, ``t`` are shape-``[1]`` tensors (usually the layer's ``nn.Parameter`` objects); ``clip_val`` is
    ``(lo, hi)`` for the straight-through input gradient; ``quant_type`` selects :class:`SymQuantizerLinear`
    (``t`` must be ``None``), :class:`SymQuantizerNonLinear` (``t`` required) or :class:`DGEQuantizer`
    (``num_bits`` for its gradient, ``None``: the current rounded bit width).

    Tracing contract (the graph analyzer depends on it): every quantized layer calls this function exactly once
    per quantizer application (once for its weight, once for its input activation in weight+activation mode),
    passing its own ``weight`` Parameter object (for the weight quantizer) or the layer input (for the activation
    quantizer) as ``x`` and its own quantizer Parameter objects as ``d``, ``q_m`` and ``t``. The function is
    overridable through ``__torch_function__``: a ``torch.overrides.TorchFunctionMode`` (or a tensor subclass)
    receives one call with ``func is fake_quantize`` and these arguments, and sees none of the operations inside
    it. Under the TorchScript ONNX exporter each quantizer becomes one autograd-function node whose ``symbolic``
    emits standard ONNX operators.
    """
    tensor_args = (x, d, q_m) if t is None else (x, d, q_m, t)
    if has_torch_function(tensor_args):
        return handle_torch_function(
            fake_quantize, tensor_args, x, d, q_m, t, clip_val=clip_val, quant_type=quant_type, num_bits=num_bits
        )
    quant_type = QuantizationType.parse(quant_type)
    if (t is None) == (quant_type is QuantizationType.SYMMETRIC_NONLINEAR):
        raise ValueError(f"The {quant_type.value} quantizer {'needs' if t is None else 'takes no'} exponent t.")
    clip_val = (float(clip_val[0]), float(clip_val[1]))
    cached = _frozen_weight_quantize(x, d, q_m, t, clip_val, quant_type)
    if cached is not None:
        return cached
    needs_autograd = torch.is_grad_enabled() and any(arg.requires_grad for arg in tensor_args)
    if not (needs_autograd or torch.jit.is_tracing()):
        return _quantize_raw(x, d, q_m, t)
    if quant_type is QuantizationType.SYMMETRIC_LINEAR:
        return SymQuantizerLinear.apply(x, d, q_m, clip_val, 0.0)
    if quant_type is QuantizationType.SYMMETRIC_NONLINEAR:
        return SymQuantizerNonLinear.apply(x, d, q_m, t, clip_val, 0.0)
    return DGEQuantizer.apply(x, d, q_m, clip_val, 0.0, num_bits)
