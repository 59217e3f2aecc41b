"""Quantization-aware training step against float training, on the models people train (CPU).

Whole training step, as a user runs it: ``zero_grad``, forward, loss, backward, ``optimizer.step()``. The float
model trains with ``torch.optim.AdamW``; its quantized copies (``model_to_quantize_model`` defaults: nonlinear
quantizer, 16 bits; weight-only and weight+activation) train with GETA (``oto.geta(variant="adamw")``, projection
phase: bits projected every step, no pruning period yet). Each quantized variant runs with the eager quantizer
kernels and with the fused compiled ones (``set_fused_kernels``). All variants of a model are interleaved (the
order rotates every round, garbage collected outside the timing); the median per variant and its ratio to the
float step are printed, with the ratio of the minima. The exponents ``t`` leave 1 at the first GETA step, so the
general power path is what is measured.

``llama7b_layer`` is one Llama decoder layer at 7B width (hidden 4096, intermediate 11008, 16 tokens, ~0.8 GB of
fp32 weights shared by all its variants): forward only, under ``torch.no_grad()``, with every exponent set to
``t = 1.1`` (a trained quantizer), plus a variant whose quantizer parameters are frozen (``requires_grad=False``):
its weights are quantized once and served from the cache while they do not change.

    python benchmarks/quant_overhead.py [--models resnet50 bert ...] [--threads 1 2] [--rounds 7] [--quick]
        [--kernels] [--weight-pass]

Targets (issue 17): whole step <= 1.3x float on every model, weight-only <= 1.15x; 7B-width layer forward <= 1.5x.
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from only_train_once import OTO  # noqa: E402
from only_train_once.quantization import (  # noqa: E402
    QuantizeMixin, fake_quantize, model_to_quantize_model, set_fused_kernels)
from tests.thirdparty import import_module  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# Models: each case builds a model and a batch; its loss maps (model, batch) to a scalar
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    build: Callable[[], nn.Module]
    batch: Callable[[bool], Tuple[torch.Tensor, torch.Tensor]]  # quick -> (inputs, targets)
    training: bool = True  # False: forward only under no_grad


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


def images(classes: int, size: int, quick_size: int, batch: int, quick_batch: int):
    def make(quick: bool):
        n, s = (quick_batch, quick_size) if quick else (batch, size)
        return torch.randn(n, 3, s, s), torch.randint(0, classes, (n,))
    return make


def tokens(vocab: int, length: int, batch: int, quick_batch: int):
    def make(quick: bool):
        n = quick_batch if quick else batch
        ids = torch.randint(0, vocab, (n, length))
        return ids, ids
    return make


def timm_model(name: str) -> Callable[[], nn.Module]:
    return lambda: import_module("timm").create_model(name, pretrained=False)


class LogitsOnly(nn.Module):
    """A Hugging Face model returning its logits tensor (the graph tracer takes positional tensor inputs)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, return_dict=False)[0]


def hf_transformers():
    """transformers, after making torchvision importable beside the CPU torch (transformers imports it)."""
    try:
        import_module("torchvision")
    except ImportError:
        pass
    return import_module("transformers")


def bert() -> nn.Module:
    transformers = hf_transformers()
    config = transformers.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=1024, num_labels=2)
    return LogitsOnly(transformers.BertForSequenceClassification(config))


def llama() -> nn.Module:
    transformers = hf_transformers()
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2)
    return LogitsOnly(transformers.LlamaForCausalLM(config))


def llama7b_layer() -> nn.Module:
    transformers = hf_transformers()
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=4096, intermediate_size=11008, num_hidden_layers=1,
                                      num_attention_heads=32, num_key_value_heads=32)
    return LogitsOnly(transformers.LlamaModel(config))


