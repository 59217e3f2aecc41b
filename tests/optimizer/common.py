"""Models, data and training loops shared by the optimizer tests and benchmarks."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from only_train_once import OTO
from only_train_once.quantization import model_to_quantize_model


class DigitsNet(nn.Module):
    """A small CNN for 8x8 digits with a channel concat (so a concat-dependent BatchNorm: an auxiliary group)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv_a = nn.Conv2d(1, width, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(width)
        self.conv_b = nn.Conv2d(width, width, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(width)
        self.bn_cat = nn.BatchNorm2d(2 * width)
        self.conv_c = nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2)
        self.bn_c = nn.BatchNorm2d(2 * width)
        self.fc1 = nn.Linear(2 * width * 16, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        a = F.relu(self.bn_a(self.conv_a(x)))
        b = F.relu(self.bn_b(self.conv_b(a)))
        y = F.relu(self.bn_cat(torch.cat([a, b], dim=1)))
        y = F.relu(self.bn_c(self.conv_c(y)))
        return self.fc2(F.relu(self.fc1(y.flatten(1))))


class TinyMLP(nn.Module):
    def __init__(self, width: int = 12):
        super().__init__()
        self.fc1 = nn.Linear(64, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.flatten(1))))))


DIGITS_INPUT = torch.zeros(2, 1, 8, 8)


def build(factory: Callable[[], nn.Module] = DigitsNet, quantized: bool = True, seed: int = 0,
          filter_fn=None) -> Tuple[nn.Module, OTO]:
    """A fresh model (weights from ``seed``), quantized weight+activation if asked, and its OTO."""
    torch.manual_seed(seed)
    model = factory()
    if quantized:
        model_to_quantize_model(model, quant_mode="weight_and_activation", filter_fn=filter_fn)
    return model, OTO(model, DIGITS_INPUT)


def batch(step: int, size: int = 16) -> Tuple[torch.Tensor, torch.Tensor]:
    """Deterministic synthetic batch number ``step`` (inputs 1x8x8, 10 classes)."""
    generator = torch.Generator().manual_seed(1000 + step)
    inputs = torch.randn(size, 1, 8, 8, generator=generator)
    targets = torch.randint(0, 10, (size,), generator=generator)
    return inputs, targets


def train(model: nn.Module, optimizer, steps: int, first_step: int = 0, scheduler=None,
          on_step: Optional[Callable[[int], None]] = None) -> None:
    """``steps`` ordinary training iterations on :func:`batch` data, numbered from ``first_step``."""
    model.train()
    for step in range(first_step, first_step + steps):
        inputs, targets = batch(step)
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step(step + 1)


def digits_data(seed: int = 0):
    """scikit-learn's digits (shipped with it, no download): ``(train_x, train_y, test_x, test_y)``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    inputs = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    inputs, targets = inputs[order], targets[order]
    return inputs[:1400], targets[:1400], inputs[1400:], targets[1400:]


def accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        correct = (model(inputs).argmax(dim=1) == targets).float().mean().item()
    model.train(was_training)
    return correct


def zero_unit_fraction(oto: OTO) -> Tuple[int, int]:
    """(units removable by construct_subnet, units of the prunable groups), as the subnet constructor counts."""
    from only_train_once.dependency_graph.param_groups import zero_units_by_group

    zero = sum(len(v) for v in zero_units_by_group(oto.graph).values())
    total = sum(g.num_groups for g in oto.groups if g.is_prunable and not g.is_auxiliary)
    return zero, total


#: The digits recipe: GETA on the quantized (weight+activation) DigitsNet, adam, batch 64. Warm-up to step 40,
#: projection over 80 steps in 4 periods (weight bits 16 -> 10), pruning to 50% over 3 periods of 40 steps from
#: step 160, fixed bits from step 281.
DIGITS_RECIPE = dict(variant="adam", lr=3e-3, lr_quant=3e-3, target_group_sparsity=0.5, start_projection_step=40,
                     projection_steps=80, projection_periods=4, start_pruning_step=160, pruning_steps=120,
                     pruning_periods=3, bit_reduction=2, min_bit_wt=4, max_bit_wt=16, min_bit_act=4,
                     max_bit_act=16)
DIGITS_STEPS = 320


def train_digits(seed: int = 0, steps: int = DIGITS_STEPS, **overrides):
    """Train DigitsNet with GETA on scikit-learn's digits; returns ``(model, oto, optimizer, test accuracy)``."""
    train_x, train_y, test_x, test_y = digits_data(seed)
    model, oto = build(DigitsNet, quantized=True, seed=seed)
    optimizer = oto.geta(**{**DIGITS_RECIPE, **overrides})
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(train_y), (64,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(train_x[index]), train_y[index]).backward()
        optimizer.step()
    return model, oto, optimizer, accuracy(model, test_x, test_y)
