"""Training-step overhead of quantized models against the same float model (CPU, forward + backward).

For each model, the float original and quantized copies (``model_to_quantize_model`` defaults: nonlinear, 16 bits;
weight-only and weight+activation) run the same step on the same batch: zero_grad, forward, cross-entropy,
backward. Measurements of all variants are interleaved (the order rotates every round); the median per variant
is reported with its ratio to the float model, and the ratio of the minima (less sensitive to other processes
competing for the cores). The ``t != 1`` rows perturb every exponent to 1.1 so that the
general power path is measured rather than the ``t = 1`` shortcut (after the first optimizer step ``t`` moves).

    python benchmarks/quant_overhead.py [--rounds 11] [--batch 32] [--threads N] [--models vgg7_bn mlp]

Targets (VGG7-BN, batch 32): <= 1.3x weight-only, <= 1.6x weight+activation (the reference: 2.13x / 3.62x).
A convolution reuses each weight over every pixel of the batch, so the quantizer's per-element work is small
next to it; an MLP at batch 32 does only 3 x 32 = 96 multiply-adds per weight and step, so its ratio is bounded below by
the quantizer's elementwise passes over the weights (about ten, in eager PyTorch without kernel fusion).
"""
import argparse
import copy
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from only_train_once.quantization import QuantizeMixin, model_to_quantize_model


def vgg7_bn() -> nn.Module:
    """VGG7 with BatchNorm for CIFAR-10 (128-128-M-256-256-M-512-512-M, GAP, 512-1024-10)."""
    layers: List[nn.Module] = []
    in_channels = 3
    for width in (128, 128, "M", 256, 256, "M", 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1024), nn.ReLU(inplace=True),
        nn.Linear(1024, 10),
    )


def mlp(widths: Tuple[int, ...] = (3072, 1024, 1024, 10)) -> nn.Module:
    layers: List[nn.Module] = [nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


MODELS: Dict[str, Callable[[], nn.Module]] = {
    "vgg7_bn": vgg7_bn,
    "mlp": mlp,
    "mlp_small": lambda: mlp((3072, 64, 32, 10)),  # the sanity-check MLP: per-call overheads dominate
}

VARIANTS = {
    "float": None,
    "weight-only": ("weight_only", 1.0),
    "weight+activation": ("weight_and_activation", 1.0),
    "weight-only, t != 1": ("weight_only", 1.1),
    "weight+activation, t != 1": ("weight_and_activation", 1.1),
}


def make_variant(model: nn.Module, variant) -> nn.Module:
    model = copy.deepcopy(model)
    if variant is None:
        return model
    quant_mode, exponent = variant
    model_to_quantize_model(model, quant_mode=quant_mode)
    with torch.no_grad():
        for layer in (m for m in model.modules() if isinstance(m, QuantizeMixin)):
            for name, param in layer.named_quant_parameters():
                if name.startswith("t_quant"):
                    param.fill_(exponent)
    return model


def training_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def measure(name: str, rounds: int, batch: int) -> Dict[str, List[float]]:
    torch.manual_seed(0)
    base = MODELS[name]().train()
    models = {variant: make_variant(base, spec) for variant, spec in VARIANTS.items()}
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    for model in models.values():  # warm-up; the first weight+activation step calibrates
        for _ in range(2):
            training_step(model, x, y)
    times: Dict[str, List[float]] = {variant: [] for variant in models}
    order = list(models)
    for round_index in range(rounds):
        for variant in order[round_index % len(order):] + order[: round_index % len(order)]:
            start = time.perf_counter()
            training_step(models[variant], x, y)
            times[variant].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.rounds} interleaved rounds, forward + backward")
    print(f"{'model':<10} {'variant':<27} {'median ms':>10} {'x float':>8} {'x float (min)':>14}")
    for name in args.models:
        times = measure(name, args.rounds, args.batch)
        median, fastest = statistics.median(times["float"]), min(times["float"])
        for variant, samples in times.items():
            print(f"{name:<10} {variant:<27} {statistics.median(samples) * 1e3:10.2f} "
                  f"{statistics.median(samples) / median:8.2f} {min(samples) / fastest:14.2f}")


if __name__ == "__main__":
    main()
