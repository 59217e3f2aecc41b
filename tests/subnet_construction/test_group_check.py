"""Build-time group check: a group the analyzer got wrong is left unprunable before training, with one warning."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO
from only_train_once.subnet_construction import group_check
from only_train_once.subnet_construction.group_check import REASON
from tests.subnet_construction.test_verification import ExpSmallOut, SmallMLP, misread_exp


class MixedBranches(nn.Module):
    """One correct branch (a plain MLP) and one the analyzer gets wrong (see misread_exp), summed at the end."""

    def __init__(self):
        super().__init__()
        self.good_in, self.good_out = nn.Linear(4, 6), nn.Linear(6, 2)
        self.mixer = ExpSmallOut()

    def forward(self, x):
        return self.good_out(torch.relu(self.good_in(x))) * 1e-4 + self.mixer(x)


class ChannelPooling(nn.Module):
    """Issue 11 item 2: pooling over the feature axis of (B, L, D) mixes neighbouring channels."""

    def __init__(self):
        super().__init__()
        self.pre, self.post = nn.Linear(4, 8), nn.Linear(4, 2)

    def forward(self, x):
        return self.post(F.avg_pool1d(self.pre(x), 2))


class InPlaceThroughView(nn.Module):
    """Issue 11 item 2: an in-place add through a view writes a constant into one channel."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.conv1(x)
        y.select(1, 3).add_(1)
        return self.conv2(y)


def warnings_of(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and "left unprunable" in r.getMessage()]


def checked(model, dummy, caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        oto = OTO(model, dummy, verify_groups=True)
    failed = [g for g in oto.groups if REASON in g.unprunable_reasons]
    return oto, failed


def test_a_misread_group_is_left_unprunable_with_one_warning(caplog, tmp_path, monkeypatch):
    misread_exp(monkeypatch)
    oto, failed = checked(ExpSmallOut(), torch.randn(2, 3, 4), caplog)
    assert [g.param_names[:2] for g in failed] == [["pre.weight", "pre.bias"]]
    (record,) = warnings_of(caplog)
    assert "pre.weight" in record.getMessage()
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))  # what failed after training now simply keeps those channels


def test_bisection_keeps_the_correct_groups_prunable(caplog, monkeypatch):
    misread_exp(monkeypatch)
    oto, failed = checked(MixedBranches(), torch.randn(2, 3, 4), caplog)
    assert [g.param_names[0] for g in failed] == ["mixer.pre.weight"]
    good = [g for g in oto.groups if "good_in.weight" in g.param_names]
    assert good[0].is_prunable
    assert len(warnings_of(caplog)) == 1


@pytest.mark.parametrize("model, dummy", [(ChannelPooling(), torch.randn(2, 3, 4)),
                                          (InPlaceThroughView(), torch.randn(2, 3, 5, 5))],
                         ids=["pooling-over-channels", "in-place-through-view"])
def test_other_analyzer_gaps_end_pruned_correctly_or_unprunable(model, dummy, caplog, tmp_path):
    oto, _ = checked(model, dummy, caplog)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path))  # raises if a wrong group survived the check


def test_a_correct_model_keeps_every_group_and_is_not_touched(caplog):
    model = SmallMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    oto, failed = checked(model, torch.randn(5, 4), caplog)
    assert failed == [] and not warnings_of(caplog)
    assert all(g.is_prunable for g in oto.groups if "fc1.weight" in g.param_names)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_by_default_a_misread_group_is_left_unprunable_with_one_warning_naming_it(caplog, tmp_path, monkeypatch):
    """The issue's promise: with nothing asked for, an analyzer mistake costs compression, never a training run."""
    misread_exp(monkeypatch)
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        oto = OTO(ExpSmallOut(), torch.randn(2, 3, 4))
    failed = [g for g in oto.groups if REASON in g.unprunable_reasons]
    assert [g.param_names[:2] for g in failed] == [["pre.weight", "pre.bias"]] and not failed[0].is_prunable
    (record,) = warnings_of(caplog)
    assert "pre.weight" in record.getMessage()
    optimizer = oto.hesso(lr=0.1, target_group_sparsity=0.5, start_pruning_step=0)
    for _ in range(3):
        optimizer.zero_grad()
        oto.model(torch.randn(2, 3, 4)).sum().backward()
        optimizer.step()
    oto.construct_subnet(out_dir=str(tmp_path))  # the training run is not lost: the subnet verifies


def test_the_check_can_be_turned_off_and_run_afterwards(monkeypatch):
    misread_exp(monkeypatch)
    oto = OTO(ExpSmallOut(), torch.randn(2, 3, 4), verify_groups=False)
    assert all(REASON not in g.unprunable_reasons for g in oto.groups)
    assert oto.verify_groups() != []


def test_auto_skips_models_over_the_size_limit(monkeypatch):
    misread_exp(monkeypatch)
    monkeypatch.setattr(group_check, "AUTO_MAX_BYTES", 64)
    oto = OTO(ExpSmallOut(), torch.randn(2, 3, 4))
    assert all(REASON not in g.unprunable_reasons for g in oto.groups)
    oto = OTO(ExpSmallOut(), torch.randn(2, 3, 4), verify_groups=True)
    assert any(REASON in g.unprunable_reasons for g in oto.groups)


def test_the_setting_is_validated():
    with pytest.raises(ValueError, match="verify_groups"):
        OTO(SmallMLP(), torch.randn(5, 4), verify_groups="always")


def test_the_check_leaves_every_tensor_bit_for_bit_and_shares_no_module_with_its_scratch_subnet():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = -0.0  # a signed zero must come back signed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    oto = OTO(model, torch.randn(2, 3, 6, 6), verify_groups=True)
    assert oto.verify_groups() == []
    for name, value in model.state_dict().items():
        assert torch.equal(value.view(torch.uint8) if value.is_floating_point() else value,
                           before[name].view(torch.uint8) if value.is_floating_point() else before[name])
    assert dict(model.named_modules()) == modules and model[0].in_channels == 3 and model[0].out_channels == 8
