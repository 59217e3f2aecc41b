"""Cost of the unit map (``graph/unit_map.py``): computing it, against one whole graph build, and its memory.

The map is computed once per build, by the ``build_groups`` pass, before the groups. Here it is computed again
on a fresh analysis (so that no owner is cached yet: an upper bound of what it adds to a build), alternating
with whole builds, ``OTO(model, x, verify_groups=False)``. Bytes: the map's distinct arrays (entries of the
same space share them).

    python benchmarks/unit_map.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics

import torch

from common import ResNet50, elapsed, machine, print_table

from only_train_once import OTO
from only_train_once.dependency_graph.pruning_dependency import analyze_spaces
from only_train_once.graph.unit_map import UnitMap
from sanity_check.backends import LlamaConfig, LlamaForCausalLM, vgg7_bn


def cases():
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688,
                                         num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=128))
    return [("ResNet-50", ResNet50(), torch.randn(1, 3, 224, 224)),
            ("VGG7-BN", vgg7_bn(), torch.randn(1, 3, 32, 32)),
            ("Llama 12 layers", llama, torch.randint(0, 1000, (1, 32)))]


def map_bytes(unit_map: UnitMap) -> int:
    arrays = {id(a): a for _, _, owners in unit_map for a in owners}
    return sum(a.nbytes for a in arrays.values())


def measure(model: torch.nn.Module, dummy_input, repeats: int) -> tuple:
    model.eval()
    graph = OTO(model, dummy_input, verify_groups=False).graph
    builds, maps = [], []
    for _ in range(repeats):
        gc.collect()
        builds.append(elapsed(lambda: OTO(model, dummy_input, verify_groups=False)))
        fresh = analyze_spaces(graph)
        gc.collect()
        maps.append(elapsed(lambda: UnitMap.of_graph(graph, fresh)))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return statistics.median(builds), statistics.median(maps), map_bytes(graph.unit_map), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    rows = []
    for name, model, dummy_input in cases():
        build, unit_map, size, params = measure(model, dummy_input, args.repeats)
        rows.append((name, f"{build * 1e3:.0f}", f"{unit_map * 1e3:.1f}", f"{unit_map / build:.3f}",
                     f"{size / 2**20:.2f}", f"{size / params:.4f}"))
    print_table(f"Unit map: time and bytes ({machine()}, median of {args.repeats})",
                ["model", "build ms", "map ms (cold)", "map / build", "map MiB", "map / parameter bytes"], rows)


if __name__ == "__main__":
    main()
