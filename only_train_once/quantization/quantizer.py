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
gradient accumulation or of an evaluation loop.
"""
from enum import Enum
from typing import Iterator, Optional, Sequence, Tuple, Union

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


class _ParsableEnum(Enum):
    """Enum whose members can be given by value, with an error that lists the valid values."""

    @classmethod
    def parse(cls, value: Union["_ParsableEnum", str]) -> "_ParsableEnum":
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


def _exponent(t: Optional[Tensor]) -> Optional[Tensor]:
    """``t``, or ``None`` for the linear quantizer and, in eager mode, for ``t == 1`` (one host read of ``t``; none
    on the meta device, where a model is analysed without values)."""
    return None if t is None or (not is_tracing() and not t.is_meta and float(t) == 1.0) else t


def _quantize_into(x: Tensor, d: Tensor, q: Tensor, t: Optional[Tensor], out: Tensor) -> None:
    """Write ``Q(x) = sign(x) * d * round(min(|x|, q)^t / d)`` into ``out`` (effective scalars; ``t = None``: 1)."""
    if t is None:
        # Round-half-to-even is odd-symmetric: sign(x) * round(min(|x|, q)/d) == round(clamp(x, -q, q)/d).
        torch.clamp(x, max=q, out=out).clamp_(min=-q).div_(d)  # two tensor bounds at once is ~4x slower on CPU
    else:
        # min(|x|, q)^t as exp(t * ln(.)), |x| floored at the smallest normal number (log of 0 is ~10x slower on
        # CPU); sign(0) = 0 restores the zeros.
        magnitude = torch.abs(x, out=out).clamp_(max=q).clamp_(min=torch.finfo(x.dtype).tiny)
        magnitude.log_().mul_(t).exp_().div_(d).mul_(torch.sign(x))
    out.round_().mul_(d)


def _quantize(x: Tensor, d: Tensor, q: Tensor, t: Optional[Tensor]) -> Tensor:
    """``Q(x)`` with effective scalars (``t = None``: linear quantizer)."""
    out = torch.empty_like(x)
    exponent = _exponent(t)
    for x_block, out_block in _blocks(x, out):
        _quantize_into(x_block, d, q, exponent, out_block)
    return out


def _flat_dot(a: Tensor, b: Tensor) -> Tensor:
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _gradient_sums(
    grad_output: Tensor, x: Tensor, d: Tensor, q: Tensor, t: Optional[Tensor], needs: Tuple[bool, bool, bool]
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """The reductions behind the ``(d, q_m, t)`` gradients of SPEC 4.2, for the requested entries.

    With ``c = clamp(x, -q, q)``, ``m = |c| = min(|x|, q)``, ``v = m^t`` and ``s = sign(x) * v / d``: ``sum(g * rho)``
    with ``rho = round(s) - s``; ``sum(g * sign(x))`` over ``|x| > q``, where ``sign(x - c)`` is that signed mask;
    ``sum(g * s * ln m)`` (the ``t`` gradient over ``d``). The factors are recomputed block by block in two scratch
    buffers and reduced at once, so no tensor of the input's size is kept between forward and backward.
    """
    needs_d, needs_q, needs_t = needs
    sums = [grad_output.new_zeros(()) if need else None for need in needs]
    if not any(needs):
        return tuple(sums)
    exponent = _exponent(t)
    tiny = torch.finfo(x.dtype).tiny
    for x_block, grad_block in _blocks(x, grad_output):
        clipped, scratch = torch.empty_like(x_block), torch.empty_like(x_block)
        torch.clamp(x_block, max=q, out=clipped).clamp_(min=-q)
        if needs_q:
            sums[1] += _flat_dot(grad_block, torch.sub(x_block, clipped, out=scratch).sign_())
        if not (needs_d or needs_t):
            continue
        log_magnitude = None
        if exponent is not None or needs_t:
            log_magnitude = torch.abs(clipped, out=scratch).clamp_(min=tiny).log_()
        if exponent is None:
            s = clipped.div_(d)
        else:
            s = torch.mul(log_magnitude, exponent, out=clipped).exp_().div_(d).mul_(torch.sign(x_block))
        if needs_t:
            sums[2] += _flat_dot(grad_block, log_magnitude.mul_(s))
        if needs_d:
            sums[0] += _flat_dot(grad_block, torch.round(s, out=scratch).sub_(s))
    return tuple(sums)


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
        names = ", ".join(name for name, is_nan in zip(present, nan.tolist()) if is_nan)
        raise NanInGradientError(
            f"NaN in the quantizer gradient of {names}. Check the layer input and the upstream loss for NaN or "
            "inf values, and the quantizer parameters (d, q_m, t) for non-finite values."
        )


def _check_threshold(q_s: Scalar) -> None:
    if float(q_s) != 0.0:
        raise ValueError(f"Only the zero threshold q_s = 0 is supported, got q_s={q_s!r}.")


def _quantize_raw(x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor]) -> Tensor:
    """``Q(x)`` from the raw parameters: the fused kernel where enabled, else the eager one."""
    fused_value = fused.quantize(x, d, q_m, _exponent(t), MIN_MAGNITUDE)
    return fused_value if fused_value is not None else _quantize(x, *effective_scalars(x, d, q_m, t))


def _forward(ctx, x: Tensor, d: Tensor, q_m: Tensor, t: Optional[Tensor], clip_val: ClipVal) -> Tensor:
    ctx.save_for_backward(x, d, q_m, t)
    ctx.clip_val = clip_val
    return _quantize_raw(x, d, q_m, t)


def _fused_backward(ctx, grad_output: Tensor, dge_bits: Optional[Tensor] = None) -> Optional[Tuple]:
    """``(grad_x, grad_d, grad_q_m, grad_t)`` from the fused kernel (unrequested entries ``None``), or ``None``
    where it does not apply or found a NaN (the eager path then raises the detailed error)."""
    x, d, q_m, t = ctx.saved_tensors
    needs = ctx.needs_input_grad[:3] + (t is not None and ctx.needs_input_grad[3],)
    result = fused.gradients(grad_output, x, d, q_m, t, t is not None and _exponent(t) is None, needs[3],
                             ctx.clip_val, MIN_MAGNITUDE, dge_bits)
    if result is None or bool(result[-1]):
        return None
    return tuple(grad if need else None for grad, need in zip(result[:4], needs))


def _scalar_grads(ctx, grad_output: Tensor, needs_d: bool, needs_q: bool, needs_t: bool):
    """Gradients of ``d``, ``q_m`` and ``t`` (SPEC 4.2), shaped and typed like the parameters."""
    x, d, q_m, t = ctx.saved_tensors
    d_eff, q_eff, t_eff = effective_scalars(x, d, q_m, t)
    sum_d, sum_q, sum_t = _gradient_sums(grad_output, x, d_eff, q_eff, t_eff, (needs_d, needs_q, needs_t))
    grad_d = _signed_like(sum_d, d) if needs_d else None
    grad_q = None
    if needs_q:
        kappa = 1.0 if t_eff is None else t_eff * q_eff.pow(t_eff - 1.0)
        grad_q = _signed_like(sum_q * kappa, q_m)
    grad_t = (sum_t * d_eff).reshape(t.shape).to(t.dtype) if needs_t else None
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
        fused_grads = _fused_backward(ctx, grad_output)
        if fused_grads is not None:
            return (*fused_grads[:3], None, None)
        needs = ctx.needs_input_grad
        grad_x = _ste_input_grad(grad_output, ctx.saved_tensors[0], ctx.clip_val) if needs[0] else None
        grad_d, grad_q, _ = _scalar_grads(ctx, grad_output, needs[1], needs[2], False)
        _check_finite(d=grad_d, q_m=grad_q)
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
        fused_grads = _fused_backward(ctx, grad_output)
        if fused_grads is not None:
            return (*fused_grads, None, None)
        needs = ctx.needs_input_grad
        grad_x = _ste_input_grad(grad_output, ctx.saved_tensors[0], ctx.clip_val) if needs[0] else None
        grad_d, grad_q, grad_t = _scalar_grads(ctx, grad_output, needs[1], needs[2], needs[3])
        _check_finite(d=grad_d, q_m=grad_q, t=grad_t)
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
        fused_grads = _fused_backward(ctx, grad_output, DGEQuantizer._bits(ctx))
        if fused_grads is not None:
            return (*fused_grads[:3], None, None, None)
        needs = ctx.needs_input_grad
        grad_x = DGEQuantizer._input_grad(ctx, grad_output) if needs[0] else None
        grad_d, grad_q, _ = _scalar_grads(ctx, grad_output, needs[1], needs[2], False)
        _check_finite(x=None if grad_x is None else grad_x.sum(), d=grad_d, q_m=grad_q)
        return grad_x, grad_d, grad_q, None, None, None

    @staticmethod
    def _bits(ctx) -> Tensor:
        """The bit width of the input gradient: ``num_bits``, or the current rounded one (a 0-dim tensor)."""
        x, d, q_m = ctx.saved_tensors[:3]
        if ctx.num_bits is not None:
            return torch.tensor(float(ctx.num_bits), device=x.device)
        return torch.round(bit_width(*effective_scalars(x, d, q_m, None)[:2])).reshape(())

    @staticmethod
    def _input_grad(ctx, grad_output: Tensor) -> Tensor:
        x = ctx.saved_tensors[0]
        d_eff = effective_scalars(x, *ctx.saved_tensors[1:3], None)[0]
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
