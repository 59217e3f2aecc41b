"""Where the time of a quantized training step goes (torch.profiler, one thread, CPU).

For each model: the whole training step of ``benchmarks/quant_overhead.py`` (float + AdamW; weight-only and
weight+activation models + GETA, eager and fused quantizer kernels), profiled over a few steps after a warm-up.
Per variant, milliseconds per step of: the forward, the backward, the optimizer step, the quantizers' forward and
backward (the autograd functions' total time, kernels included) and the Python time spent inside them per call
(their self time: interpreter, argument checks and scalar bookkeeping around the kernels). Weight quantizers are
what the weight-only row adds to float; activation quantizers what weight+activation adds to weight-only; the GETA
step against AdamW is the optimizer column. The profiler's own overhead inflates small operations, so read the
columns as shares, and ``quant_overhead.py`` for ratios.

    python benchmarks/quant_step_profile.py [--models mobilenetv3_large_100 bert] [--steps 2]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import quant_overhead as bench  # noqa: E402
from only_train_once.quantization import set_fused_kernels  # noqa: E402

QUANTIZER_FUNCTIONS = ("SymQuantizerLinear", "SymQuantizerNonLinear", "DGEQuantizer", "_FrozenQuantizer")
PHASES = ("forward", "backward", "optimizer")


def profiled_step(model, optimizer, inputs, targets) -> None:
    optimizer.zero_grad(set_to_none=True)
    with record_function("forward"):
        loss = bench.loss_of(model(inputs), targets)
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer"):
        optimizer.step()


def breakdown(model, optimizer, inputs, targets, fused: bool, steps: int) -> Dict[str, float]:
    """Milliseconds per step of each phase and of the quantizers; Python microseconds per quantizer call."""
    set_fused_kernels(fused)
    for _ in range(2):  # compiles the fused kernels, calibrates activations, moves t off 1
        profiled_step(model, optimizer, inputs, targets)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            profiled_step(model, optimizer, inputs, targets)
    events = {event.key: event for event in prof.key_averages()}
    row = {phase: events[phase].cpu_time_total / 1e3 / steps for phase in PHASES}
    for direction, suffix in (("quantizer forward", ""), ("quantizer backward", "Backward")):
        found = [events[name + suffix] for name in QUANTIZER_FUNCTIONS if name + suffix in events]
        row[direction] = sum(event.cpu_time_total for event in found) / 1e3 / steps
        calls = sum(event.count for event in found)
        row[f"{direction} python us/call"] = sum(event.self_cpu_time_total for event in found) / max(calls, 1)
    set_fused_kernels(False)
    return row


def profile_model(name: str, steps: int) -> List[List[str]]:
    case = bench.CASES[name]
    torch.manual_seed(0)
    base = case.build().train()
    inputs, targets = case.batch(True)
    rows = []
    for variant, mode, fused, _ in bench.VARIANTS:
        model = base if mode is None else bench.quantized_copy(base, mode, share_weights=False)
        optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-4) if mode is None
                     else bench.geta_for(model, inputs))
        model.train()
        row = breakdown(model, optimizer, inputs, targets, fused, steps)
        rows.append([name, variant, f"{sum(row[p] for p in PHASES):.0f}"] + [f"{row[p]:.0f}" for p in PHASES] + [
            f"{row['quantizer forward']:.0f}", f"{row['quantizer backward']:.0f}",
            f"{row['quantizer forward python us/call']:.0f} / {row['quantizer backward python us/call']:.0f}"])
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["mobilenetv3_large_100", "bert"],
                        choices=[name for name, case in bench.CASES.items() if case.training])
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, one thread, quick sizes, ms per step (profiled, {args.steps} steps)")
    print("| model | variant | step | forward | backward | optimizer | quantizer fwd | quantizer bwd | "
          "quantizer python us/call (fwd / bwd) |\n|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        profile_model(name, args.steps)


if __name__ == "__main__":
    main()
