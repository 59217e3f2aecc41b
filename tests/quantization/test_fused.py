"""The fused-kernel switch: off by default, eager fallback without a crash when compilation fails."""
import logging

import pytest
import torch

from only_train_once.quantization import fused
from only_train_once.quantization.quantizer import fake_quantize


@pytest.fixture
def restore_switch():
    yield
    fused.set_fused_kernels(False)
    fused._compiled.clear()


def quantize_with_grads(x):
    x = x.clone().requires_grad_()
    d, q_m, t = (torch.tensor([v], requires_grad=True) for v in (0.05, 1.0, 1.2))
    out = fake_quantize(x, d, q_m, t, quant_type="symmetric+nonlinear")
    out.backward(torch.linspace(-1.0, 1.0, x.numel()).reshape(x.shape))
    return out.detach(), x.grad, d.grad, q_m.grad, t.grad


def test_fused_kernels_are_off_by_default():
    assert not fused.fused_kernels_enabled()


def test_failed_compilation_falls_back_to_eager_and_logs_once(monkeypatch, caplog, restore_switch):
    x = torch.randn(64, 3)
    expected = quantize_with_grads(x)

    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    fused._compiled.clear()
    fused.set_fused_kernels(True)
    with caplog.at_level(logging.WARNING, logger=fused.__name__):
        first = quantize_with_grads(x)
        second = quantize_with_grads(x)
    assert not fused.fused_kernels_enabled()
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "no C++ compiler" in caplog.records[0].getMessage()
    for got in (first, second):
        for value, reference in zip(got, expected):
            assert torch.equal(value, reference)


def test_fused_path_is_not_used_under_tracing(monkeypatch, restore_switch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compiled.append(fn) or fn)
    fused._compiled.clear()
    fused.set_fused_kernels(True)
    d, q_m = torch.tensor([0.1]), torch.tensor([1.0])
    traced = torch.jit.trace(lambda x: fake_quantize(x, d, q_m), torch.randn(5), check_trace=False)
    assert compiled == []
    assert torch.equal(traced(torch.full((5,), 0.26)), torch.full((5,), 0.3))


@pytest.mark.slow
def test_new_bits_shapes_and_clip_values_do_not_recompile(restore_switch):
    counters = pytest.importorskip("torch._dynamo.utils").counters
    fused.set_fused_kernels(True)

    def step(shape, bits, clip, trainable=True, transpose=False):
        x = torch.randn(shape)
        x = (x.transpose(0, 1) if transpose else x).requires_grad_()
        d = torch.tensor([2.0 ** -bits], requires_grad=True)
        q_m, t = torch.tensor([1.0], requires_grad=trainable), torch.tensor([1.1], requires_grad=trainable)
        fake_quantize(x, d, q_m, t, clip_val=clip, quant_type="symmetric+nonlinear").sum().backward()

    step((1000,), 8, (-2.0, 2.0))
    step((3000,), 4, (-1.0, 1.0))  # a second clip value may turn the first graph's floats dynamic
    step((100000,), 4, (-1.0, 1.0))  # inductor plans reductions of more than 4096 elements apart: one more graph
    step((1000,), 4, (-1.0, 1.0), trainable=False)  # no t gradient: its own kernel variant, both size ranges
    step((100000,), 4, (-1.0, 1.0), trainable=False)
    graphs = counters["stats"]["unique_graphs"]
    for shape, bits, clip, trainable, transpose in (
            ((40, 100), 2, (-3.0, 3.0), True, False), ((7, 11), 16, (-2.0, 2.0), True, True),
            ((64, 32, 3, 3), 5, (-0.5, 0.5), True, False), ((123457,), 6, (-2.0, 2.0), True, False),
            ((300, 200), 8, (-2.0, 2.0), False, True), ((16, 8, 5, 5), 3, (-1.0, 1.0), False, False)):
        step(shape, bits, clip, trainable, transpose)
    assert counters["stats"]["unique_graphs"] == graphs, dict(counters["recompiles"])
    assert fused.fused_kernels_enabled()
