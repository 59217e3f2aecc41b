"""Quantizer mathematics: forward levels, bit-width formulas, closed-form gradients (SPEC section 4).

Every test runs against the eager kernels and, in the slow suite (compilation takes minutes on a cold cache),
against the fused compiled ones.
"""
import math

import pytest
import torch

from only_train_once.quantization import fused
from only_train_once.quantization import quantizer as quantizer_module
from only_train_once.quantization.quant_layers import (
    DGEQuantizer,
    NanInGradientError,
    QuantizationType,
    SymQuantizerLinear,
    SymQuantizerNonLinear,
)
from only_train_once.quantization.quantizer import bit_width, fake_quantize, step_size_for_bits

CLIP = (-2.0, 2.0)


@pytest.fixture(autouse=True, params=["eager", pytest.param("fused", marks=pytest.mark.slow)])
def kernels(request):
    fused.set_fused_kernels(request.param == "fused")
    yield request.param
    assert fused.fused_kernels_enabled() == (request.param == "fused"), "the fused kernels fell back to eager"
    fused.set_fused_kernels(False)


def scalar(value, dtype=torch.float64):
    return torch.tensor([value], dtype=dtype, requires_grad=True)


def random_input(n=4000, seed=0, dtype=torch.float64):
    """Values inside and beyond q_m = 1 and beyond the clip values +-2, plus exact zeros."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 1.5
    x[:10] = 0.0
    return x.requires_grad_()


def closed_form_grads(x, grad_out, d, q_m, t=None, clip=CLIP):
    """SPEC 4.2 written out element by element with masks, q_s = 0, independently of the implementation."""
    x, g = x.detach(), grad_out.detach()
    d, q = float(torch.as_tensor(d).detach()), float(torch.as_tensor(q_m).detach())
    tt = 1.0 if t is None else float(t)
    a, sign = x.abs(), torch.sign(x)
    inside = (a > 0) & (a < q)
    saturated = a >= q
    u = torch.where(inside, a.clamp_min(1e-300) ** tt, torch.zeros_like(a))
    r_val = q**tt
    v = torch.where(saturated, torch.full_like(a, r_val), u)
    rho = torch.where(a > 0, torch.round(v / d) - v / d, torch.zeros_like(a))
    kappa = 1.0 if t is None else tt * q ** (tt - 1.0)
    tau = torch.where(saturated, torch.full_like(a, r_val * math.log(q)), torch.zeros_like(a))
    tau = torch.where(inside, u * torch.log(a.clamp_min(1e-300)), tau)
    return {
        "x": torch.where((x > clip[0]) & (x < clip[1]), g, torch.zeros_like(g)),
        "d": (g * sign * rho).sum(),
        "q_m": (g * sign * kappa * (a > q)).sum(),
        "t": (g * sign * tau).sum(),
    }


def test_linear_forward_is_clamped_uniform_rounding():
    x = random_input().detach()
    d, q_m = scalar(0.05), scalar(1.0)
    out = SymQuantizerLinear.apply(x, d, q_m, CLIP, 0)
    expected = 0.05 * torch.round(x.clamp(-1.0, 1.0) / 0.05)
    assert torch.equal(out, expected)


def test_nonlinear_forward_matches_formula():
    x = random_input().detach()
    d, q_m, t = scalar(0.01), scalar(1.0), scalar(1.3)
    out = SymQuantizerNonLinear.apply(x, d, q_m, t, CLIP, 0)
    expected = torch.sign(x) * 0.01 * torch.round(x.abs().clamp(max=1.0) ** 1.3 / 0.01)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_nonlinear_with_t_equal_one_equals_linear():
    x = random_input().detach()
    d, q_m = scalar(0.03), scalar(0.9)
    linear = SymQuantizerLinear.apply(x, d, q_m, CLIP, 0)
    nonlinear = SymQuantizerNonLinear.apply(x, d, q_m, scalar(1.0), CLIP, 0)
    assert torch.equal(linear, nonlinear)


@pytest.mark.parametrize("t", [None, 1.0, 1.3, 0.7])
def test_gradients_equal_closed_form(t):
    x = random_input(seed=1)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    d, q_m = scalar(0.07), scalar(1.1)
    if t is None:
        out = SymQuantizerLinear.apply(x, d, q_m, CLIP, 0)
        params = {"d": d, "q_m": q_m}
    else:
        t_param = scalar(t)
        out = SymQuantizerNonLinear.apply(x, d, q_m, t_param, CLIP, 0)
        params = {"d": d, "q_m": q_m, "t": t_param}
    out.backward(grad_out)
    expected = closed_form_grads(x, grad_out, d, q_m, t)
    torch.testing.assert_close(x.grad, expected["x"], rtol=0, atol=0)
    for name, param in params.items():
        assert param.grad.shape == (1,)
        torch.testing.assert_close(param.grad[0], expected[name], rtol=1e-10, atol=1e-12)


def test_float32_gradients_close_to_float64_closed_form():
    x64 = random_input(seed=3)
    grad_out = torch.randn(x64.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x = x64.detach().float().requires_grad_()
    d, q_m, t = (scalar(v, torch.float32) for v in (0.07, 1.1, 1.2))
    SymQuantizerNonLinear.apply(x, d, q_m, t, CLIP, 0).backward(grad_out.float())
    expected = closed_form_grads(x.double(), grad_out, 0.07, 1.1, 1.2)
    assert torch.equal(x.grad, expected["x"].float())
    torch.testing.assert_close(q_m.grad[0].double(), expected["q_m"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t.grad[0].double(), expected["t"], rtol=1e-4, atol=1e-4)


def test_input_gradient_not_masked_beyond_q_m_but_at_clip_values():
    x = torch.tensor([-2.5, -2.0, -1.5, 0.0, 1.5, 2.0, 2.5], dtype=torch.float64, requires_grad=True)
    SymQuantizerLinear.apply(x, scalar(0.1), scalar(1.0), CLIP, 0).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_at_b_bits_at_most_2_pow_b_minus_1_distinct_values(bits):
    x = torch.linspace(-3.0, 3.0, 20001, dtype=torch.float64)[torch.randperm(20001)]
    q_m = x.abs().max()
    d = step_size_for_bits(bits, q_m)
    out = fake_quantize(x, d.reshape(1), q_m.reshape(1))
    assert 0 < out.unique().numel() <= 2**bits - 1
    assert out.unique().numel() == 2**bits - 1  # the range is used fully


@pytest.mark.parametrize("bits", [2, 4, 8, 16, 24])
@pytest.mark.parametrize("q_m", [0.05, 1.0, 37.0])
def test_bit_width_of_step_size_for_bits_round_trips(bits, q_m):
    assert bit_width(step_size_for_bits(bits, q_m), q_m) == pytest.approx(bits, abs=1e-9)
    assert bit_width(step_size_for_bits(bits, q_m, 1.4), q_m, 1.4) == pytest.approx(bits, abs=1e-9)
    assert isinstance(step_size_for_bits(bits, q_m, 1.4), float) and isinstance(bit_width(0.1, q_m, 1.4), float)
    tensor_bits = bit_width(step_size_for_bits(bits, torch.tensor([q_m])), torch.tensor([q_m]))
    assert round(float(tensor_bits)) == bits


def test_bit_width_reference_anchor_18_bits():
    assert round(bit_width(1e-4, 10.0)) == 18


def test_step_size_rejects_one_bit():
    with pytest.raises(ValueError, match="more than 1 bit"):
        step_size_for_bits(1, 1.0)


@pytest.mark.parametrize("q_m", [-0.8, 0.0])
def test_non_positive_q_m_does_not_break_the_quantizer(q_m):
    x = random_input().detach()
    out = fake_quantize(x, scalar(0.1), scalar(q_m))
    assert torch.isfinite(out).all()
    expected = fake_quantize(x, scalar(0.1), scalar(max(abs(q_m), 1e-10)))
    assert torch.equal(out, expected)
    assert math.isfinite(bit_width(0.1, q_m))


def test_negative_q_m_gradient_moves_its_magnitude():
    x = random_input(seed=5)
    q_pos, q_neg = scalar(0.5), scalar(-0.5)
    fake_quantize(x, scalar(0.1), q_pos).sum().backward()
    fake_quantize(x.detach(), scalar(0.1), q_neg).sum().backward()
    assert q_pos.grad.abs().item() > 0
    assert torch.equal(q_neg.grad, -q_pos.grad)


def test_zero_or_negative_step_is_used_by_magnitude():
    x = random_input().detach()
    assert torch.equal(fake_quantize(x, scalar(-0.1), scalar(1.0)), fake_quantize(x, scalar(0.1), scalar(1.0)))
    assert torch.isfinite(fake_quantize(x, scalar(0.0), scalar(1.0))).all()


def test_nan_in_gradient_raises_specific_error():
    x = torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True)
    out = SymQuantizerLinear.apply(x, scalar(0.1), scalar(1.0), CLIP, 0)
    with pytest.raises(NanInGradientError) as info:
        out.backward(torch.tensor([float("nan"), 1.0], dtype=torch.float64))
    assert "d" in info.value.message


def test_fake_quantize_without_grad_equals_autograd_forward():
    x = random_input().detach()
    d, q_m, t = scalar(0.02), scalar(1.0), scalar(1.2)
    with_grad = fake_quantize(x, d, q_m, t, quant_type=QuantizationType.SYMMETRIC_NONLINEAR)
    with torch.no_grad():
        without = fake_quantize(x, d, q_m, t, quant_type="symmetric+nonlinear")
    assert with_grad.grad_fn is not None
    assert torch.equal(with_grad, without)


def test_fake_quantize_checks_exponent_matches_type():
    x = random_input().detach()
    with pytest.raises(ValueError, match="needs exponent"):
        fake_quantize(x, scalar(0.1), scalar(1.0), quant_type=QuantizationType.SYMMETRIC_NONLINEAR)
    with pytest.raises(ValueError, match="takes no exponent"):
        fake_quantize(x, scalar(0.1), scalar(1.0), scalar(1.0))


def test_dge_forward_and_gradient_match_reference_example():
    x = torch.tensor([0.3], requires_grad=True)
    d, q_m = torch.tensor([0.2], requires_grad=True), torch.tensor([1.0], requires_grad=True)
    out = DGEQuantizer.apply(x, d, q_m, (-1.0, 1.0), 0, 4)
    assert torch.equal(out.detach(), d.detach() * torch.round(x.detach() / d.detach()))
    out.backward()
    expected = 0.2 * torch.abs(torch.tensor([0.3]) - 0.1) ** -0.8
    torch.testing.assert_close(x.grad, expected)
    assert d.grad is not None and q_m.grad is not None


def test_dge_input_gradient_differs_from_straight_through():
    x = torch.tensor([0.3, -0.45, 0.05], requires_grad=True)
    x_ste = x.detach().clone().requires_grad_()
    args = (torch.tensor([0.2]), torch.tensor([1.0]), (-1.0, 1.0), 0)
    DGEQuantizer.apply(x, *args, 4).sum().backward()
    SymQuantizerLinear.apply(x_ste, *args).sum().backward()
    assert not torch.allclose(x.grad, x_ste.grad)
    expected = (0.2 * (x.detach() - 0.1).abs() ** -0.8).clamp(-3, 3)
    torch.testing.assert_close(x.grad, expected)


def test_dge_through_fake_quantize_uses_current_bit_width():
    x = torch.tensor([0.3, -0.7], requires_grad=True)
    d, q_m = torch.tensor([step_size_for_bits(4, 1.0)]), torch.tensor([1.0])
    fake_quantize(x, d, q_m, clip_val=(-1.0, 1.0), quant_type="dge").sum().backward()
    expected = (0.2 * (x.detach() - d / 2).abs() ** -0.8).clamp(-3, 3)
    torch.testing.assert_close(x.grad, expected)


def frozen_layer_weight(t=None):
    weight = torch.nn.Parameter(random_input(seed=7).detach().reshape(40, 100))
    params = [torch.tensor([v], dtype=torch.float64) for v in ((0.05, 1.0) if t is None else (0.05, 1.0, t))]
    quant_type = "symmetric+linear" if t is None else "symmetric+nonlinear"
    return weight, params, quant_type


@pytest.mark.parametrize("t", [None, 1.3])
def test_frozen_quantizer_quantizes_a_weight_once_per_change(t, monkeypatch):
    weight, params, quant_type = frozen_layer_weight(t)
    calls = []
    quantize = quantizer_module._quantize_raw
    monkeypatch.setattr(quantizer_module, "_quantize_raw", lambda *args: calls.append(1) or quantize(*args))
    first = fake_quantize(weight, *params, quant_type=quant_type)
    second = fake_quantize(weight, *params, quant_type=quant_type)
    assert len(calls) == 1 and torch.equal(first, second)
    with torch.no_grad():
        weight.mul_(0.5)  # an optimizer step: the version counter moves
    third = fake_quantize(weight, *params, quant_type=quant_type)
    assert len(calls) == 2 and torch.equal(third, quantize(weight.detach(), *params[:2], t_of(params)))
    with torch.no_grad():
        params[0].fill_(0.1)  # the step changes (e.g. GETA fixing the bit width)
    fourth = fake_quantize(weight, *params, quant_type=quant_type)
    assert len(calls) == 3 and torch.equal(fourth, quantize(weight.detach(), *params[:2], t_of(params)))


def t_of(params):
    return params[2] if len(params) == 3 else None


def test_frozen_quantizer_gradient_is_straight_through_and_accumulates():
    weight, params, quant_type = frozen_layer_weight()
    grad_out = torch.randn(weight.shape, generator=torch.Generator().manual_seed(8), dtype=weight.dtype)
    for _ in range(2):  # two forwards of one optimizer step (gradient accumulation)
        fake_quantize(weight, *params, clip_val=CLIP, quant_type=quant_type).backward(grad_out)
    expected = closed_form_grads(weight, grad_out, *params)["x"]
    assert torch.equal(weight.grad, 2 * expected)
    assert not torch.equal(expected, grad_out)  # the input holds values beyond the clip values


def test_trainable_quantizer_is_not_cached():
    weight, params, quant_type = frozen_layer_weight()
    params[0].requires_grad_()
    out = fake_quantize(weight, *params, quant_type=quant_type)
    out.sum().backward()
    assert params[0].grad is not None and weight not in quantizer_module._frozen_weight_cache


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_power_of_zero_magnitudes_stays_out_of_the_subnormal_range(dtype):
    # Exact zeros are floored at the smallest normal magnitude; raised to t > 1 the exp would underflow into the
    # CPU's slow subnormal path (about 60x slower) without the exponent floor.
    tiny = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).tiny
    log_magnitude = torch.full((64,), tiny, dtype=dtype).log()
    t = torch.tensor([1.5], dtype=dtype)
    power = quantizer_module.power_of_log(log_magnitude, t, torch.empty_like(log_magnitude))
    assert bool((power >= tiny).all()) and bool((power < 4 * tiny).all())


def test_nonlinear_float32_zeros_quantize_to_zero_with_t_above_one():
    x = torch.relu(torch.randn(1000, generator=torch.Generator().manual_seed(9)))
    out = SymQuantizerNonLinear.apply(x, scalar(0.01, torch.float32), scalar(1.0, torch.float32),
                                      scalar(1.2, torch.float32), CLIP, 0)
    expected = 0.01 * torch.round(x.clamp(max=1.0) ** 1.2 / 0.01)
    assert bool((x == 0).any()) and bool((out[x == 0] == 0).all())
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("t", [None, 1.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_host_scalar_bookkeeping_equals_the_on_device_one(t, dtype, monkeypatch):
    # CPU float32/float64 quantizers read d, q_m, t as Python numbers; elsewhere (GPU, float16) the same
    # arithmetic runs on one-element tensors. Both must give the same values and gradients.
    def run():
        x = random_input(seed=11, dtype=dtype)
        d, q_m = scalar(-0.07, dtype), scalar(1.1, dtype)  # a negative step: its gradient's sign flips
        params = (d, q_m) if t is None else (d, q_m, scalar(t, dtype))
        quant_type = "symmetric+linear" if t is None else "symmetric+nonlinear"
        out = fake_quantize(x, *params, quant_type=quant_type)
        out.backward(torch.linspace(-1.0, 1.0, x.numel(), dtype=dtype))
        return [out.detach(), x.grad] + [param.grad for param in params]

    host = run()
    monkeypatch.setattr(quantizer_module, "_host_values", lambda x, params: None)
    on_device = run()
    for got, expected in zip(host, on_device):
        torch.testing.assert_close(got, expected, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)


def test_float16_power_keeps_small_values():
    # The exponent floor sits at the float32 bound for float16 inputs: a power of 1e-4 (normal in float16, below
    # e * float16's smallest normal number) must stay 1e-4, not be raised to the floor.
    x = torch.tensor([1e-4, 0.5, 0.0], dtype=torch.float16)
    out = SymQuantizerNonLinear.apply(x, scalar(7e-5, torch.float32), scalar(1.0, torch.float32),
                                      scalar(1.0001, torch.float32), CLIP, 0)
    expected = torch.sign(x.float()) * 7e-5 * torch.round(x.float().abs() ** 1.0001 / 7e-5)  # 1e-4 -> 1 step
    torch.testing.assert_close(out.float(), expected, rtol=2e-3, atol=0)
