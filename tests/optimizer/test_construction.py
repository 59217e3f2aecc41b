"""Constructor surface: reference attributes (SPEC 5.1), argument checks, forwarding through OTO, no stray files."""

import os

import pytest
import torch

from only_train_once.optimizer import HESSO, HESSOCRIC, SUPPORT_GRADIENT_ESTIMATES
from tests.optimizer.common import DigitsNet, TinyMLP, batch, build, train


def test_geta_has_the_reference_attributes():
    _, oto = build(DigitsNet)
    optimizer = oto.geta(variant="adam", lr=1e-3, lr_quant=1e-3, first_momentum=0.9, weight_decay=1e-4,
                         target_group_sparsity=0.5, projection_steps=10, start_pruning_step=10, pruning_steps=10)
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["lr"] == 1e-3
    assert optimizer.param_groups[0]["weight_decay"] == 1e-4
    expected = dict(target_group_sparsity=0.5, max_bit_wt=16, min_bit_wt=2, max_bit_act=16, min_bit_act=2,
                    bit_reduction=2, start_projection_step=0, start_pruning_step=10, projection_periods=1,
                    pruning_periods=1, projection_period_duration=10, pruning_period_duration=10,
                    projection_steps=10, pruning_steps=10)
    assert {k: getattr(optimizer, k) for k in expected} == expected
    state = optimizer.state_dict()
    assert state["num_steps"] == 0
    assert {"pruning_periods", "start_projection_step", "projection_periods", "param_groups",
            "pruned_group_indices", "pruned_group_idxes"} <= set(state)


def test_period_budgets_split_the_target_with_the_remainder_last():
    _, oto = build(DigitsNet)
    optimizer = oto.hesso(lr=0.1, target_group_sparsity=0.7, pruning_steps=30, pruning_periods=4)
    assert optimizer.total_num_groups == 64
    assert optimizer.target_num_redundant_groups == 44
    assert optimizer.active_num_redundant_groups == [11, 11, 11, 11]
    optimizer = oto.hesso(lr=0.1, target_group_sparsity=0.7, pruning_steps=30, pruning_periods=3)
    assert optimizer.active_num_redundant_groups == [14, 14, 16]


@pytest.mark.parametrize("kwargs, argument", [
    (dict(variant="rmsprop"), "variant"),
    (dict(lr=-1.0), "lr"),
    (dict(lr_quant=-1.0), "lr_quant"),
    (dict(target_group_sparsity=1.0), "target_group_sparsity"),
    (dict(target_group_sparsity=-0.1), "target_group_sparsity"),
    (dict(min_bit_wt=8, max_bit_wt=4), "min_bit_wt"),
    (dict(min_bit_act=8, max_bit_act=4), "min_bit_act"),
    (dict(min_bit_wt=1), "min_bit_wt"),
    (dict(pruning_steps=2, pruning_periods=3), "pruning_steps"),
    (dict(projection_steps=2, projection_periods=3), "projection_steps"),
    (dict(group_divisible=0), "group_divisible"),
    (dict(importance_score_criteria={"magnitude": 1.0, "l1": 1.0}), "importance_score_criteria"),
    (dict(bit_reduction=-2), "bit_reduction"),
    (dict(forget_rate_guard="maybe"), "forget_rate_guard"),
])
def test_bad_geta_arguments_raise_value_errors_naming_them(kwargs, argument):
    _, oto = build(TinyMLP)
    arguments = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=argument):
        oto.geta(**arguments)


def test_bad_hesso_arguments_raise_value_errors_naming_them():
    _, oto = build(TinyMLP, quantized=False)
    with pytest.raises(ValueError, match="variant"):
        oto.hesso(variant="adagrad")
    with pytest.raises(ValueError, match="target_group_sparsity"):
        oto.hesso(target_group_sparsity=1.5)
    with pytest.raises(ValueError, match="pruning_steps"):
        oto.hesso(pruning_steps=0)
    with pytest.raises(ValueError, match="lr"):
        HESSO(oto.get_param_groups())


