"""Dropping an activation quantizer's Clip where int8 QuantizeLinear clamps alike: only then, and bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from only_train_once.export.onnx_clips import drop_redundant_clips
from only_train_once.export.onnx_io import run_onnx


def _tensor(name: str):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [4, 64])


def _quantizer_model(producer: str, step: float, int_range: int = 127) -> onnx.ModelProto:
    """``x -> producer -> Clip(-n d, n d) -> QuantizeLinear(d, int8) -> DequantizeLinear``."""
    nodes = {"Relu": [helper.make_node("Relu", ["input_0"], ["a"])],
             "SiLU": [helper.make_node("Sigmoid", ["input_0"], ["s"]),
                      helper.make_node("Mul", ["input_0", "s"], ["a"])],
             "HardSwish": [helper.make_node("HardSwish", ["input_0"], ["a"])],
             "Gated": [helper.make_node("HardSwish", ["input_0"], ["h"]),
                       helper.make_node("Sigmoid", ["input_0"], ["g"]),
                       helper.make_node("ReduceMean", ["h"], ["m"], keepdims=1),
                       helper.make_node("Mul", ["g", "m"], ["a"])],
             "none": [helper.make_node("Identity", ["input_0"], ["b"]),
                      helper.make_node("Neg", ["b"], ["a"])]}[producer]
    initializers = [numpy_helper.from_array(np.array(-int_range * step, np.float32), "low"),
                    numpy_helper.from_array(np.array(int_range * step, np.float32), "high"),
                    numpy_helper.from_array(np.array(step, np.float32), "step"),
                    numpy_helper.from_array(np.array(0, np.int8), "zero")]
    nodes += [helper.make_node("Clip", ["a", "low", "high"], ["c"]),
              helper.make_node("QuantizeLinear", ["c", "step", "zero"], ["q"]),
              helper.make_node("DequantizeLinear", ["q", "step", "zero"], ["output"])]
    graph = helper.make_graph(nodes, "quantizer", [_tensor("input_0")], [_tensor("output")], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("producer, step, int_range, dropped", [
    ("Relu", 0.01, 127, True),
    ("SiLU", 0.01, 127, True),  # SiLU >= -0.2785 > -127.5 * 0.01
    ("SiLU", 0.001, 127, False),  # -127.5 * 0.001 = -0.1275: the lower clamp binds
    ("HardSwish", 0.01, 127, True),
    ("Gated", 0.01, 127, True),  # hard-swish mean times a sigmoid gate
    ("Relu", 0.01, 31, False),  # a 6-bit grid: int8 saturation would not clamp at 31
    ("none", 0.01, 127, False),  # unbounded input
])
def test_clip_is_dropped_exactly_where_quantize_linear_clamps_alike(tmp_path, producer, step, int_range, dropped):
    model = _quantizer_model(producer, step, int_range)
    original, pruned = str(tmp_path / "original.onnx"), str(tmp_path / "pruned.onnx")
    onnx.save(model, original)
    assert drop_redundant_clips(model) == int(dropped)
    onnx.save(model, pruned)
    assert [n.op_type for n in model.graph.node].count("Clip") == int(not dropped)
    x = torch.linspace(-60, 60, 256).reshape(4, 64)  # far beyond both clamps
    assert torch.equal(run_onnx(original, x)[0], run_onnx(pruned, x)[0])


def _integer_input_model(producer: str, step: float) -> onnx.ModelProto:
    """The integer layers' input: ``x -> producer -> QuantizeLinear(d, uint8, 128) -> Clip(1, 255) -> DQ``."""
    nodes = [helper.make_node(producer, ["input_0"], ["a"])]
    initializers = [numpy_helper.from_array(np.array(step, np.float32), "step"),
                    numpy_helper.from_array(np.array(128, np.uint8), "zero"),
                    numpy_helper.from_array(np.array(1, np.uint8), "low"),
                    numpy_helper.from_array(np.array(255, np.uint8), "high")]
    nodes += [helper.make_node("QuantizeLinear", ["a", "step", "zero"], ["q"]),
              helper.make_node("Clip", ["q", "low", "high"], ["c"]),
              helper.make_node("DequantizeLinear", ["c", "step", "zero"], ["output"])]
    graph = helper.make_graph(nodes, "integer_input", [_tensor("input_0")], [_tensor("output")], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("producer, dropped", [("Relu", True), ("Neg", False)])
def test_integer_input_clip_is_dropped_only_above_the_lowest_level(tmp_path, producer, dropped):
    model = _integer_input_model(producer, 0.01)
    original, pruned = str(tmp_path / "original.onnx"), str(tmp_path / "pruned.onnx")
    onnx.save(model, original)
    assert drop_redundant_clips(model) == int(dropped)
    onnx.save(model, pruned)
    x = torch.linspace(-60, 60, 256).reshape(4, 64)
    assert torch.equal(run_onnx(original, x)[0], run_onnx(pruned, x)[0])
