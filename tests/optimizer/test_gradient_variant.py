"""The gradient variant (SPEC 5.2): with pruning off, the optimizers are SGD / Adam / AdamW."""

import copy
import math

import pytest
import torch

from only_train_once.optimizer import HESSO
from tests.optimizer.common import TinyMLP, build, train


@pytest.mark.parametrize("variant, kwargs, reference", [
    ("sgd", dict(first_momentum=0.9, weight_decay=1e-3),
     lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("adam", dict(weight_decay=1e-3),
     lambda params: torch.optim.Adam(params, lr=0.05, weight_decay=1e-3)),
    ("adamw", dict(weight_decay=1e-2),
     lambda params: torch.optim.AdamW(params, lr=0.05, weight_decay=1e-2)),
])
def test_standard_moments_match_torch_optimizers(variant, kwargs, reference):
    model, oto = build(TinyMLP, quantized=False)
    twin = copy.deepcopy(model)
    ours = HESSO(oto.get_param_groups(), variant=variant, lr=0.05, target_group_sparsity=0.0, **kwargs)
    theirs = reference(list(twin.parameters()))
    train(model, ours, 6)
    train(twin, theirs, 6)
    for mine, expected in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)


def test_reference_moments_make_the_first_adam_step_a_scaled_sign():
    model, oto = build(TinyMLP, quantized=False)
    optimizer = HESSO(oto.get_param_groups(), variant="adam", lr=1.0, target_group_sparsity=0.0,
                      moment_initialization="reference")
    before = model.fc1.weight.detach().clone()
    train(model, optimizer, 1)
    grad = model.fc1.weight.grad
    expected = before - math.sqrt(1 - 0.999) / (1 - 0.9) * torch.sign(grad) * (grad.abs() > 1e-6)
    moved = (grad.abs() > 1e-6)
    torch.testing.assert_close(model.fc1.weight.detach()[moved], expected[moved], rtol=1e-4, atol=1e-4)


def test_moment_buffers_are_keyed_by_parameter_name():
    model, oto = build(TinyMLP, quantized=False)
    optimizer = oto.hesso(variant="adam", lr=1e-3, target_group_sparsity=0.0)
    train(model, optimizer, 1)
    names = {name for name, p in model.named_parameters()}
    assert set(optimizer.first_moment_grads) == names == set(optimizer.second_moment_grads)
    group = optimizer.param_groups[0]
    assert set(group["grad_variant"]) == set(group["p_names"])