def test_hesso_class_defaults_and_none_criteria_work():
    model, oto = build(TinyMLP, quantized=False)
    optimizer = HESSO(oto.get_param_groups(), lr=0.1, importance_score_criteria=None)
    assert optimizer.pruning_steps == 1 and optimizer.pruning_period_duration == 1
    assert optimizer.importance_score_criteria == {name: 0.2 for name in optimizer.importance_score_criteria}
    train(model, optimizer, 2)
    assert optimizer.compute_metrics().num_zero_groups == optimizer.target_num_redundant_groups


def test_supported_variants():
    assert SUPPORT_GRADIENT_ESTIMATES == ["sgd", "adam", "adamw"]


def test_oto_geta_forwards_every_argument(tmp_path):
    _, oto = build(TinyMLP)
    optimizer = oto.geta(lr=0.1, grad_clip_min=-0.5, grad_clip_max=0.25, verbose="True", device="cpu",
                         log_dir=str(tmp_path / "logs"), fixed_zero_groups=False, enable_grad_clipping=True)
    assert (optimizer.grad_clip_min, optimizer.grad_clip_max) == (-0.5, 0.25)
    assert optimizer.verbose == "True" and optimizer.device == "cpu"
    assert optimizer.log_dir == str(tmp_path / "logs")
    assert optimizer.fixed_zero_groups is False and optimizer.enable_grad_clipping is True


def test_gradient_clipping_clamps_gradients_when_enabled():
    model, oto = build(TinyMLP)
    bound = 2.0 ** -10
    optimizer = oto.geta(lr=0.0, lr_quant=0.0, grad_clip_min=-bound, grad_clip_max=bound, enable_grad_clipping=True)
    train(model, optimizer, 1)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert max(float(g.abs().max()) for g in grads) == bound


def test_no_files_are_written_unless_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, oto = build(TinyMLP)
    optimizer = oto.geta(lr=0.01, target_group_sparsity=0.5, start_pruning_step=1, pruning_steps=2)
    train(model, optimizer, 4)
    assert os.listdir(tmp_path) == []
    verbose = oto.geta(lr=0.01, target_group_sparsity=0.5, start_pruning_step=1, pruning_steps=2, verbose=True,
                       log_dir=str(tmp_path / "diag"))
    train(model, verbose, 3)
    assert os.path.getsize(tmp_path / "diag" / "geta_diagnostics.txt") > 0


def test_learning_rate_helpers_and_scheduler():
    model, oto = build(TinyMLP, quantized=False)
    optimizer = oto.hesso(lr=0.1, target_group_sparsity=0.0)
    optimizer.set_learning_rate(0.2)
    assert optimizer.get_learning_rate() == 0.2
    assert all(group["lr"] == 0.2 for group in optimizer.param_groups)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    train(model, optimizer, 4, scheduler=scheduler)
    assert optimizer.get_learning_rate() == pytest.approx(0.05)
    # the next step moves the weights by lr * g with the scheduled lr (plain SGD)
    weight = model.fc1.weight
    before = weight.detach().clone()
    inputs, targets = batch(99)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(inputs), targets).backward()
    grad = weight.grad.clone()
    optimizer.step()
    torch.testing.assert_close(weight.detach(), before - 0.05 * grad)


def test_hessocric_reaches_its_target():
    model, oto = build(DigitsNet, quantized=False)
    optimizer = HESSOCRIC(oto.get_param_groups(), variant="adam", lr=1e-3, target_group_sparsity=0.25,
                          start_cric_step=1, sampling_steps=2, max_cycle_period=3, hybrid_training_steps=3)
    model.train()
    for step in range(60):
        inputs, targets = batch(step)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step(loss=loss)
    assert optimizer.stage == "pruned"
    assert optimizer.compute_metrics().num_zero_groups == optimizer.target_num_redundant_groups == 16
