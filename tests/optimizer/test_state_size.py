"""GETA's memory: its state is Adam's two moments plus bookkeeping that grows with the groups, not the parameters."""

import pytest
import torch
import torch.nn.functional as F

from only_train_once.dependency_graph.param_groups import get_param_groups
from benchmarks.common import held_bytes
from tests.optimizer.common import TinyMLP, build


@pytest.mark.parametrize("variant", ["adam", "sgd"])
def test_geta_holds_the_moments_and_per_unit_bookkeeping_only(variant):
    model, oto = build(lambda: TinyMLP(width=256), quantized=True)
    optimizer = oto.geta(variant=variant, lr=1e-3, weight_decay=1e-3, first_momentum=0.9, target_group_sparsity=0.5,
                         start_projection_step=1, projection_periods=1, projection_steps=2, start_pruning_step=3,
                         pruning_periods=2, pruning_steps=4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):  # warm-up, projection, both pruning periods
        x, y = torch.randn(4, 64, generator=generator), torch.randint(0, 10, (4,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = 2 if variant == "adam" else 1
    units = sum(g["num_groups"] for g in get_param_groups(oto.graph))
    # the per-index unit maps (int64 per pruned row or column) and a few per-unit vectors
    bookkeeping = 8 * sum(p.shape[0] + (p.shape[1] if p.dim() > 1 else 0) for p in model.parameters()) + 64 * units
    assert held_bytes(optimizer, model) <= moments * parameter_bytes + bookkeeping
