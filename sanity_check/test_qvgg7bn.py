"""Reference-style sanity test: quantized VGG7-BN (runnable from the repo root or from sanity_check/)."""

import os
import unittest

import torch
from backends import vgg7_bn

from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.subnet_construction import load_model

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cache")


class TestQVGG7BN(unittest.TestCase):
    def test_sanity(self, dummy_input=torch.rand(1, 3, 32, 32)):
        model = model_to_quantize_model(vgg7_bn())
        oto = OTO(model, dummy_input)
        oto.visualize(view=False, out_dir=OUT_DIR)
        full_params = oto.compute_num_params()
        full_macs, full_bops = oto.compute_macs()["total"], oto.compute_bops()["total"]
        full_weight_size = oto.compute_weight_size()["total"]
        oto.random_set_zero_groups()
        oto.construct_subnet(out_dir=OUT_DIR)
        full_model = load_model(oto.full_group_sparse_model_path).eval()
        compressed_model = load_model(oto.compressed_model_path).eval()
        compressed = OTO(compressed_model, dummy_input)
        self.assertLess(compressed.compute_num_params(), full_params)
        self.assertLess(compressed.compute_macs()["total"], full_macs)
        self.assertLess(compressed.compute_bops()["total"], full_bops)
        self.assertLess(compressed.compute_weight_size()["total"], full_weight_size)
        with torch.no_grad():
            difference = (full_model(dummy_input) - compressed_model(dummy_input)).abs().max().item()
        self.assertLessEqual(difference, 1e-4)


if __name__ == "__main__":
    unittest.main()
