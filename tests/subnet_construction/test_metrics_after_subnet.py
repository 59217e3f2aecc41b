"""After construct_subnet the cost metrics describe the compressed model, as a fresh OTO on it does."""

import torch

from only_train_once import OTO
from tests.export.deploy_models import tiny_cnn


def test_metrics_after_construct_subnet_equal_a_fresh_oto_on_the_compressed_model(tmp_path):
    model, dummy = tiny_cnn(), torch.randn(1, 3, 12, 12)
    oto = OTO(model, dummy)
    full_macs = oto.compute_macs()["total"]
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=str(tmp_path), save_full_group_sparse_model=False)
    fresh = OTO(model, dummy)
    assert oto.compute_macs()["total"] == fresh.compute_macs()["total"] < full_macs
    assert oto.compute_flops()["total"] == fresh.compute_flops()["total"]
    assert oto.compute_bops()["total"] == fresh.compute_bops()["total"]
    assert oto.compute_weight_size()["total"] == fresh.compute_weight_size()["total"]
    assert oto.compute_macs(layerwise=True) == fresh.compute_macs(layerwise=True)
