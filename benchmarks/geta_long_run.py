"""Issue 19: the README's GETA recipe on scikit-learn's digits, trained short and long, against a dense baseline.

Recipe (issue 19): 16x16 digits (8x8 upsampled as the demo's loader does), a fixed stratified 75/25 split, a
small CNN of width ``--width``, batch ``--batch``; the dense float baseline is Adam (lr 1e-3, weight decay 1e-4)
for the same steps from the same initial weights; the compressed model is the weight+activation quantized copy
trained with ``oto.geta(variant="adam", lr=1e-3, lr_quant=1e-3, first_momentum=0.9, weight_decay=1e-4,
target_group_sparsity=0.5, start_projection_step=0, projection_periods=5, projection_steps=P,
start_pruning_step=P, pruning_periods=5, pruning_steps=P, bit_reduction=2, min_bit_wt=4, max_bit_wt=16)`` with
``P = --phase-fraction`` of all steps, then fixed bits for the rest.

    PYTHONPATH=$PWD python benchmarks/geta_long_run.py --epochs 12 30
    PYTHONPATH=$PWD python benchmarks/geta_long_run.py --epochs 30 --trace trace.csv   # per-step quantizer trace

``--trace`` writes one CSV row per ``--trace-every`` steps: mean loss, test accuracy, phase and every layer's
weight/activation ``d``, ``q_m`` and bit width. One thread (``torch.set_num_threads(1)``): the machine is shared.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from only_train_once import OTO  # noqa: E402
from only_train_once.demo.data import digits_loaders  # noqa: E402
from only_train_once.demo.pipeline import evaluate  # noqa: E402
from only_train_once.quantization import QuantizeMixin, model_to_quantize_model  # noqa: E402


class SmallCNN(nn.Module):
    """conv(1->w)-BN-ReLU, conv(w->w)-BN-ReLU, pool, conv(w->2w)-BN-ReLU, pool, global pool, FC 2w->10."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


@dataclass(frozen=True)
class Recipe:
    """The issue's recipe; ``phase_fraction`` is ``P`` as a fraction of all steps."""

    epochs: int = 30
    width: int = 32
    batch: int = 32
    seed: int = 0
    lr: float = 1e-3
    lr_quant: float = 1e-3
    weight_decay: float = 1e-4
    phase_fraction: float = 0.3
    min_bit_act: Optional[int] = None

    def geta_arguments(self, total_steps: int) -> dict:
        phase = max(5, int(self.phase_fraction * total_steps))
        arguments = dict(variant="adam", lr=self.lr, lr_quant=self.lr_quant, first_momentum=0.9,
                         weight_decay=self.weight_decay, target_group_sparsity=0.5, start_projection_step=0,
                         projection_periods=5, projection_steps=phase, start_pruning_step=phase, pruning_periods=5,
                         pruning_steps=phase, bit_reduction=2, min_bit_wt=4, max_bit_wt=16)
        if self.min_bit_act is not None:
            arguments["min_bit_act"] = self.min_bit_act
        return arguments


@dataclass
class RunResult:
    epochs: int
    dense_accuracy: float
    geta_accuracy: float
    weight_bits: List[int]
    activation_bits: List[int]
    seconds: float

    @property
    def drop(self) -> float:
        return self.dense_accuracy - self.geta_accuracy


def fit(model: nn.Module, optimizer, loader, epochs: int, on_step=None) -> None:
    model.train()
    step = 0
    for _ in range(epochs):
        for images, labels in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            if hasattr(optimizer, "report_loss"):  # GETA: loss trend and collapse warnings per period
                optimizer.report_loss(loss)
            optimizer.step()
            step += 1
            if on_step is not None:
                on_step(step, float(loss.detach()))


def quant_layers(model: nn.Module):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QuantizeMixin)]


