"""Pieces shared by the accuracy benchmarks: import path, data checks, training loop, costs, files, tables."""

from __future__ import annotations

import os
import statistics
import sys
from typing import Callable, Dict, Iterable, List, Sequence, TypeVar

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from only_train_once import OTO  # noqa: E402  (after the path fix, so a checkout runs without installing)
from only_train_once.datasets import DatasetNotInstalledError  # noqa: E402

T = TypeVar("T")


def load_or_exit(loader: Callable[[], T]) -> T:
    """``loader()``, or exit with status 2 and the install instructions when its data is missing."""
    try:
        return loader()
    except DatasetNotInstalledError as error:
        print(f"{error}\n(or, from the repository root: make bench-data)", file=sys.stderr)
        raise SystemExit(2) from error


def costs(model: nn.Module, dummy_input) -> Dict[str, float]:
    """Parameters (M), MACs (M), BOPs (M), weight size (Mbit) and average weight bit width of ``model``."""
    oto = OTO(model, dummy_input)
    return {"params": oto.compute_num_params(), "macs": oto.compute_macs()["total"],
            "bops": oto.compute_bops()["total"], "weight_size": oto.compute_weight_size()["total"],
            "average_bits": oto.compute_average_bit_width()}


def file_sizes(paths: Dict[str, str]) -> Dict[str, int]:
    """Bytes of each written file, by kind."""
    return {kind: os.path.getsize(path) for kind, path in paths.items()}


def mean_and_spread(values: Sequence[float]) -> str:
    """``mean +- sample standard deviation`` (just the value for one sample)."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def megabytes(sizes: Dict[str, int], kinds: List[str]) -> str:
    return ", ".join(f"{kind} {sizes[kind] / 1e6:.3f}" for kind in kinds if kind in sizes)
