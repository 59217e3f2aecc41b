"""oto.report writes the plots, the group graph and a summary that reflects what was pruned."""

import os

import numpy as np
import pytest
import torch

from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.report import unit_counts
from tests.graph import models

pytest.importorskip("matplotlib")


def test_report_before_and_after_construct_subnet(tmp_path):
    model = model_to_quantize_model(models.ConvBN().eval(), quant_mode="weight_and_activation")
    oto = OTO(model, torch.randn(2, 3, 8, 8))
    assert unit_counts(oto.graph) == [("conv1", 8, 8), ("conv2", 16, 16)]
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    assert unit_counts(oto.graph) == [("conv1", 8, 4), ("conv2", 16, 8)]
    oto.construct_subnet(out_dir=str(tmp_path / "models"))
    path = oto.report(str(tmp_path / "report"))
    text = open(path).read()
    assert "Prunable units kept: 12 of 24" in text and "| conv1 | 8 | 4 |" in text and "| fc | 16 | 16 |" in text
    for name in ("bit_widths.png", "kept_units.png", "report.html"):
        assert os.path.getsize(tmp_path / "report" / name) > 0
    assert any(n.startswith("groups.gv") for n in os.listdir(tmp_path / "report"))
