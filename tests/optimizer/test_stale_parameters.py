"""Parameters swapped after tracing (FSDP2's fully_shard does this) are refused, not silently left untrained."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
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


def _fully_shard_then_geta(rank: int, port: int, errors) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from torch.distributed.fsdp import fully_shard

        model = mlp()
        oto = OTO(model, torch.randn(2, 8))
        fully_shard(model)
        try:
            oto.geta(lr=0.1)
        except StaleParametersError as error:
            errors.put(str(error))
    finally:
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_sharded_model_names_the_missing_support():
    context = mp.get_context("spawn")
    errors = context.Queue()
    mp.start_processes(_fully_shard_then_geta, args=(29000 + os.getpid() % 500, errors), nprocs=2,
                       start_method="spawn")
    messages = [errors.get(timeout=10) for _ in range(2)]
    assert all("DTensor" in m and "FSDP2" in m for m in messages)
