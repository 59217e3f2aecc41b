"""Phase boundaries on a tiny model: which step warms up, projects, prunes, freezes bits (SPEC 5.6, 5.7)."""

import torch

from tests.optimizer.common import TinyMLP, batch, build, train


def _trace(model, optimizer, steps):
    rows = []

    def record(step):
        rows.append(dict(step=step, active=len(optimizer.active_redundant_group_idxes),
                         zero=optimizer.compute_metrics().num_zero_groups,
                         phase=optimizer.phase() if hasattr(optimizer, "phase") else None,
                         max_bit=getattr(optimizer, "max_bit_wt", None),
                         frozen=bool(getattr(optimizer, "bit_layers", {}))))
    train(model, optimizer, steps, on_step=record)
    return rows


def test_hesso_periods_start_shrink_and_commit_on_schedule():
    model, oto = build(TinyMLP, quantized=False)
    optimizer = oto.hesso(variant="sgd", lr=0.01, target_group_sparsity=0.5, start_pruning_step=3, pruning_steps=6,
                          pruning_periods=2)
    rows = _trace(model, optimizer, 10)
    # P = 3: periods start at steps 4 and 7 (t = 1), shrink at t = 1, 2 and commit at t = 2 (steps 5 and 8).
    assert [r["active"] for r in rows] == [0, 0, 0, 6, 0, 0, 6, 0, 0, 0]
    assert [r["zero"] for r in rows] == [0, 0, 0, 0, 6, 6, 6, 12, 12, 12]


def test_hesso_shrinks_redundant_slices_by_the_period_factor():
    model, oto = build(TinyMLP, quantized=False)
    optimizer = oto.hesso(variant="sgd", lr=0.01, target_group_sparsity=0.25, start_pruning_step=0, pruning_steps=4)
    inputs, targets = batch(0)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(inputs), targets).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer.step()  # step 1 starts the period (t = 1, P = 4): factor (4 - 1 - 1) / (4 - 1) = 2/3
    for group in optimizer.param_groups:
        for local in group["active_redundant_idxes"]:
            for name in group["p_names"]:
                if name.endswith("weight") or name.endswith("bias"):
                    expected = (before[name][local] - 0.01 * grads[name][local]) * (2 / 3)
                    torch.testing.assert_close(dict(model.named_parameters())[name][local].detach(), expected)
    assert sum(len(g["active_redundant_idxes"]) for g in optimizer.param_groups) == 6


def test_geta_phases_bit_range_pruning_and_freezing_follow_the_step_counter():
    model, oto = build(TinyMLP)
    optimizer = oto.geta(variant="sgd", lr=0.01, lr_quant=1e-4, target_group_sparsity=0.5, start_projection_step=2,
                         projection_steps=6, projection_periods=3, start_pruning_step=9, pruning_steps=6,
                         pruning_periods=2, bit_reduction=2, min_bit_wt=4, max_bit_wt=16)
    rows = _trace(model, optimizer, 18)
    assert [r["phase"] for r in rows] == ["warmup"] * 2 + ["projection"] * 13 + ["fixed"] * 3
    # D = 2: the bit range shrinks at the starts of projection periods 1 and 2 (steps 5 and 7), and no further.
    assert [r["max_bit"] for r in rows] == [16] * 4 + [14] * 2 + [12] * 12
    # P = 3: periods start at steps 10 and 13 (joint steps at t = 1, 2), committed at steps 11 and 14.
    assert [r["active"] for r in rows] == [0] * 9 + [6, 0, 0, 6, 0, 0, 0, 0, 0]
    assert [r["zero"] for r in rows] == [0] * 10 + [6, 6, 6] + [12] * 5
    # bit widths are frozen at the first fixed-bit step, S_p + T_p + 1 = 16
    assert [r["frozen"] for r in rows] == [False] * 15 + [True] * 3


def test_geta_warmup_trains_quantizer_parameters_with_lr_quant():
    model, oto = build(TinyMLP)
    optimizer = oto.geta(variant="sgd", lr=0.5, lr_quant=1e-3, start_projection_step=5, projection_steps=1,
                         start_pruning_step=6)
    inputs, targets = batch(0)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(inputs), targets).backward()
    quant_before = model.fc1.q_m_wt.detach().clone()
    quant_grad = model.fc1.q_m_wt.grad.clone()
    weight_before = model.fc1.weight.detach().clone()
    weight_grad = model.fc1.weight.grad.clone()
    optimizer.step()
    torch.testing.assert_close(model.fc1.q_m_wt.detach(), quant_before - 1e-3 * quant_grad)
    torch.testing.assert_close(model.fc1.weight.detach(), weight_before - 0.5 * weight_grad)
