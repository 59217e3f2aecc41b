"""Parameters swapped after tracing are refused, not silently left untrained (FSDP2's sharded parameters are the
exception the optimizers handle: tests/optimizer/test_fsdp.py)."""

import pytest
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.dependency_graph.param_groups import StaleParametersError


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


@pytest.mark.parametrize("optimizer", ["hesso", "geta"])
def test_an_optimizer_over_replaced_parameters_is_refused(optimizer):
    model = mlp()
    oto = OTO(model, torch.randn(2, 8))
    model[0].weight = nn.Parameter(model[0].weight.detach().clone())
    with pytest.raises(StaleParametersError, match="0.weight.*replaced after OTO traced"):
        getattr(oto, optimizer)(lr=0.1)
