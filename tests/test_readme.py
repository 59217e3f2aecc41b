"""The README's usage example runs as written, on a small CNN and the offline digits data."""

from __future__ import annotations

import os
import re

import torch
from torch import nn

from only_train_once.demo.data import digits_loaders

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def usage_example() -> str:
    """The first ``python`` block of the README."""
    with open(README, encoding="utf-8") as handle:
        match = re.search(r"```python\n(.*?)```", handle.read(), re.DOTALL)
    assert match, "the README has no python code block"
    return match.group(1)


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    torch.manual_seed(0)
    train_loader, _ = digits_loaders(image_size=8, batch_size=128)
    loader = [batch for batch, _ in zip(train_loader, range(2))]  # two batches an epoch keep it short
    monkeypatch.chdir(tmp_path)
    namespace = {"my_model": small_cnn(), "dummy_input": torch.randn(1, 1, 8, 8), "loader": loader,
                 "loss_fn": nn.CrossEntropyLoss(), "epochs": 25}
    exec(compile(usage_example(), README, "exec"), namespace)

    oto, optimizer = namespace["oto"], namespace["optimizer"]
    assert os.path.exists(oto.compressed_model_path)
    # target_group_sparsity=0.5 of the example, reached exactly (up to the floor of units x 0.5)
    assert abs(optimizer.compute_metrics().group_sparsity - 0.5) < 0.05
    compressed = torch.load(oto.compressed_model_path, weights_only=False)
    kept_channels = [m.out_channels for m in compressed.modules() if isinstance(m, nn.Conv2d)]
    assert sum(kept_channels) < 8 + 16