CASES: Dict[str, Case] = {
    "vgg7_bn": Case(vgg7_bn, images(10, 32, 32, 32, 16)),
    "mlp": Case(mlp, images(10, 32, 32, 32, 32)),
    "mlp_small": Case(lambda: mlp((3072, 64, 32, 10)), images(10, 32, 32, 32, 32)),  # per-call overheads dominate
    "resnet50": Case(timm_model("resnet50"), images(1000, 160, 112, 8, 4)),
    "efficientnet_b0": Case(timm_model("efficientnet_b0"), images(1000, 160, 112, 8, 4)),
    "mobilenetv3_large_100": Case(timm_model("mobilenetv3_large_100"), images(1000, 160, 112, 8, 4)),
    "deit_tiny": Case(timm_model("deit_tiny_patch16_224"), images(1000, 224, 224, 8, 2)),
    "convnext_atto": Case(timm_model("convnext_atto"), images(1000, 160, 112, 8, 4)),
    "bert": Case(bert, tokens(30522, 128, 8, 2)),
    "llama": Case(llama, tokens(32000, 128, 4, 2)),
    "llama7b_layer": Case(llama7b_layer, tokens(32, 16, 1, 1), training=False),
}


def loss_of(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if output.dim() == 3:  # language model: next-token loss
        return F.cross_entropy(output[:, :-1].flatten(0, 1).float(), target[:, 1:].flatten())
    if output.dim() == 2 and target.dim() == 2:  # sequence classification on token ids: any fixed label
        return F.cross_entropy(output.float(), target[:, 0] % output.shape[1])
    return F.cross_entropy(output.float(), target)


# ---------------------------------------------------------------------------------------------------------------
# Variants: (name, quantization mode or None for float, fused kernels, frozen quantizer)
# ---------------------------------------------------------------------------------------------------------------
VARIANTS = (
    ("float", None, False, False),
    ("weight-only, eager", "weight_only", False, False),
    ("weight-only, fused", "weight_only", True, False),
    ("weight+activation, eager", "weight_and_activation", False, False),
    ("weight+activation, fused", "weight_and_activation", True, False),
)
FORWARD_ONLY_VARIANTS = (("weight-only, frozen quantizer", "weight_only", False, True),)


def quantized_copy(model: nn.Module, mode: str, share_weights: bool) -> nn.Module:
    memo = {id(p): p for p in model.parameters()} if share_weights else {}
    return model_to_quantize_model(copy.deepcopy(model, memo), quant_mode=mode)


def set_quantizers(model: nn.Module, exponent: float, frozen: bool) -> None:
    """Every exponent ``t`` to ``exponent``; quantizer parameters frozen if ``frozen``."""
    for layer in (m for m in model.modules() if isinstance(m, QuantizeMixin)):
        for name, param in layer.named_quant_parameters():
            if name.startswith("t_quant"):
                with torch.no_grad():
                    param.fill_(exponent)
            param.requires_grad_(not frozen)


def training_step(model: nn.Module, optimizer, inputs, targets) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss_of(model(inputs), targets).backward()
    optimizer.step()


def make_step(case: Case, model: nn.Module, optimizer, fused: bool, inputs, targets) -> Callable[[], None]:
    def step() -> None:
        set_fused_kernels(fused)
        if case.training:
            training_step(model, optimizer, inputs, targets)
        else:
            with torch.no_grad():
                model(inputs)
    return step


def geta_for(model: nn.Module, inputs: torch.Tensor):
    """GETA in its projection phase for all timed steps (no pruning period starts)."""
    oto = OTO(model, inputs)
    return oto.geta(variant="adamw", lr=1e-4, lr_quant=1e-4, target_group_sparsity=0.5, start_projection_step=0,
                    projection_steps=10 ** 6, start_pruning_step=10 ** 6, pruning_steps=1, min_bit_wt=4,
                    max_bit_wt=16, device="cpu")


def build_steps(name: str, quick: bool) -> Dict[str, Callable[[], None]]:
    case = CASES[name]
    torch.manual_seed(0)
    base = case.build().train(case.training)
    inputs, targets = case.batch(quick)
    steps = {}
    for variant, mode, fused, frozen in VARIANTS + (() if case.training else FORWARD_ONLY_VARIANTS):
        model = base if mode is None else quantized_copy(base, mode, share_weights=not case.training)
        if mode is not None and not case.training:
            set_quantizers(model, 1.1, frozen)
        optimizer = None
        if case.training:
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if mode is None else geta_for(model, inputs)
            model.train()
        steps[variant] = make_step(case, model, optimizer, fused, inputs, targets)
    return steps


def measure(steps: Dict[str, Callable[[], None]], rounds: int, warmup: int = 2) -> Dict[str, List[float]]:
    """Seconds per call of every step, interleaved with the order rotating each round."""
    for _ in range(warmup):  # compiles the fused kernels, calibrates activations, moves t off 1
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {variant: [] for variant in steps}
    order = list(steps)
    for round_index in range(rounds):
        shift = round_index % len(order)
        for variant in order[shift:] + order[:shift]:
            gc.collect()
            start = time.perf_counter()
            steps[variant]()
            times[variant].append(time.perf_counter() - start)
    return times


def kernel_steps(shape: Tuple[int, ...] = (3072, 768)) -> Dict[str, Callable[[], None]]:
    """One quantizer alone, forward + backward with every gradient (``t = 1.1``): eager against fused; the row
    "float" is a plain copy of the tensor with its gradient (``x * 1``), the floor any quantizer pays."""
    x = torch.randn(shape, requires_grad=True)
    d, q_m, t = (torch.tensor([v], requires_grad=True) for v in (1e-4, 3.0, 1.1))
    grad = torch.randn(shape)

    def run(fused: Optional[bool]) -> Callable[[], None]:
        def step() -> None:
            if fused is None:
                (x * 1).backward(grad)
                return
            set_fused_kernels(fused)
            fake_quantize(x, d, q_m, t, quant_type="symmetric+nonlinear").backward(grad)
        return step
    return {"float": run(None), "quantizer, eager": run(False), "quantizer, fused": run(True)}


def weight_pass_steps(shape: Tuple[int, int] = (11008, 4096), tokens: int = 16) -> Dict[str, Callable[[], None]]:
    """Why a 7B-width forward costs more quantized: one MLP weight of a 7B Llama under ``no_grad``. The row
    "float" is the float product with 16 tokens (one read of the weight); "copy" writes a fresh tensor of the
    weight's size (``clone``: the floor of any quantizer that materialises the quantized weight); then the
    quantizer, eager and fused, linear (``t = 1``) and nonlinear (``t = 1.1``: a log and an exp per weight)."""
    weight = torch.randn(shape) * 0.02
    x = torch.randn(tokens, shape[1])
    d, q_m = torch.tensor([1e-4]), torch.tensor([0.1])

    def quantize(fused: bool, exponent: float) -> Callable[[], None]:
        t = torch.tensor([exponent])

        def step() -> None:
            set_fused_kernels(fused)
            with torch.no_grad():
                fake_quantize(weight, d, q_m, t, quant_type="symmetric+nonlinear")
        return step
    steps = {"float": lambda: x @ weight.t(), "copy (clone)": weight.clone}
    for fused in (False, True):
        for exponent in (1.0, 1.1):
            steps[f"quantizer t={exponent}, {'fused' if fused else 'eager'}"] = quantize(fused, exponent)
    return steps


def report(name: str, threads: int, times: Dict[str, List[float]]) -> List[str]:
    median, fastest = statistics.median(times["float"]), min(times["float"])
    rows = []
    for variant, samples in times.items():
        rows.append(f"| {name} | {threads} | {variant} | {statistics.median(samples) * 1e3:.1f} | "
                    f"{statistics.median(samples) / median:.2f} | {min(samples) / fastest:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smaller batches and images, 3 rounds by default")
    parser.add_argument("--kernels", action="store_true", help="first time one quantizer alone, eager and fused")
    parser.add_argument("--weight-pass", action="store_true",
                        help="first time quantizing one 7B-width weight against the float product and a copy")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, median of {rounds} interleaved rounds, "
          f"{'quick sizes' if args.quick else 'full sizes'}")
    print("| model | threads | variant | median ms | x float | x float (min) |\n|---|---|---|---|---|---|")
    for threads in args.threads if args.kernels else ():
        torch.set_num_threads(threads)
        report("quantizer 3072x768", threads, measure(kernel_steps(), max(rounds, 7)))
    for threads in args.threads if args.weight_pass else ():
        torch.set_num_threads(threads)
        report("7B MLP weight 11008x4096", threads, measure(weight_pass_steps(), max(rounds, 5)))
    for name in args.models:
        steps = build_steps(name, args.quick)
        for threads in args.threads:
            torch.set_num_threads(threads)
            report(name, threads, measure(steps, rounds))
        del steps
        gc.collect()
    set_fused_kernels(False)


if __name__ == "__main__":
    main()
