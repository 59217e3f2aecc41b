"""onnxruntime CPU latency of the low-bit export: dense float model vs compressed float ONNX vs compressed QDQ ONNX.

For each model: the dense float original; a compressed copy, quantized (weights and activations, nonlinear
quantizer), half its groups zeroed and removed by ``construct_subnet``, weights at mixed 2..8 bits and
activations at 4..8 bits (steps from ``step_size_for_bits``, as after GETA's fixed-bit phase). The compressed model
is exported twice: as float ONNX (``ckpt_format="onnx"``: quantizers as float operators) and as a QDQ graph
(``export_qdq_onnx``: integer weights, QuantizeLinear/DequantizeLinear). The QDQ graph runs in a default session
(onnxruntime may fuse ``DequantizeLinear -> MatMul`` into ``MatMulNBits`` with int8 activation compute) and under
``EXACT_SESSION_CONFIG`` (float compute, the model's exact function). All sessions of a model and batch size are
timed round-robin in one run; medians, and ratios to the dense model, are printed as a markdown table.

    python benchmarks/lowbit_latency.py [--models vgg7_bn resnet18_cifar10] [--batches 1 32] [--repeats 15]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from typing import Dict, List

import numpy as np
import torch

from common import interleaved, machine, print_table
from only_train_once import OTO
from only_train_once.export import EXACT_SESSION_CONFIG, export_qdq_onnx, quantized_layers
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.quantization.quantizer import step_size_for_bits
from only_train_once.subnet_construction.io import export_onnx
from sanity_check.registry import BACKBONES

WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8)
ACTIVATION_BITS = (4, 5, 6, 7, 8)


@torch.no_grad()
def set_bits(model: torch.nn.Module, image: torch.Tensor) -> None:
    """Calibrate activation ranges on ``image`` (eval mode), then give layer ``i`` the ``i``-th bit widths."""
    layers = list(quantized_layers(model).values())
    hooks = [layer.register_forward_pre_hook(lambda layer, args: layer.calibrate_activation_range(args[0]))
             for layer in layers]
    model(image)
    for hook in hooks:
        hook.remove()
    for i, layer in enumerate(layers):
        bit_widths = {"wt": WEIGHT_BITS[i % len(WEIGHT_BITS)], "act": ACTIVATION_BITS[i % len(ACTIVATION_BITS)]}
        for suffix, bits in bit_widths.items():
            step = step_size_for_bits(bits, getattr(layer, f"q_m_{suffix}"), getattr(layer, f"t_quant_{suffix}"))
            getattr(layer, f"d_quant_{suffix}").copy_(step.reshape(1))


def build_files(name: str, batches: List[int], directory: str) -> Dict[int, Dict[str, str]]:
    """ONNX files ``{batch: {variant: path}}`` of the dense model and of its compressed, quantized form."""
    backbone = BACKBONES[name]
    dense = backbone.build(0).eval()
    compressed = backbone.build(0).eval()
    image = backbone.example_input(0)
    model_to_quantize_model(compressed, quant_mode="weight_and_activation")
    set_bits(compressed, image)
    oto = OTO(compressed, image)
    oto.mark_unprunable_by_param_names(backbone.unprunable_names(compressed))
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    oto.construct_subnet(out_dir=directory, save_full_group_sparse_model=False)
    files: Dict[int, Dict[str, str]] = {}
    for batch in batches:
        x = torch.randn(batch, *image.shape[1:])
        paths = {variant: os.path.join(directory, f"{name}_{variant}_{batch}.onnx")
                 for variant in ("dense", "float", "qdq")}
        export_onnx(dense, x, paths["dense"])
        export_onnx(compressed, x, paths["float"])
        export_qdq_onnx(compressed, x, paths["qdq"])
        files[batch] = paths
    return files


def session(path: str, exact: bool = False):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if exact:
        for key, value in EXACT_SESSION_CONFIG.items():
            options.add_session_config_entry(key, value)
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def runner(onnx_session, x: np.ndarray):
    feed = {onnx_session.get_inputs()[0].name: x}
    return lambda: onnx_session.run(None, feed)


def measure(files: Dict[str, str], batch: int, shape, repeats: int) -> Dict[str, float]:
    x = np.random.RandomState(0).randn(batch, *shape).astype(np.float32)
    sessions = {"dense float": session(files["dense"]), "compressed float": session(files["float"]),
                "compressed QDQ": session(files["qdq"]), "compressed QDQ, exact": session(files["qdq"], exact=True)}
    return interleaved({variant: runner(s, x) for variant, s in sessions.items()}, repeats, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vgg7_bn", "resnet18_cifar10"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for name in args.models:
            files = build_files(name, args.batches, directory)
            shape = BACKBONES[name].example_input(0).shape[1:]
            for batch in args.batches:
                times = measure(files[batch], batch, shape, args.repeats)
                dense = times["dense float"]
                sizes = {variant: os.path.getsize(path) / 1e6 for variant, path in files[batch].items()}
                rows.append([name, batch, f"{1e3 * dense:.2f}",
                             *(f"{1e3 * times[v]:.2f} ({times[v] / dense:.2f}x)" for v in list(times)[1:]),
                             f"{sizes['dense']:.2f} / {sizes['float']:.2f} / {sizes['qdq']:.2f}"])
    print_table(f"onnxruntime CPU latency, median ms (ratio to dense); {machine()}",
                ["model", "batch", "dense float", "compressed float", "compressed QDQ", "compressed QDQ, exact",
                 "file MB (dense / float / QDQ)"], rows)


if __name__ == "__main__":
    main()