class Tracer:
    """CSV rows of loss, phase and every quantized layer's ``d``/``q_m``/bits, every ``every`` steps."""

    def __init__(self, path: str, model: nn.Module, optimizer, every: int, test_loader):
        self.model, self.test_loader = model, test_loader
        self.layers, self.optimizer, self.every = quant_layers(model), optimizer, every
        self.handle = open(path, "w", newline="")
        self.writer = csv.writer(self.handle)
        header = ["step", "phase", "loss", "test_accuracy"]
        for name, _ in self.layers:
            header += [f"{name}:{k}" for k in ("d_wt", "q_m_wt", "bits_wt", "d_act", "q_m_act", "bits_act")]
        self.writer.writerow(header)
        self.losses: List[float] = []

    def __call__(self, step: int, loss: float) -> None:
        self.losses.append(loss)
        if step % self.every:
            return
        row = [step, self.optimizer.phase(step), sum(self.losses) / len(self.losses),
               evaluate(self.model, self.test_loader)]
        self.model.train()  # evaluate leaves the model in eval mode; training goes on
        self.losses.clear()
        for _, layer in self.layers:
            row += [float(layer.d_quant_wt), float(layer.q_m_wt), layer.weight_bit,
                    float(layer.d_quant_act), float(layer.q_m_act), layer.activation_bit]
        self.writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])

    def close(self) -> None:
        self.handle.close()


def run(recipe: Recipe, trace: Optional[str] = None, trace_every: int = 20) -> RunResult:
    """Train the dense baseline and the GETA model of ``recipe``; returns their accuracies and bit widths."""
    start = time.perf_counter()
    train_loader, test_loader = digits_loaders(image_size=16, batch_size=recipe.batch, test_fraction=0.25,
                                               seed=recipe.seed)
    total_steps = recipe.epochs * len(train_loader)
    torch.manual_seed(recipe.seed)
    dense = SmallCNN(recipe.width)
    initial = {k: v.clone() for k, v in dense.state_dict().items()}
    fit(dense, torch.optim.Adam(dense.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay), train_loader,
        recipe.epochs)
    dense_accuracy = evaluate(dense, test_loader)

    torch.manual_seed(recipe.seed)
    model = SmallCNN(recipe.width)
    model.load_state_dict(initial)
    model = model_to_quantize_model(model, quant_mode="weight_and_activation")
    oto = OTO(model, next(iter(test_loader))[0][:1])
    optimizer = oto.geta(**recipe.geta_arguments(total_steps))
    train_loader.generator.manual_seed(recipe.seed)  # the same batch order as the dense run
    tracer = Tracer(trace, model, optimizer, trace_every, test_loader) if trace else None
    try:
        fit(model, optimizer, train_loader, recipe.epochs, tracer)
    finally:
        if tracer is not None:
            tracer.close()
    layers = [m for _, m in quant_layers(model)]
    return RunResult(recipe.epochs, dense_accuracy, evaluate(model, test_loader),
                     [m.weight_bit for m in layers], [m.activation_bit for m in layers], time.perf_counter() - start)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[12, 30])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-quant", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--phase-fraction", type=float, default=0.3, help="P as a fraction of all steps")
    parser.add_argument("--min-bit-act", type=int, default=None)
    parser.add_argument("--trace", default=None, help="CSV file for the per-step quantizer trace (one epoch list)")
    parser.add_argument("--trace-every", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'epochs':>6} {'dense %':>8} {'GETA %':>8} {'drop':>7} {'weight bits':>12} {'act bits':>9} {'s':>5}")
    for epochs in args.epochs:
        recipe = Recipe(epochs, args.width, args.batch, args.seed, args.lr, args.lr_quant, args.weight_decay,
                        args.phase_fraction, args.min_bit_act)
        trace = None if args.trace is None else (args.trace if len(args.epochs) == 1
                                                 else args.trace.replace(".csv", f"_{epochs}.csv"))
        result = run(recipe, trace, args.trace_every)
        print(f"{epochs:>6} {result.dense_accuracy:>8.2f} {result.geta_accuracy:>8.2f} {-result.drop:>+7.2f} "
              f"{min(result.weight_bits):>5}-{max(result.weight_bits):<6} "
              f"{min(result.activation_bits):>4}-{max(result.activation_bits):<4} {result.seconds:>5.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
