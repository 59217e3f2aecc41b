"""Digits accuracy of GETA with the reference's numerics and with each numerics fix (SPEC 12.4 O5, O7, O15, O16).

The recipe is ``tests.optimizer.common.DIGITS_RECIPE``: the quantized (weight+activation) DigitsNet, a small CNN
with a channel concat (so the auxiliary-scaling fix O7 matters), trained for 320 steps of batch 64 on
scikit-learn's digits (no download), pruned to 50% of its 64 units over 3 periods, weight bits 16 -> [4, 10].
Each configuration runs for every seed; the table gives the test accuracy (297 held-out digits) of the full
model, which equals the compressed model's.

Configurations: ``reference`` uses the reference's behaviour for all four switches; ``+O5`` ... ``+O16`` fix one
of them; ``all fixes`` fixes all four; ``default`` is the library default, ``default -O..`` the default with one
switch set back to the reference's behaviour (``--rows`` picks the rows).

    python benchmarks/optimizer_numerics.py [--seeds 0 1 2 3 4] [--steps 320] [--rows reference default ...]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.optimizer.common import train_digits  # noqa: E402

REFERENCE = dict(forget_rate_guard="signed_mean", auxiliary_scaling="per_param",
                 moment_initialization="reference", redundant_selection="index")
FIXES = {
    "+O5 forget-rate guard rms": dict(forget_rate_guard="magnitude"),
    "+O7 aux scaling once": dict(auxiliary_scaling="once"),
    "+O15 standard Adam moments": dict(moment_initialization="standard"),
    "+O16 selection by score": dict(redundant_selection="score"),
}
ALL_FIXES = dict(forget_rate_guard="magnitude", auxiliary_scaling="once", moment_initialization="standard",
                 redundant_selection="score")
REVERTS = {
    "default -O5 (signed mean guard)": dict(forget_rate_guard="signed_mean"),
    "default -O7 (aux scaling per param)": dict(auxiliary_scaling="per_param"),
    "default -O15 (reference moments)": dict(moment_initialization="reference"),
    "default -O16 (index order)": dict(redundant_selection="index"),
    "default -O5 -O7": dict(forget_rate_guard="signed_mean", auxiliary_scaling="per_param"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", nargs="+", default=None, help="configuration names (prefixes) to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configurations = {"reference": REFERENCE}
    configurations.update({name: {**REFERENCE, **fix} for name, fix in FIXES.items()})
    configurations["all fixes"] = ALL_FIXES
    configurations["default"] = {}
    configurations.update(REVERTS)
    if args.rows:
        configurations = {k: v for k, v in configurations.items() if any(k.startswith(r) for r in args.rows)}
    print(f"digits, {args.steps} steps, seeds {args.seeds}: test accuracy of the full (= compressed) model")
    print(f"{'configuration':32s} {'mean':>7s} {'std':>7s} {'min':>7s}  per seed")
    for name, flags in configurations.items():
        start = time.perf_counter()
        results = []
        for seed in args.seeds:
            _, _, optimizer, accuracy = train_digits(seed=seed, steps=args.steps, **flags)
            assert optimizer.compute_metrics().num_zero_groups == optimizer.target_num_redundant_groups
            results.append(accuracy)
        spread = statistics.stdev(results) if len(results) > 1 else 0.0
        print(f"{name:32s} {statistics.mean(results):7.4f} {spread:7.4f} {min(results):7.4f}  "
              f"{' '.join(f'{r:.3f}' for r in results)}  ({time.perf_counter() - start:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
