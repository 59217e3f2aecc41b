"""construct_subnet returns the pruning plan it applied instead of writing it onto the graph."""

import numpy as np
import torch

from only_train_once import OTO
from only_train_once.dependency_graph.param_groups import zero_units_by_group
from only_train_once.subnet_construction import automated_pruning_compression
from tests.graph import models

IMAGE = torch.randn(2, 3, 8, 8)


def _zeroed_oto():
    torch.manual_seed(0)
    oto = OTO(models.ConvBN().eval(), IMAGE)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    return oto


def test_the_reference_two_paths_come_back_with_the_plan(tmp_path):
    oto = _zeroed_oto()
    zeroed = zero_units_by_group(oto.graph)
    files = automated_pruning_compression(oto.graph, oto.model, full_group_sparse_model_dir=str(tmp_path),
                                          compressed_model_dir=str(tmp_path))
    compressed_path, full_path = files
    assert compressed_path.endswith("_compressed.pt") and full_path.endswith("_full_group_sparse.pt")
    assert {key: np.flatnonzero(mask).tolist() for key, mask in files.plan.pruned_units.items()} == \
        {key: units.tolist() for key, units in zeroed.items() if units.size}
    assert not hasattr(oto.graph, "pruning_plan")


def test_oto_keeps_the_plan_and_the_metrics_then_read_the_compressed_model(tmp_path):
    oto = _zeroed_oto()
    full_params = oto.compute_num_params(in_million=False)
    assert oto.pruning_plan is None
    oto.construct_subnet(out_dir=str(tmp_path))
    assert oto.pruning_plan is not None and oto.pruning_plan.keep
    assert oto.compute_num_params(in_million=False) == sum(p.numel() for p in oto.model.parameters()) < full_params
