"""Issue 11 item 5: data-dependent control flow is detected at build time and named."""

import logging

import torch
from torch import nn

from only_train_once import OTO


class Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.gate = nn.Linear(4, 8), Gate()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.gate(self.stem(x)))


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, y):
        return self.a(y) if y.sum() > 0 else torch.relu(self.b(y))


class DataDependentLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        for _ in range(int(x.abs().max().ceil())):  # the issue: such a loop got no warning at all
            x = torch.tanh(self.fc(x))
        return x


def built(model, dummy, caplog, **options):
    with caplog.at_level(logging.WARNING, logger="only_train_once"):
        oto = OTO(model, dummy, **options)
    return oto, [r.getMessage() for r in caplog.records if "control flow" in r.getMessage()]


def test_an_if_on_tensor_values_is_reported_naming_the_module(caplog):
    torch.manual_seed(0)
    dummy = torch.randn(3, 4)
    model = Branching()
    if model.stem(dummy).sum() <= 0:
        dummy = -dummy
    oto, messages = built(model, dummy, caplog, check_control_flow=True)
    assert len(messages) == 1 and "'gate'" in messages[0]
    assert oto.check_control_flow() == "gate"


def test_a_data_dependent_loop_is_reported(caplog):
    _, messages = built(DataDependentLoop(), torch.full((2, 4), 1.5), caplog, check_control_flow=True)
    assert len(messages) == 1 and "<model>" in messages[0]


def test_static_models_are_not_reported_and_the_check_is_optional(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    _, messages = built(model, torch.randn(3, 4), caplog, check_control_flow=True)
    assert messages == []
    _, messages = built(DataDependentLoop(), torch.full((2, 4), 1.5), caplog)
    assert messages == []
