"""The end-to-end demo: compress a digits classifier with GETA and compare it with the dense float model.

1. train the dense float model for ``epochs`` epochs (the baseline);
2. from the same initialisation, quantize it (weights and activations), wrap it in ``OTO`` and train it for the
   same number of epochs with ``oto.geta(...)``: bit-width projection, then structured pruning, then fixed bits;
3. build the compressed model with ``oto.construct_subnet``, write it also bit-packed (``oto.save_packed``) and as
   an ONNX QDQ graph (``oto.export_qdq_onnx``), export its deployable forms (``oto.export``), and print a
   before/after table with the real file sizes next to the theoretical weight size and the deployed model's
   latency next to the dense model's.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from tqdm import tqdm

from .. import OTO
from ..quantization.quant_model import model_to_quantize_model
from .data import digits_loaders
from .latency import deployed_latency
from .models import MODELS

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Everything the demo measured."""

    baseline_accuracy: float
    full_accuracy: float
    compressed_accuracy: float
    before: Dict[str, float]
    after: Dict[str, float]
    layer_bits: Dict[str, Dict[str, int]]
    files: Dict[str, str]
    group_sparsity: float
    seconds: float
    file_sizes: Dict[str, int] = field(default_factory=dict)  # bytes of each file of the compressed model
    latency: Dict[str, Tuple[float, float]] = field(default_factory=dict)  # row: (dense ms, deployed ms)

    @property
    def bops_reduction(self) -> float:
        return 1.0 - self.after["bops"] / self.before["bops"]


def evaluate(model: nn.Module, loader) -> float:
    """Top-1 accuracy in percent; leaves the model in eval mode."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += (model(images).argmax(1) == labels).sum().item()
            total += labels.numel()
    return 100.0 * correct / total


def train(model: nn.Module, optimizer, loader, epochs: int, description: str, quiet: bool,
          after_step: Optional[Callable[[int], None]] = None) -> None:
    """Cross-entropy training with a cosine schedule; ``after_step(step)`` (steps counted from 1) runs after every
    optimizer step, e.g. to evaluate (it must leave the model in training mode)."""
    criterion = nn.CrossEntropyLoss()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * len(loader)))
    step = 0
    for _ in tqdm(range(epochs), desc=description, disable=quiet, unit="epoch"):
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            criterion(model(images), labels).backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if after_step is not None:
                after_step(step)


def costs(oto: OTO) -> Dict[str, float]:
    return {"params": oto.compute_num_params(), "macs": oto.compute_macs()["total"],
            "bops": oto.compute_bops()["total"], "weight_size": oto.compute_weight_size()["total"],
            "average_bits": oto.compute_average_bit_width()}


def layer_bit_widths(model: nn.Module) -> Dict[str, Dict[str, int]]:
    return {name: {"weight": module.weight_bit, "activation": module.activation_bit}
            for name, module in model.named_modules() if hasattr(module, "weight_bit")}


def compressed_files(oto: OTO) -> Dict[str, str]:
    """Every file of the compressed model by kind: construct_subnet's pickled and float safetensors files (the
    ``torch`` format), and the packed low-bit and QDQ ONNX files written next to them."""
    compressed_path = oto.compressed_model_path
    assert compressed_path is not None, "construct_subnet() writes the compressed model first"
    base = compressed_path.rsplit(".", 1)[0]
    return {"pickled .pt": compressed_path, "float safetensors": base + ".safetensors",
            "packed low-bit": oto.save_packed(base + "_packed.safetensors"),
            "QDQ ONNX": oto.export_qdq_onnx(base + "_qdq.onnx")}


def geta_schedule(steps_per_epoch: int, epochs: int) -> dict:
    """GETA's phases as fractions of training (for 24 epochs: 2 of warm-up, 4 of bit-width projection in 4
    periods, 1 plain, 6 of pruning in 3 periods, then 11 at fixed bit widths to recover)."""
    total = steps_per_epoch * epochs

    def span(fraction: float) -> int:
        return max(4, int(fraction * total))

    warmup, projection, gap, pruning = span(1 / 12), span(1 / 6), span(1 / 24), span(1 / 4)
    return {"start_projection_step": warmup, "projection_steps": projection, "projection_periods": 4,
            "start_pruning_step": warmup + projection + gap, "pruning_steps": pruning, "pruning_periods": 3}


def run(model_name: str = "cnn", epochs: int = 24, target_group_sparsity: float = 0.5, min_bit: int = 4,
        max_bit: int = 16, out_dir: str = "demo_output", seed: int = 0, quiet: bool = False) -> DemoResult:
    """Run the demo; returns the measurements (see :class:`DemoResult`)."""
    start = time.perf_counter()
    train_loader, test_loader = digits_loaders(seed=seed)
    dummy_input = next(iter(test_loader))[0][:1]

    torch.manual_seed(seed)
    baseline = MODELS[model_name]()
    initial_state = {k: v.clone() for k, v in baseline.state_dict().items()}
    train(baseline, torch.optim.AdamW(baseline.parameters(), lr=3e-3, weight_decay=1e-4), train_loader, epochs,
          "dense float", quiet)
    baseline_accuracy = evaluate(baseline, test_loader)
    before = costs(OTO(baseline, dummy_input))

    model = MODELS[model_name]()
    model.load_state_dict(initial_state)
    model = model_to_quantize_model(model, quant_mode="weight_and_activation")
    oto = OTO(model, dummy_input)
    optimizer = oto.geta(variant="adam", lr=3e-3, lr_quant=1e-3, first_momentum=0.9, weight_decay=1e-4,
                         target_group_sparsity=target_group_sparsity, bit_reduction=2, min_bit_wt=min_bit,
                         max_bit_wt=max_bit, min_bit_act=min_bit, max_bit_act=max_bit,
                         **geta_schedule(len(train_loader), epochs))
    train(model, optimizer, train_loader, epochs, "GETA", quiet)
    full_accuracy = evaluate(model, test_loader)
    group_sparsity = optimizer.compute_metrics().group_sparsity

    os.makedirs(out_dir, exist_ok=True)
    oto.construct_subnet(out_dir=out_dir)
    assert oto.compressed_model_path is not None and oto.full_group_sparse_model_path is not None
    compressed_accuracy = evaluate(model, test_loader)
    after = costs(OTO(model, dummy_input))
    compressed = compressed_files(oto)
    files = {"full group-sparse model": oto.full_group_sparse_model_path,
             "compressed model": oto.compressed_model_path,
             "packed low-bit model": compressed["packed low-bit"],
             "QDQ ONNX model": compressed["QDQ ONNX"],
             "report": oto.report(os.path.join(out_dir, "report"))}
    deployed = oto.export(os.path.join(out_dir, "deploy"))
    files.update({f"deployed {target}": path for target, path in deployed.items()})
    test_batch = next(iter(test_loader))[0]
    latency = deployed_latency(baseline, deployed, dummy_input, test_batch, out_dir)
    return DemoResult(baseline_accuracy, full_accuracy, compressed_accuracy, before, after,
                      layer_bit_widths(model), files, group_sparsity, time.perf_counter() - start,
                      {kind: os.path.getsize(path) for kind, path in compressed.items()}, latency)


def file_size_rows(result: DemoResult) -> List[tuple]:
    """Table rows of the compressed model's real file sizes (Mbit), as multiples of its theoretical weight size."""
    theoretical = result.after["weight_size"]
    return [(f"  {kind} file (Mbit)", "", f"{8e-6 * size:.3f}", f"{8e-6 * size / theoretical:.2f}x theoretical")
            for kind, size in result.file_sizes.items()]


