"""Time of ``GETA.step()`` in each phase against ``torch.optim.AdamW.step()`` on the same model and gradients.

For each model (quantized weight+activation, ``model_to_quantize_model`` defaults otherwise) one batch is run
forward and backward once; its gradients stay in ``.grad`` for every timed step (GETA leaves its update direction
there, computed in place, which changes the values but not the work), and only ``step()`` is timed. GETA runs a
schedule that visits every phase -- warm-up, projection, the joint pruning step, fixed bits -- and each of its
steps is attributed to the phase it ran in; the steps that
start a pruning period (importance scores, selection) are reported separately. AdamW steps are interleaved with
GETA's so that both see the same machine load. Prints the median per phase and its ratio to AdamW's median.

    python benchmarks/optimizer_step.py [--models vgg7_bn llama] [--steps 15] [--threads N]

Target: <= 1.5x AdamW in every phase.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from only_train_once import OTO  # noqa: E402
from only_train_once.quantization import model_to_quantize_model  # noqa: E402
from sanity_check.registry import BACKBONES, run_model  # noqa: E402


def _loss(output) -> torch.Tensor:
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.float().pow(2).mean()


def _batch(name: str, batch: int):
    example = BACKBONES[name].example_input(0)
    if isinstance(example, torch.Tensor):
        return example.repeat(batch, *[1] * (example.dim() - 1))
    return example


UNTIMED = 3  # first warm-up steps: the allocator settles, moment buffers are created


def _geta_schedule(steps: int) -> dict:
    """Every phase gets ``steps`` timed steps (plus the period start)."""
    return dict(start_projection_step=steps + UNTIMED, projection_steps=steps, projection_periods=1,
                start_pruning_step=2 * steps + UNTIMED, pruning_steps=steps + 1, pruning_periods=1)


def bench(name: str, steps: int, batch: int) -> Dict[str, float]:
    torch.manual_seed(0)
    model = BACKBONES[name].factory()
    model_to_quantize_model(model, quant_mode="weight_and_activation")
    example = _batch(name, batch)
    oto = OTO(model, example)
    model.train()
    _loss(run_model(model, example)).backward()
    twin = copy.deepcopy(model)
    for source, target in zip(model.parameters(), twin.parameters()):
        target.grad = None if source.grad is None else source.grad.clone()
    schedule = _geta_schedule(steps)
    geta = oto.geta(variant="adamw", lr=1e-4, lr_quant=1e-4, target_group_sparsity=0.5, min_bit_wt=4,
                    max_bit_wt=16, **schedule)
    adamw = torch.optim.AdamW([p for p in twin.parameters() if p.requires_grad], lr=1e-4)
    total = schedule["start_pruning_step"] + schedule["pruning_steps"] + steps - UNTIMED
    times: Dict[str, List[float]] = {}
    ratios: Dict[str, List[float]] = {}
    reference: List[float] = []
    for _ in range(UNTIMED):
        adamw.step()
        geta.step()
    for _ in range(total):
        step = geta.num_steps + 1
        starts = geta._pruning_period_starts(step)
        start = time.perf_counter()
        geta.step()
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        adamw.step()
        baseline = time.perf_counter() - start
        if starts:
            label = "period start"
        elif geta.active_redundant_group_idxes:
            label = "joint (pruning)"
        else:
            label = geta.phase(step)
        times.setdefault(label, []).append(elapsed)
        ratios.setdefault(label, []).append(elapsed / baseline)
        reference.append(baseline)
    print(f"\n{name} (quantized W+A, batch {batch}): AdamW.step() median {statistics.median(reference) * 1e3:.2f} ms")
    print(f"  {'phase':18s} {'steps':>5s} {'median ms':>10s} {'x AdamW':>8s}   (x AdamW: median of per-step ratios "
          "to the AdamW step run right after)")
    summary = {}
    for label in ("warmup", "projection", "joint (pruning)", "fixed", "period start"):
        if label not in times:
            continue
        summary[label] = statistics.median(ratios[label])
        print(f"  {label:18s} {len(times[label]):5d} {statistics.median(times[label]) * 1e3:10.2f} "
              f"{summary[label]:8.2f}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vgg7_bn", "llama"])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per phase")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        bench(name, args.steps, args.batch)


if __name__ == "__main__":
    main()
