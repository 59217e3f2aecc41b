"""Choose the MiniLM / BBC News recipe on a validation split, never on the test split.

Trains on the same stratified training subset as ``minilm_bbc.py`` and evaluates on ``--validation-size`` other
articles of the *training* split. Runs dense fine-tuning once (or loads it from ``--dense-cache``), then each named
GETA recipe, and prints validation accuracy, group sparsity, heads and FFN units kept of each, without building the
compressed model (the zeroed heads and units are counted in the group-sparse model).

    python benchmarks/accuracy/minilm_bbc_validation.py --recipes current quant-only prune-only distill
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Dict, List, Optional, Sequence

import torch

from accuracy_common import markdown_table
from minilm_bbc import (HEAD_DIM, Recipe, datasets, dense_finetune, evaluate, geta_finetune, pretrained_dir,
                        probe_initialised)

EARLY = (1 / 8, 5 / 12)  # pruning from 12.5% to 41.7% of the steps: more recovery at a higher learning rate
RECIPES: Dict[str, Recipe] = {
    "current": Recipe(),
    "quant-only": Recipe(sparsity=0.0),
    "prune-only": Recipe(quantize=False),
    "early": Recipe(pruning_window=EARLY),
    "lr-quant-1e-4": Recipe(lr_quant=1e-4),
    "lr-1e-4": Recipe(lr=1e-4),
    "distill": Recipe(distill=0.5),
    "distill-0.9": Recipe(distill=0.9),
    "distill-early": Recipe(distill=0.5, pruning_window=EARLY),
    "distill-4-epochs": Recipe(distill=0.5, epochs=4),
    "6-epochs": Recipe(epochs=6),
}


def kept_units(model) -> Dict[str, List[int]]:
    """Heads and FFN units per layer whose weights are not all zero (the ones ``construct_subnet`` keeps)."""
    heads, units = [], []
    for layer in model.encoder.encoder.layer:
        query = layer.attention.self.query.weight.detach()
        heads.append(int((query.reshape(-1, HEAD_DIM * query.shape[1]).abs().sum(1) > 0).sum()))
        units.append(int((layer.intermediate.dense.weight.detach().abs().sum(1) > 0).sum()))
    return {"heads": heads, "ffn_units": units}


def encoder_fraction_kept(kept: Dict[str, List[int]], hidden: int = 384, heads: int = 12, units: int = 1536) -> float:
    """Kept share of the encoder layers' weight matrices (attention: 4 x hidden x head width per head; FFN: 2 x
    hidden per unit), biases and norms left out (they are under 1% of the layers)."""
    per_head, per_unit = 4 * hidden * HEAD_DIM, 2 * hidden
    total = len(kept["heads"]) * (heads * per_head + units * per_unit)
    return sum(h * per_head + u * per_unit for h, u in zip(kept["heads"], kept["ffn_units"])) / total


def dense_model(args, model_dir, classes, train_set):
    """The dense fine-tuned classifier (from the cache when it holds one for these settings) and the initial
    state GETA starts from."""
    initial, initial_state = probe_initialised(model_dir, len(classes), train_set, args.seed)
    if args.dense_cache and os.path.exists(args.dense_cache):
        initial.load_state_dict(torch.load(args.dense_cache))
        return initial, initial_state
    dense = dense_finetune(initial, train_set, args.dense_epochs, args.lr, args.batch_size, args.seed, args.quiet)
    if args.dense_cache:
        torch.save(dense.state_dict(), args.dense_cache)
    return dense, initial_state


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["current"], choices=sorted(RECIPES))
    parser.add_argument("--train-size", type=int, default=500)
    parser.add_argument("--validation-size", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dense-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dense-cache", help="file of the dense fine-tuned weights: loaded if it exists, else written")
    parser.add_argument("--out", help="append each result as a JSON line to this file")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model_dir = pretrained_dir()
    classes, train_set, validation = datasets(model_dir, args.train_size, args.max_length, args.validation_size)
    dense, initial_state = dense_model(args, model_dir, classes, train_set)
    rows = [("dense fine-tuning", f"{evaluate(dense, validation):.2f}", "", "", "", "")]
    print(f"validation: {len(validation)} articles; {rows[0][0]} {rows[0][1]}%", flush=True)
    for name in args.recipes:
        recipe = RECIPES[name]
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        model, _, optimizer = geta_finetune(model_dir, len(classes), initial_state, train_set, recipe,
                                            args.batch_size, args.seed, args.quiet, teacher=dense)
        kept = kept_units(model)
        result = {"recipe": name, "seed": args.seed, "validation accuracy": evaluate(model, validation),
                  "group sparsity": optimizer.compute_metrics().group_sparsity,
                  "encoder weights kept": encoder_fraction_kept(kept), **kept,
                  "seconds": time.perf_counter() - start, "settings": dataclasses.asdict(recipe)}
        rows.append((name, f"{result['validation accuracy']:.2f}", f"{result['group sparsity']:.3f}",
                     f"{100 * (1 - result['encoder weights kept']):.1f}%", " ".join(map(str, kept["heads"])),
                     f"{result['seconds']:.0f}"))
        print(json.dumps(result), flush=True)
        if args.out:
            with open(args.out, "a") as handle:
                handle.write(json.dumps(result) + "\n")
    print(markdown_table(("recipe", "validation top-1 %", "group sparsity", "encoder weights removed",
                          "heads kept per layer", "seconds"), rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
