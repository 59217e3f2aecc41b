"""Shared pieces of the benchmark scripts: models, timing, and table printing.

Timings are medians of interleaved repetitions, and every figure a script reports is a ratio measured in the
same run, because these machines are noisy.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ImageNet-style ResNet-50 (25.6 M parameters, 224x224 input)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, inplanes = [], 64
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for k in range(blocks):
                layers.append(Bottleneck(inplanes, planes, stride if k == 0 else 1))
                inplanes = planes * 4
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


def elapsed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(functions: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> Dict[str, float]:
    """Median seconds of each function, measured round-robin so that machine noise hits all of them alike.

    Garbage left by the previous sample is collected before each one, outside the timing: a full collection
    (100+ ms with torch loaded) would otherwise land on whichever function happens to trigger it.
    """
    for _ in range(warmup):
        for fn in functions.values():
            fn()
    samples: Dict[str, List[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            gc.collect()
            samples[name].append(elapsed(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Print and return a markdown table."""
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    return text


def machine() -> str:
    return f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def held_bytes(optimizer, model) -> int:
    """Bytes of the tensors an optimizer holds (state, attributes, param groups), each storage once, the model's
    parameters and gradients excluded."""
    excluded = {t.untyped_storage().data_ptr() for p in model.parameters() for t in (p, p.grad) if t is not None}
    seen, total = set(), 0

    def visit(obj, depth=0):
        nonlocal total
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in excluded and storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif depth < 5 and isinstance(obj, dict):
            for value in obj.values():
                visit(value, depth + 1)
        elif depth < 5 and isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value, depth + 1)

    visit(dict(optimizer.state))
    visit([value for key, value in vars(optimizer).items() if key not in ("param_groups", "state")])
    visit(optimizer.param_groups)
    return total
