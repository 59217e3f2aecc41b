"""Reference-style sanity test: quantized CARN with its two-argument forward (x, scale)."""

import os
import unittest

import torch
from backends import CarnNet

from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.subnet_construction import load_model

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cache")


class TestQCARN(unittest.TestCase):
    def test_sanity(self, dummy_input=(torch.rand(1, 3, 32, 32), 2)):
        model = model_to_quantize_model(CarnNet(scale=2, multi_scale=False, group=1))
        oto = OTO(model, dummy_input)
        oto.mark_unprunable_by_param_names(["exit.weight"])
        oto.random_set_zero_groups()
        oto.construct_subnet(out_dir=OUT_DIR)
        full_model = load_model(oto.full_group_sparse_model_path).eval()
        compressed_model = load_model(oto.compressed_model_path).eval()
        with torch.no_grad():
            difference = (full_model(*dummy_input) - compressed_model(*dummy_input)).abs().max().item()
        self.assertLessEqual(difference, 1e-4)
        self.assertEqual(compressed_model.exit.out_channels, 3)


if __name__ == "__main__":
    unittest.main()
