"""Cost of the non-finite checks in GETA/HESSO steps: a step with the checks vs the same step without them.

The checks are one fused max-abs reduction over all gradients before the step and one over all parameters after
it. Models: VGG7-BN (float) and ResNet-50 (float), batch of random data; interleaved repetitions.

    python benchmarks/finite_check.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import logging

import torch

from common import ResNet50, interleaved, machine, print_table

from only_train_once import OTO
from sanity_check.backends import vgg7_bn


def measure(name: str, factory, images: torch.Tensor, optimizer_name: str, repeats: int) -> list:
    torch.manual_seed(0)
    model = factory()
    oto = OTO(model, images[:1])
    optimizer = getattr(oto, optimizer_name)(lr=1e-3, variant="adam", target_group_sparsity=0.5)
    model(images).sum().backward()
    checked_grads, checked_params = optimizer.gradients_are_finite, optimizer.check_parameters_finite

    def step(checks: bool):
        def run():
            optimizer.gradients_are_finite = checked_grads if checks else (lambda: True)
            optimizer.check_parameters_finite = checked_params if checks else (lambda: None)
            optimizer.step()
        return run

    def check_only():
        checked_grads()
        checked_params()

    times = interleaved({"without": step(False), "with": step(True), "checks": check_only}, repeats)
    return [name, optimizer_name, f"{1000 * times['without']:.1f}", f"{1000 * times['with']:.1f}",
            f"{1000 * times['checks']:.2f}", f"{times['checks'] / times['without']:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"machine: {machine()}\n")
    rows = []
    for name, factory, images in (("VGG7-BN", vgg7_bn, torch.randn(8, 3, 32, 32)),
                                  ("ResNet-50", ResNet50, torch.randn(2, 3, 64, 64))):
        for optimizer_name in ("hesso", "geta"):
            rows.append(measure(name, factory, images, optimizer_name, args.repeats))
            print(" | ".join(rows[-1]), flush=True)
    print_table("Non-finite checks per optimizer step", ["model", "optimizer", "step without ms", "step with ms",
                                                         "checks alone ms", "checks / step"], rows)


if __name__ == "__main__":
    main()
