"""Latency of the deployed model beside the dense model's: eager PyTorch and onnxruntime, medians of interleaved
runs (a busy machine slows both alike)."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from ..export import export_deployable
from ..export.onnx_io import feeds, session

#: Timed rounds (each runs every variant once, in turn).
ROUNDS = 15


def _eager(model: nn.Module, batch: torch.Tensor) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            model(batch)
    return run


def _onnx(path: str, batch: torch.Tensor) -> Callable[[], object]:
    sess = session(path, spinning=False)
    feed = feeds(sess, batch)
    return lambda: sess.run(None, feed)


def _medians(functions: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, float]:
    for run in functions.values():
        run()
    samples: Dict[str, List[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, run in functions.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def deployed_latency(dense: nn.Module, paths: Dict[str, str], dummy_input: torch.Tensor, batch: torch.Tensor,
                     out_dir: str, rounds: int = ROUNDS) -> Dict[str, Tuple[float, float]]:
    """``{row label: (dense ms, deployed ms)}`` for eager PyTorch (``torch`` target) and onnxruntime (``onnx``
    and ``onnx_int8`` targets against the dense model's float ONNX) on ``batch``."""
    dense_onnx = export_deployable(dense, dummy_input, os.path.join(out_dir, "dense"), targets=("onnx",),
                                   name="dense")["onnx"]
    deployed = torch.load(paths["torch"], weights_only=False)
    functions = {"eager dense": _eager(dense.eval(), batch), "eager deployed": _eager(deployed, batch),
                 "onnx dense": _onnx(dense_onnx, batch), "onnx deployed": _onnx(paths["onnx"], batch)}
    if "onnx_int8" in paths:
        functions["onnx int8"] = _onnx(paths["onnx_int8"], batch)
    ms = {name: 1e3 * seconds for name, seconds in _medians(functions, rounds).items()}
    rows = {"eager PyTorch": (ms["eager dense"], ms["eager deployed"]),
            "onnxruntime": (ms["onnx dense"], ms["onnx deployed"])}
    if "onnx int8" in ms:
        rows["onnxruntime int8"] = (ms["onnx dense"], ms["onnx int8"])
    return rows
