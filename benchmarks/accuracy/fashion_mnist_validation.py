"""Fashion-MNIST recipe pilot on a VALIDATION split (never the test set): where does GETA lose accuracy?

Trains one method of ``fashion_mnist.py`` on its fixed 10,000-image training subset and evaluates on 5,000 other
images of the *training* set (stratified, disjoint from the subset). For GETA it also evaluates the trained model
with its quantizers switched off one kind at a time (float weights, float activations) and after recomputing the
BatchNorm statistics of the quantized network on training batches, and it records the validation accuracy at the
end of every epoch, so the cost of each part (quantization of weights or of activations, pruning, BN statistics,
the schedule) is measured rather than guessed.

    python benchmarks/accuracy/fashion_mnist_validation.py --method geta --sparsity 0.15 [--min-bit 4 --max-bit 8]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Dict, Iterator, List

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import fashion_mnist as fm
from accuracy_common import costs, load_or_exit
from only_train_once import OTO
from only_train_once.datasets import load_fashion_mnist
from only_train_once.demo.pipeline import evaluate, geta_schedule, train
from only_train_once.quantization.quant_layers import QuantizeMixin
from only_train_once.quantization.quant_model import model_to_quantize_model


def validation_split(train_size: int, validation_size: int):
    """(training subset of ``fashion_mnist.py``, validation set of other training images)."""
    data = load_or_exit(load_fashion_mnist)
    keep = fm.stratified_subset(data.train_labels, train_size)
    rest = np.setdiff1d(np.arange(len(data.train_labels)), keep)
    held = rest[fm.stratified_subset(data.train_labels[rest], validation_size, seed=1)]
    return (fm.to_tensors(data.train_images[keep], data.train_labels[keep]),
            fm.to_tensors(data.train_images[held], data.train_labels[held]))


def quant_layers(model: nn.Module) -> List[QuantizeMixin]:
    return [m for m in model.modules() if isinstance(m, QuantizeMixin)]


@contextlib.contextmanager
def bypassed(model: nn.Module, method: str) -> Iterator[None]:
    """Every quantized layer's ``method`` (``quantize_weight`` or ``quantize_act``) returns its input unchanged
    (diagnosis only: the instance attribute shadows the method)."""
    layers = quant_layers(model)
    for layer in layers:
        setattr(layer, method, lambda value: value)
    try:
        yield
    finally:
        for layer in layers:
            delattr(layer, method)


@torch.no_grad()
def recalibrated_batchnorm(model: nn.Module, loader: DataLoader, batches: int = 60) -> None:
    """Recompute every BatchNorm's running statistics as a plain average over ``batches`` training batches."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for k, (images, _) in enumerate(loader):
        if k == batches:
            break
        model(images)
    for m, (momentum, _) in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def train_tracked(model, optimizer, loader, epochs: int, validation: DataLoader, every: int) -> List[float]:
    """Train as ``only_train_once.demo.pipeline.train`` does; validation accuracy every ``every`` steps."""
    curve: List[float] = []

    def track(step: int) -> None:
        if step % every == 0:
            curve.append(round(evaluate(model, validation), 2))
            model.train()

    train(model, optimizer, loader, epochs, "train", quiet=True, after_step=track)
    return curve


def bit_widths(model: nn.Module) -> Dict[str, List[int]]:
    layers = quant_layers(model)
    return {"weight": [layer.weight_bit for layer in layers], "activation": [layer.activation_bit for layer in layers]}


def quantizer_state(model: nn.Module) -> Dict[str, List[float]]:
    """Per quantized layer: weight range over max|W|, weight exponent, activation range and exponent."""
    state: Dict[str, List[float]] = {"q_m_wt / max|W|": [], "t_wt": [], "q_m_act": [], "t_act": []}
    for layer in quant_layers(model):
        state["q_m_wt / max|W|"].append(round(float(layer.q_m_wt.abs() / layer.weight.detach().abs().max()), 3))
        state["q_m_act"].append(round(float(layer.q_m_act.abs()), 3))
        for key, suffix in (("t_wt", "wt"), ("t_act", "act")):
            t = getattr(layer, f"t_quant_{suffix}", None)
            state[key].append(None if t is None else round(float(t), 3))
    return state