def latency_rows(result: DemoResult) -> List[tuple]:
    """Table rows of the latency (ms, one test batch) of the dense model and of the deployed exports."""
    return [(f"latency, {label} (ms)", f"{dense:.2f}", f"{deployed:.2f}", f"{deployed / dense:.2f}x")
            for label, (dense, deployed) in result.latency.items()]


def report(result: DemoResult) -> str:
    """The before/after table as text."""
    before, after = result.before, result.after

    def change(key: str) -> str:
        return f"{100 * (1 - after[key] / before[key]):.1f}% less" if before[key] else ""

    rows = [("top-1 accuracy (%)", f"{result.baseline_accuracy:.2f}", f"{result.compressed_accuracy:.2f}",
             f"{result.compressed_accuracy - result.baseline_accuracy:+.2f} points"),
            ("parameters (M)", f"{before['params']:.4f}", f"{after['params']:.4f}", change("params")),
            ("MACs (M)", f"{before['macs']:.3f}", f"{after['macs']:.3f}", change("macs")),
            ("BOPs (M)", f"{before['bops']:.1f}", f"{after['bops']:.1f}", change("bops")),
            ("weight size (Mbit)", f"{before['weight_size']:.3f}", f"{after['weight_size']:.3f}",
             change("weight_size")),
            *file_size_rows(result),
            *latency_rows(result),
            ("average bit width", f"{before['average_bits']:.2f}", f"{after['average_bits']:.2f}", "")]
    width = max(22, max(len(row[0]) for row in rows) + 1)
    lines = [f"{'':{width}}{'dense float':>14}{'GETA compressed':>18}   change", "-" * (width + 50)]
    lines += [f"{name:{width}}{b:>14}{a:>18}   {c}" for name, b, a, c in rows]
    lines.append("")
    lines.append(f"group sparsity reached: {result.group_sparsity:.3f}; full group-sparse model accuracy "
                 f"{result.full_accuracy:.2f}% (compressed: {result.compressed_accuracy:.2f}%)")
    lines.append("per-layer bit widths (weight / activation):")
    lines += [f"  {name:24} {bits['weight']:>2} / {bits['activation']:>2}" for name, bits in result.layer_bits.items()]
    met = result.bops_reduction >= 0.9 and result.compressed_accuracy >= result.baseline_accuracy - 1.0
    lines.append(f"target (>= 90% fewer BOPs, accuracy within 1 point of dense float): "
                 f"{'met' if met else 'NOT met'} ({100 * result.bops_reduction:.1f}% fewer BOPs)")
    lines += [f"{name}: {path}" for name, path in result.files.items()]
    lines.append(f"total time: {result.seconds:.0f} s")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="oto-demo", description="Compress a digits classifier with GETA "
                                     "(joint structured pruning and mixed-precision quantization).")
    parser.add_argument("--model", choices=sorted(MODELS), default="cnn")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--sparsity", type=float, default=0.5, help="target group sparsity (GETA default 0.5)")
    parser.add_argument("--min-bit", type=int, default=4, help="lowest weight/activation bit width")
    parser.add_argument("--max-bit", type=int, default=16, help="highest weight/activation bit width")
    parser.add_argument("--out-dir", default="demo_output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    result = run(args.model, args.epochs, args.sparsity, args.min_bit, args.max_bit, args.out_dir, args.seed,
                 args.quiet)
    print(report(result))
    return 0
