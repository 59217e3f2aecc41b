"""Stopping anywhere, saving with the helpers, loading into fresh objects and continuing is bit-identical."""

import pytest
import torch

from only_train_once.optimizer.utils import load_checkpoint, save_checkpoint
from tests.optimizer.common import DigitsNet, build, train

TOTAL = 19
GETA_SCHEDULE = dict(variant="adam", lr=3e-3, lr_quant=1e-3, target_group_sparsity=0.5, start_projection_step=2,
                     projection_steps=6, projection_periods=3, start_pruning_step=9, pruning_steps=6,
                     pruning_periods=2, min_bit_wt=4, max_bit_wt=12)


def _geta(seed, reverse_groups=False):
    model, oto = build(DigitsNet, quantized=True, seed=seed)
    groups = oto.get_param_groups()
    if reverse_groups:
        groups = groups[::-1]
    from only_train_once.optimizer import GETA
    optimizer = GETA(groups, **GETA_SCHEDULE)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.7)
    return model, optimizer, scheduler


def _hesso(seed, reverse_groups=False):
    model, oto = build(DigitsNet, quantized=False, seed=seed)
    optimizer = oto.hesso(variant="sgd", first_momentum=0.9, lr=0.05, target_group_sparsity=0.4,
                          start_pruning_step=3, pruning_steps=12, pruning_periods=3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    return model, optimizer, scheduler


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted():
    results = {}
    for name, make in (("geta", _geta), ("hesso", _hesso)):
        model, optimizer, scheduler = make(seed=0)
        train(model, optimizer, TOTAL, scheduler=scheduler)
        results[name] = (_snapshot(model), list(optimizer.pruned_group_idxes))
    return results


@pytest.mark.parametrize("name, stop", [
    ("geta", 2),    # end of warm-up
    ("geta", 6),    # inside a projection period, after a bit-range reduction
    ("geta", 10),   # inside a pruning period: redundant units selected, not yet zero
    ("geta", 14),   # second period, between its joint steps
    ("geta", 17),   # fixed-bit phase
    ("hesso", 8),   # inside HESSO's second period, momentum buffers live
])
def test_resume_is_bit_identical(tmp_path, uninterrupted, name, stop):
    make = {"geta": _geta, "hesso": _hesso}[name]
    model, optimizer, scheduler = make(seed=0)
    train(model, optimizer, stop, scheduler=scheduler)
    checkpoint = optimizer.create_checkpoint(model, epoch=stop, loss=0.0) if hasattr(optimizer, "create_checkpoint") \
        else {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()}
    checkpoint["scheduler_state_dict"] = scheduler.state_dict()
    path = str(tmp_path / f"{name}_{stop}.pt")
    save_checkpoint(path, checkpoint)
    del model, optimizer, scheduler

    model, optimizer, scheduler = make(seed=1234, reverse_groups=True) if name == "geta" else make(seed=1234)
    loaded = load_checkpoint(path, "cpu")
    model.load_state_dict(loaded["model_state_dict"])
    optimizer.load_state_dict(loaded["optimizer_state_dict"])
    scheduler.load_state_dict(loaded["scheduler_state_dict"])
    train(model, optimizer, TOTAL - stop, first_step=stop, scheduler=scheduler)

    expected, pruned = uninterrupted[name]
    actual = _snapshot(model)
    assert actual.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(actual[k], expected[k])]
    assert different == []
    assert optimizer.pruned_group_idxes == pruned


def test_a_saved_group_missing_from_the_model_warns_instead_of_failing():
    model, optimizer, _ = _hesso(seed=0)
    state = optimizer.state_dict()
    state["param_groups"] = state["param_groups"][1:] + [dict(state["param_groups"][0], id="no-such-group")]
    with pytest.warns(UserWarning) as caught:
        optimizer.load_state_dict(state)
    messages = [str(w.message) for w in caught]
    assert any("no-such-group" in m for m in messages)
    assert any("no saved state for param group" in m for m in messages)
