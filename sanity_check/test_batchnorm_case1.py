"""Reference-style sanity test: residual encoder/decoder with BatchNorm, a list of three inputs; decoder groups
marked by hand. The reference runs it at 256x256; 64x64 here keeps the default suite fast (the network is fully
convolutional), tests/sanity/test_reference_scripts.py runs it at 256x256."""

import os
import unittest

import torch
from backends import DemonetBatchnormPruning

from only_train_once import OTO
from only_train_once.subnet_construction import load_model

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cache")


class TestBatchnormCase1(unittest.TestCase):
    def test_sanity(self):
        torch.manual_seed(0)
        model = DemonetBatchnormPruning(13, 32, 256, 5, 3, torch.nn.LeakyReLU(), False, 256).eval()
        dummy_input = [torch.rand(1, 3, 64, 64), torch.rand(1, 4, 64, 64), torch.rand(1, 6, 64, 64)]
        oto = OTO(model, dummy_input)
        for node_group in oto._graph.node_groups.values():
            if any("decoder" in name for name in node_group.param_names):
                node_group.is_prunable = False
        oto.random_set_zero_groups()
        oto.construct_subnet(out_dir=OUT_DIR)
        full_model = load_model(oto.full_group_sparse_model_path).eval()
        compressed_model = load_model(oto.compressed_model_path).eval()
        with torch.no_grad():
            difference = (full_model(dummy_input) - compressed_model(dummy_input)).abs().max().item()
        self.assertLessEqual(difference, 1e-4)


if __name__ == "__main__":
    unittest.main()
