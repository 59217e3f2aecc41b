"""Cost of the non-finite checks in GETA/HESSO steps: a step with the checks vs the same step without them.

The checks are one fused 2-norm reduction over all gradients before the step and, before anything is written,
one over the update directions (whether ``p - lr * g`` stays finite, with ``||p||`` bounded from the last step),
plus, for GETA, a copy of the quantizer parameters and a check of them and of the joint step's forget terms.
"without" replaces those functions by no-ops; "checks alone" times the gradient check and the descent check
over every parameter; "iteration" is forward + backward + the step without checks (what a training loop pays).
Models: VGG7-BN (float) and ResNet-50 (float), batch of random data; interleaved repetitions.

    python benchmarks/finite_check.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import contextlib
import logging

import torch

from common import ResNet50, interleaved, machine, print_table

from only_train_once import OTO
from only_train_once.optimizer import base_optimizer, geta
from only_train_once.optimizer.base_optimizer import DescentPlan
from only_train_once.optimizer.finite import NormBounds
from sanity_check.backends import vgg7_bn


class _NoSnapshot:
    def __init__(self, tensors):
        pass

    def restore(self):
        pass


@contextlib.contextmanager
def checks_disabled():
    """The step without its non-finite checks (module functions replaced by no-ops for the block)."""
    saved = (base_optimizer.non_finite_names, base_optimizer.unsafe_descent_names, geta.non_finite_names,
             geta.slice_norms, geta.TensorSnapshot)
    base_optimizer.non_finite_names = base_optimizer.unsafe_descent_names = geta.non_finite_names = \
        lambda *args: []
    geta.slice_norms = lambda tensors: [0.0] * len(tensors)
    geta.TensorSnapshot = _NoSnapshot
    try:
        yield
    finally:
        (base_optimizer.non_finite_names, base_optimizer.unsafe_descent_names, geta.non_finite_names,
         geta.slice_norms, geta.TensorSnapshot) = saved


def measure(name: str, factory, images: torch.Tensor, optimizer_name: str, repeats: int) -> list:
    torch.manual_seed(0)
    model = factory()
    oto = OTO(model, images[:1])
    optimizer = getattr(oto, optimizer_name)(lr=1e-3, variant="adam", target_group_sparsity=0.5)
    model(images).sum().backward()

    def step(checks: bool):
        def run():
            with contextlib.nullcontext() if checks else checks_disabled():
                optimizer.step()
        return run

    bounds = NormBounds()
    params = [p for group in optimizer.param_groups for p in group["params"]]

    def check_only():  # in the steady state: the parameters' norm bounds carried from the last step
        optimizer.gradients_are_finite()
        plan = DescentPlan()
        for index, group in enumerate(optimizer.param_groups):
            plan.add(group, [(j, group["lr"]) for j in range(len(group["params"]))],
                     [optimizer.grad_variant_of(index, j) for j in range(len(group["params"]))])
        plan.unsafe_names(bounds)
        bounds.seal(params)

    def forward_backward():
        for p in params:
            p.grad = None
        model(images).sum().backward()

    times = interleaved({"without": step(False), "with": step(True), "checks": check_only,
                         "forward_backward": forward_backward}, repeats)
    iteration = times["forward_backward"] + times["without"]
    return [name, optimizer_name, f"{1000 * times['without']:.1f}", f"{1000 * times['with']:.1f}",
            f"{times['with'] / times['without']:.3f}", f"{1000 * times['checks']:.2f}",
            f"{times['checks'] / times['without']:.3f}", f"{1000 * iteration:.0f}",
            f"{times['checks'] / iteration:.3f}"]


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
                                                         "with / without", "checks alone ms", "checks / step",
                                                         "iteration ms", "checks / iteration"], rows)


if __name__ == "__main__":
    main()
