"""The fused Adam pass (:mod:`only_train_once.optimizer.fused_kernels`): the same moments and, within float
rounding, the same directions as the foreach kernels it replaces, through every GETA phase."""

import math

import pytest
import torch

from only_train_once.optimizer import base_optimizer, fused_kernels
from only_train_once.optimizer.base_optimizer import DescentPlan
from only_train_once.optimizer.fused_kernels import (_aliasing_holds, fused_adam_directions, fused_applicable,
                                                      fused_optimizer_kernels_enabled, set_fused_optimizer_kernels)
from only_train_once.optimizer.finite import NonFiniteError
from tests.optimizer.common import TinyMLP, build, train

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@pytest.fixture(autouse=True)
def fused_kernels_on():
    """The fused path is opt-in; these tests turn it on and restore the setting."""
    before = fused_optimizer_kernels_enabled()
    set_fused_optimizer_kernels(True)
    yield
    set_fused_optimizer_kernels(before)


def test_the_fused_path_is_off_unless_asked_for():
    set_fused_optimizer_kernels(False)
    assert not fused_applicable([torch.zeros(4, 4)])
    assert not fused_kernels.fused_descent_applicable(torch.zeros(4, 4), torch.zeros(4, 4))


def foreach_directions(grads, first, second, step):
    """The kernels the fused pass replaced (the previous ``BaseOptimizer._adam``)."""
    torch._foreach_lerp_(first, grads, 1.0 - BETA1)
    torch._foreach_mul_(second, BETA2)
    torch._foreach_addcmul_(second, grads, grads, value=1.0 - BETA2)
    root_correction2, correction1 = math.sqrt(1.0 - BETA2 ** step), 1.0 - BETA1 ** step
    for direction, moment in zip(grads, second):
        torch.sqrt(moment, out=direction)
    torch._foreach_add_(grads, EPS * root_correction2)
    for direction, moment in zip(grads, first):
        torch.div(moment, direction, out=direction)
    torch._foreach_mul_(grads, root_correction2 / correction1)
    return grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_pass_gives_the_same_moments_and_directions_within_rounding(dtype):
    generator = torch.Generator().manual_seed(0)
    shapes = [(100_003,), (3, 5), (1,), (0,)]  # large with a scalar tail, small, one element, empty
    first_a = [torch.zeros(s, dtype=dtype) for s in shapes]
    second_a = [torch.zeros(s, dtype=dtype) for s in shapes]
    first_b, second_b = [t.clone() for t in first_a], [t.clone() for t in second_a]
    for step in range(1, 5):
        grads = [torch.randn(s, generator=generator, dtype=dtype) * 10.0 ** -step for s in shapes]
        expected = foreach_directions([g.clone() for g in grads], first_a, second_a, step)
        fused = [g.clone() for g in grads]
        assert fused_applicable(fused + first_b + second_b)
        directions = fused_adam_directions(fused, first_b, second_b, BETA1, BETA2, EPS, step)
        assert all(d is g for d, g in zip(directions, fused))  # written into the gradients
        tolerance = 8 * torch.finfo(dtype).eps  # measured: at most 5 units in the last place
        assert all(torch.equal(a, b) for a, b in zip(first_a, first_b))
        for want, got in zip(second_a, second_b):  # the kernel's scalar tail rounds v once differently
            torch.testing.assert_close(got, want, rtol=tolerance, atol=0)
        for want, got in zip(expected, directions):
            torch.testing.assert_close(got, want, rtol=tolerance, atol=0)


def test_fused_pass_is_refused_for_half_precision_and_non_contiguous_tensors():
    assert _aliasing_holds(torch.float32) and _aliasing_holds(torch.float64)  # else the fast path is never taken
    assert not fused_applicable([torch.zeros(4, dtype=torch.bfloat16)])
    assert not fused_applicable([torch.zeros(4, 4).t()])
    assert fused_applicable([torch.zeros(4, 4)])


def run_geta(steps: int):
    # A float model: with weight+activation quantizers a change of one unit in the last place anywhere (the
    # learning rate times 1 + 2**-23 as well) moves values across rounding steps and the run diverges.
    model, oto = build(lambda: TinyMLP(width=64), quantized=False)
    optimizer = oto.geta(variant="adamw", lr=1e-2, weight_decay=1e-2, target_group_sparsity=0.5,
                         start_projection_step=2, projection_steps=4, start_pruning_step=4, pruning_steps=4,
                         pruning_periods=2)
    train(model, optimizer, steps)
    return model


def test_geta_through_every_phase_takes_the_fused_pass_and_matches_the_foreach_kernels(monkeypatch):
    calls = []
    real = fused_kernels.fused_adam_directions

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(base_optimizer, "fused_adam_directions", counted)
    fused = run_geta(12)
    assert len(calls) >= 12
    monkeypatch.setattr(base_optimizer, "fused_applicable", lambda tensors: False)
    unfused = run_geta(12)
    pairs = list(zip(fused.state_dict().items(), unfused.state_dict().items()))
    for (name, got), (_, want) in pairs:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)  # measured 5e-8
    # the pruned units are the same ones: exactly zero in both runs
    for (name, got), (_, want) in pairs:
        assert torch.equal(got == 0, want == 0), name


def test_an_adam_step_that_would_overflow_still_raises_before_writing():
    model, oto = build(lambda: TinyMLP(width=16), quantized=False)
    optimizer = oto.geta(variant="adam", lr=1e39, target_group_sparsity=0.5)
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(NonFiniteError, match="would write NaN or inf"):
        optimizer.step()
    assert all(torch.equal(value, before[name]) for name, value in model.state_dict().items())


def test_a_decayed_descent_runs_fused_within_one_rounding_and_leaves_the_variant(monkeypatch):
    calls = []
    real = fused_kernels.fused_decay_and_step
    monkeypatch.setattr(base_optimizer, "fused_decay_and_step", lambda *args: calls.append(1) or real(*args))
    generator = torch.Generator().manual_seed(1)
    params = [torch.randn(10_007, generator=generator), torch.randn(3, 4, generator=generator)]
    variants = [torch.randn(p.shape, generator=generator) for p in params]
    originals = [v.clone() for v in variants]
    group = {"params": [p.clone() for p in params], "p_names": ["a", "b"], "weight_decay": 0.1}
    plan = DescentPlan()
    plan.add(group, [(0, 0.01), (1, 0.01)], variants, decay=True)
    plan.run()
    assert calls == [1]  # one fused kernel for both parameters
    for got, param, variant, original in zip(group["params"], params, variants, originals):
        want = param * (1.0 - 0.01 * 0.1) - 0.01 * variant
        torch.testing.assert_close(got, want, rtol=4 * torch.finfo(torch.float32).eps, atol=1e-7)
        assert not torch.equal(got, param)
        assert torch.equal(variant, original)