def run(args: argparse.Namespace) -> dict:
    train_set, validation_set = validation_split(args.train_size, args.validation_size)
    validation = DataLoader(validation_set, batch_size=500)
    loader = fm.train_loader(train_set, args.batch_size, args.seed)
    dummy = validation_set[0][0].unsqueeze(0)
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    every = max(1, steps_per_epoch // args.evals_per_epoch)
    torch.manual_seed(args.seed)
    model = fm.FashionCNN(args.width)
    result: dict = {"settings": vars(args)}
    if args.method == "dense":
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=fm.WEIGHT_DECAY)
        result["curve"] = train_tracked(model, optimizer, loader, args.epochs, validation, every)
    else:
        window = None if args.act_clip is None else (-args.act_clip, args.act_clip)
        model = model_to_quantize_model(model, quant_mode="weight_and_activation", act_clip_val=window)
        if args.weight_window_at_range:
            for layer in quant_layers(model):  # probe: the weight window fixed at the initial range max|W|
                bound = float(layer.q_m_wt.abs())
                layer.quant_config = dataclasses.replace(layer.quant_config, weight_clip_val=(-bound, bound))
        oto = OTO(model, dummy)
        schedule = geta_schedule(steps_per_epoch, args.epochs)
        optimizer = oto.geta(variant="adam", lr=args.lr, lr_quant=args.lr_quant, first_momentum=0.9,
                             weight_decay=fm.WEIGHT_DECAY, target_group_sparsity=args.sparsity, bit_reduction=2,
                             min_bit_wt=args.min_bit, max_bit_wt=args.max_bit, min_bit_act=args.min_bit_act,
                             max_bit_act=args.max_bit, importance_normalization=fm.IMPORTANCE, **schedule)
        result["schedule"] = schedule
        result["curve"] = train_tracked(model, optimizer, loader, args.epochs, validation, every)
        result["bits"] = bit_widths(model)
        result["quantizers"] = quantizer_state(model)
        with bypassed(model, "quantize_weight"):
            result["float weights"] = evaluate(model, validation)
        with bypassed(model, "quantize_act"):
            result["float activations"] = evaluate(model, validation)
        with bypassed(model, "quantize_weight"), bypassed(model, "quantize_act"):
            result["float weights and activations"] = evaluate(model, validation)
        result["as trained"] = evaluate(model, validation)
        recalibrated_batchnorm(model, fm.train_loader(train_set, args.batch_size, args.seed + 7))
        result["BN recalibrated"] = evaluate(model, validation)
    result["validation"] = evaluate(model, validation) if args.method == "dense" else result["as trained"]
    result["costs"] = costs(model, dummy)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=("dense", "geta"), default="geta")
    parser.add_argument("--sparsity", type=float, default=0.15)
    parser.add_argument("--min-bit", type=int, default=4)
    parser.add_argument("--min-bit-act", type=int, default=None, help="default: --min-bit")
    parser.add_argument("--max-bit", type=int, default=8)
    parser.add_argument("--lr", type=float, default=fm.LR)
    parser.add_argument("--lr-quant", type=float, default=fm.LR_QUANT)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--validation-size", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evals-per-epoch", type=int, default=2)
    parser.add_argument("--act-clip", type=float, default=None,
                        help="activation straight-through window (-c, c) (default: the library's (-2, 2))")
    parser.add_argument("--weight-window-at-range", action="store_true",
                        help="probe: weight straight-through window (-q, q) with q the initial range max|W|")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", default=os.path.join("outputs", "fashion_mnist_validation.jsonl"))
    args = parser.parse_args()
    if args.min_bit_act is None:
        args.min_bit_act = args.min_bit
    return args


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = run(args)
    result["seconds"] = round(time.perf_counter() - start)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "a") as handle:
        handle.write(json.dumps(result) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
