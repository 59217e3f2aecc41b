"""A model on the meta device: OTO builds, and everything that needs tensor values says so clearly."""

import pytest
import torch
from torch import nn

from only_train_once import OTO
from only_train_once.meta_device import MetaDeviceError


@pytest.fixture(scope="module")
def meta_oto():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return OTO(model, torch.randn(3, 4, device="meta"), verify_groups=True)  # the check skips itself on meta


@pytest.mark.parametrize("operation", ["random_set_zero_groups", "hesso", "geta", "construct_subnet"])
def test_operations_needing_values_raise_a_meta_device_error_naming_the_fix(meta_oto, operation, tmp_path):
    calls = {"random_set_zero_groups": lambda: meta_oto.random_set_zero_groups(0.5),
             "hesso": lambda: meta_oto.hesso(lr=0.1), "geta": lambda: meta_oto.geta(lr=0.1),
             "construct_subnet": lambda: meta_oto.construct_subnet(out_dir=str(tmp_path))}
    with pytest.raises(MetaDeviceError, match="meta device.*to_empty"):
        calls[operation]()
    assert not list(tmp_path.iterdir())
