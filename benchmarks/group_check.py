"""Cost of the build-time group check: ``OTO(model, x, verify_groups=True)`` vs ``verify_groups=False``.

Sanity-zoo models (float and weight+activation), interleaved repetitions; the extra cost is reported in units of
one graph build (the target for checking by default: about one more build).

    python benchmarks/group_check.py [--repeats 5] [--models resnet50_cifar10,vgg7_bn,...]
"""

from __future__ import annotations

import argparse
import logging

import torch

from common import interleaved, machine, print_table

from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from sanity_check.registry import BACKBONES

DEFAULT_MODELS = "resnet50_cifar10,vgg7_bn,densenet121,simple_vit,bert,llama,swin_mini,convnext_mini"


def measure(name: str, quantized: bool, repeats: int) -> list:
    backbone = BACKBONES[name]
    model = backbone.build().eval()
    if quantized:
        model = model_to_quantize_model(model, quant_mode="weight_and_activation")
    dummy_input = backbone.example_input(0)

    def forward():
        with torch.no_grad():
            model(*dummy_input) if isinstance(dummy_input, tuple) else model(dummy_input)

    def build(check: bool):
        return lambda: OTO(model, dummy_input, verify_groups=check)

    times = interleaved({"forward": forward, "plain": build(False), "checked": build(True)}, repeats)
    failed = sum(not g.is_prunable and any("build-time" in r for r in g.unprunable_reasons)
                 for g in OTO(model, dummy_input, verify_groups=True).groups)
    extra = times["checked"] - times["plain"]
    return [name, "W+A" if quantized else "float", f"{1000 * times['forward']:.0f}", f"{1000 * times['plain']:.0f}",
            f"{1000 * times['checked']:.0f}", f"{extra / times['plain']:.2f}", f"{extra / times['forward']:.2f}",
            failed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--float-only", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"machine: {machine()}\n")
    rows = []
    for name in args.models.split(","):
        for quantized in (False,) if args.float_only else (False, True):
            rows.append(measure(name, quantized, args.repeats))
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    print_table("Build-time group check", ["model", "weights", "forward ms", "OTO ms", "OTO + check ms",
                                           "extra / build", "extra / forward", "groups failed"], rows)


if __name__ == "__main__":
    main()
