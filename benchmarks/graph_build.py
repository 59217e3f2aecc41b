"""Graph build cost: ``OTO(model, x)`` time divided by one eager forward of the same model.

Float and weight+activation quantized ResNet-50 (224x224), VGG7-BN (32x32), ViT-Ti/16 (224x224) and a
12-layer Llama-style decoder; then how the build time grows with the number of decoder blocks (4 to 32).
Targets: <= 1.5x one forward on CNNs and ViTs, linear growth in depth.

    python benchmarks/graph_build.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import logging

import torch

from common import ResNet50, interleaved, machine, print_table

from only_train_once import OTO
from only_train_once.quantization.quant_model import model_to_quantize_model
from sanity_check.backends import LlamaConfig, LlamaForCausalLM, vgg7_bn, vit_tiny_patch16_224


def decoder(layers: int) -> torch.nn.Module:
    return LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688,
                                        num_hidden_layers=layers, num_attention_heads=8,
                                        max_position_embeddings=128))


def cases(quick: bool):
    tokens = torch.randint(0, 1000, (1, 64))
    yield "ResNet-50 224", ResNet50, torch.randn(1, 3, 224, 224)
    yield "VGG7-BN 32", vgg7_bn, torch.randn(1, 3, 32, 32)
    yield "ViT-Ti/16 224", vit_tiny_patch16_224, torch.randn(1, 3, 224, 224)
    if not quick:
        yield "Llama decoder x12", lambda: decoder(12), tokens


def measure(factory, dummy_input, quantized: bool, repeats: int) -> tuple:
    torch.manual_seed(0)
    model = factory().eval()
    if quantized:
        model = model_to_quantize_model(model, quant_mode="weight_and_activation")

    def forward():
        model(dummy_input)

    def build():
        OTO(model, dummy_input)

    times = interleaved({"forward": forward, "oto": build}, repeats)
    return times["forward"], times["oto"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="skip the decoder cases")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"machine: {machine()}\n")
    rows = []
    for name, factory, dummy_input in cases(args.quick):
        for quantized in (False, True):
            forward, build = measure(factory, dummy_input, quantized, args.repeats)
            rows.append([name, "W+A" if quantized else "float", f"{1000 * forward:.1f}", f"{1000 * build:.1f}",
                         f"{build / forward:.2f}x"])
    print_table("OTO(model, x) vs one forward", ["model", "weights", "forward ms", "OTO ms", "ratio"], rows)
    if args.quick:
        return
    depth_rows = []
    base = None
    tokens = torch.randint(0, 1000, (1, 64))
    for layers in (4, 8, 16, 32):
        forward, build = measure(lambda: decoder(layers), tokens, False, args.repeats)
        per_block = build / layers
        base = base or per_block
        depth_rows.append([layers, f"{1000 * build:.1f}", f"{1000 * per_block:.2f}", f"{per_block / base:.2f}",
                           f"{build / forward:.2f}x"])
    print_table("Build time vs decoder depth", ["blocks", "OTO ms", "ms per block", "per-block vs 4 blocks",
                                                "OTO / forward"], depth_rows)


if __name__ == "__main__":
    main()
