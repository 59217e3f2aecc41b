"""Shared pieces of the export tests: quantized zoo models at mixed bit widths, onnxruntime, outputs."""

from __future__ import annotations

import copy
import dataclasses
from typing import List

import numpy as np
import torch
from torch import nn

from only_train_once.export import EXACT_SESSION_CONFIG, quantized_layers
from only_train_once.quantization.quant_layers import QuantizationMode
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.quantization.quantizer import step_size_for_bits
from sanity_check.registry import BACKBONES
from tests.helpers import outputs

#: Weight bit widths, cycled over the layers (2..8 and 16 bits).
WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
#: Activation bit widths, cycled over the layers; below 4 bits a random network's activations collapse to zero,
#: which would leave the later layers nothing to compare.
ACTIVATION_BITS = (4, 5, 6, 7, 8, 16)
#: Exponents cycled over the nonlinear quantizers (t = 1 is the linear special case).
EXPONENTS = (1.0, 0.8, 1.25)
#: Relative tolerance of float kernels (torch vs onnxruntime) on these models' outputs.
FLOAT_TOLERANCE = 1e-5
#: Activation rounding flips allowed, in steps of the largest activation step: an activation that lands within
#: float rounding of a rounding boundary may round the other way in onnxruntime.
FLIP_STEPS = 4


@torch.no_grad()
def calibrate_in_eval(model: nn.Module, dummy_input) -> None:
    """Set every activation range on the eval-mode inputs of ``dummy_input`` (batch 1: no BatchNorm statistics)."""
    hooks = [layer.register_forward_pre_hook(lambda layer, args: layer.calibrate_activation_range(args[0]))
             for layer in quantized_layers(model).values() if layer.quantizes_activation]
    outputs(model, dummy_input)
    for hook in hooks:
        hook.remove()


@torch.no_grad()
def set_mixed_bits(model: nn.Module, weight_bits=WEIGHT_BITS, activation_bits=ACTIVATION_BITS) -> None:
    """Layer ``i`` gets ``weight_bits[i % len]`` / ``activation_bits[i % len]`` bits and, if nonlinear, exponent
    ``EXPONENTS[i % 3]``; the steps come from ``step_size_for_bits``, as in GETA's fixed-bit phase."""
    for i, layer in enumerate(quantized_layers(model).values()):
        suffixes = {"wt": weight_bits[i % len(weight_bits)]}
        if layer.quantizes_activation:
            suffixes["act"] = activation_bits[i % len(activation_bits)]
        for suffix, bits in suffixes.items():
            t = getattr(layer, f"t_quant_{suffix}", None)
            if t is not None:
                t.fill_(EXPONENTS[i % len(EXPONENTS)])
            step = step_size_for_bits(bits, getattr(layer, f"q_m_{suffix}"), t)
            getattr(layer, f"d_quant_{suffix}").copy_(step.reshape(1))


def quantized_backbone(name: str, quant_mode: str, seed: int = 0, weight_bits=WEIGHT_BITS):
    """``(model, dummy_input)``: zoo model ``name`` in eval mode, quantized (nonlinear quantizer; bert's embeddings
    too), activation ranges calibrated, layers at mixed bit widths."""
    backbone = BACKBONES[name]
    model = backbone.build(seed).eval()
    filter_fn = (lambda module, qualified_name: True) if name == "bert" else None
    model_to_quantize_model(model, quant_mode=quant_mode, filter_fn=filter_fn)
    dummy_input = backbone.example_input(seed)
    if quant_mode == "weight_and_activation":
        calibrate_in_eval(model, dummy_input)
    set_mixed_bits(model, weight_bits)
    return model, dummy_input


def weight_only_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose quantized layers quantize their weights only (same weight quantizers)."""
    twin = copy.deepcopy(model)
    for layer in quantized_layers(twin).values():
        layer.quant_config = dataclasses.replace(layer.quant_config, quant_mode=QuantizationMode.WEIGHT_ONLY)
    return twin


def run_onnxruntime(path: str, dummy_input) -> List[torch.Tensor]:
    """Outputs of the ONNX file in onnxruntime's CPU provider under ``EXACT_SESSION_CONFIG``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    for key, value in EXACT_SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inputs = dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)
    feeds = {arg.name: value.numpy() for arg, value in zip(session.get_inputs(), inputs)}
    return [torch.from_numpy(np.asarray(value)) for value in session.run(None, feeds)]


def output_scale(reference: List[torch.Tensor]) -> float:
    return max(1.0, max(value.abs().max().item() for value in reference))
