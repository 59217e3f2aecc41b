"""Language models at scale: graph build, construct_subnet and GETA's state against a forward, AdamW and the model.

Hugging Face Llama decoders (random init) at 512 width over 2-32 layers and at 7B width (hidden 4096,
intermediate 11008, 32 heads, vocab 32000) with one layer, float and weight+activation quantized. Every figure
is measured in a fresh child process so that its peak resident memory (``ru_maxrss``) is its own; memory is
reported above the process's size once the model is built.

    python benchmarks/llm_scale.py [--quick] [--shapes 512x2,7Bx1] [--optimizer-only | --subnet-only]
    python benchmarks/llm_scale.py --subnet-only --shapes 7Bx1 --baseline-library /path/to/older/checkout

``--baseline-library`` runs every construct_subnet child a second time with the library of another checkout (its
root folder), interleaved, so that before/after figures come from one run. Keep the 7B width at one layer on
shared machines (about 3 GB per child).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The checkout whose ``only_train_once`` a child imports (``--baseline-library`` sets it for the baseline runs).
LIBRARY_ROOT = os.environ.get("LLM_SCALE_LIBRARY", ROOT)
WIDTHS = {"512": dict(hidden_size=512, intermediate_size=1376, num_attention_heads=8, num_key_value_heads=8,
                      vocab_size=8000),
          "1k": dict(hidden_size=1024, intermediate_size=2752, num_attention_heads=16, num_key_value_heads=16,
                     vocab_size=32000),
          "7B": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                     vocab_size=32000)}
TOKENS = 32


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_mb() -> bool:
    """Restart the kernel's peak-RSS count (``VmHWM``) here, so a phase's peak is its own and not the model
    build's; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _phase_peak_mb() -> float:
    """Peak RSS since :func:`_reset_peak_mb` (``VmHWM``)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return _peak_mb()


def _model(width: str, layers: int, quantized: bool):
    sys.path.insert(0, ROOT)
    from tests.thirdparty import import_module

    sys.path.insert(0, LIBRARY_ROOT)

    transformers = import_module("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_hidden_layers=layers, max_position_embeddings=128, **WIDTHS[width])
    model = transformers.LlamaForCausalLM(config).eval()
    if quantized:
        from only_train_once.quantization.quant_model import model_to_quantize_model

        model_to_quantize_model(model, quant_mode="weight_and_activation")
    return model, {"input_ids": torch.randint(0, config.vocab_size, (1, TOKENS))}


def child(task: str, width: str, layers: int, quantized: bool) -> dict:
    """One measurement in this process: ``forward``, ``build``, ``subnet``, ``optimizer`` or ``steps``."""
    import torch

    model, inputs = _model(width, layers, quantized)
    model_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2 ** 20
    base = _rss_mb()
    result = {"model_mb": model_mb}
    start = time.perf_counter()
    if task == "forward":
        with torch.enable_grad():
            model(**inputs)
    elif task == "build":
        from only_train_once import OTO

        OTO(model, inputs)
    elif task in ("subnet", "subnet_full", "subnet_safetensors"):
        import tempfile

        import numpy as np

        from only_train_once import OTO

        oto = OTO(model, inputs)
        np.random.seed(0)
        oto.random_set_zero_groups(0.5)
        with tempfile.TemporaryDirectory(prefix="llm_scale_") as out_dir:
            base, reset = _rss_mb(), _reset_peak_mb()
            start = time.perf_counter()
            oto.construct_subnet(out_dir=out_dir, save_full_group_sparse_model=task == "subnet_full",
                                 ckpt_format="safetensors" if task == "subnet_safetensors" else "torch")
            result["seconds"] = time.perf_counter() - start
            if reset:
                result["phase_peak_above_model_mb"] = _phase_peak_mb() - base
            result["written_mb"] = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir)) / 2 ** 20
    elif task == "optimizer":
        result.update(_optimizer_state(model, inputs))
    elif task == "steps":
        result.update(_step_ratios(model, inputs))
    result.setdefault("seconds", time.perf_counter() - start)
    result["peak_above_model_mb"] = _peak_mb() - base
    return result


def _optimizer_state(model, inputs) -> dict:
    """Bytes of optimizer state after two steps, GETA against AdamW (fused where this torch has it)."""
    import torch
    from common import held_bytes

    from only_train_once import OTO

    oto = OTO(model, inputs)

    def state_mb(optimizer) -> float:
        model.train()
        for _ in range(2):
            optimizer.zero_grad()
            model(**inputs, labels=inputs["input_ids"]).loss.backward()
            optimizer.step()
        return held_bytes(optimizer, model) / 2 ** 20

    adamw = state_mb(torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True))
    geta = state_mb(oto.geta(variant="adam", lr=1e-5, start_pruning_step=100))
    return {"adamw_state_mb": adamw, "geta_state_mb": geta}


PHASE_STEPS = 6


def _step_ratios(model, inputs) -> dict:
    """Median per phase of GETA.step() / AdamW(fused=True).step(), interleaved step by step on twin models with
    the same gradients (reused for every step: GETA leaves its update direction in ``.grad``, which only changes
    values, not the work)."""
    import copy
    import statistics

    import torch

    from only_train_once import OTO

    oto = OTO(model, inputs)
    model.train()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    twin = copy.deepcopy(model)
    for source, target in zip(model.parameters(), twin.parameters()):
        target.grad = None if source.grad is None else source.grad.clone()
    geta = oto.geta(variant="adamw", lr=1e-5, target_group_sparsity=0.5, start_projection_step=PHASE_STEPS + 2,
                    projection_steps=PHASE_STEPS, projection_periods=1, start_pruning_step=2 * PHASE_STEPS + 2,
                    pruning_steps=PHASE_STEPS + 1, pruning_periods=1)
    adamw = torch.optim.AdamW([p for p in twin.parameters() if p.requires_grad], lr=1e-5, fused=True)
    ratios: dict = {}
    for step in range(1, 4 * PHASE_STEPS + 4):
        label = "period start" if geta._pruning_period_starts(step) else None
        start = time.perf_counter()
        geta.step()
        middle = time.perf_counter()
        adamw.step()
        end = time.perf_counter()
        label = label or ("joint (pruning)" if geta.active_redundant_group_idxes else geta.phase(step))
        if step > 2:  # the first steps create the moments
            ratios.setdefault(label, []).append((middle - start) / (end - middle))
    return {f"ratio {label}": statistics.median(values) for label, values in ratios.items()}




def run_child(task: str, width: str, layers: int, quantized: bool, library: str = ROOT) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", task, width, str(layers), str(int(quantized))]
    done = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT, "LLM_SCALE_LIBRARY": library}, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


SUBNET_TASKS = {"subnet": "without the full file", "subnet_full": "with the full group-sparse file",
                "subnet_safetensors": "ckpt_format='safetensors', without the full file"}


def _subnet_table(shapes, baseline: str = None) -> None:
    """construct_subnet (float, 50% random group sparsity): time against one forward (with gradients), peak RSS
    above the model during construct_subnet alone, against the model's size, and MB written; in the default
    format without and with the full group-sparse file, and in ``ckpt_format="safetensors"`` without it. With
    ``baseline`` (another checkout's root) each child runs on both libraries, interleaved."""
    libraries = [("this", ROOT)] + ([("baseline", baseline)] if baseline else [])
    print("\n| width | layers | model MB | forward s | library | construct_subnet | s (x fwd) | peak MB above model "
          "(x model) | MB written |")
    print("|---|---|---|---|---|---|---|---|---|")
    for width, layers in shapes:
        forward = run_child("forward", width, layers, False)
        for task, described in SUBNET_TASKS.items():
            for label, library in libraries:
                r = run_child(task, width, layers, False, library)
                peak = r.get("phase_peak_above_model_mb", r["peak_above_model_mb"])
                print(f"| {width} | {layers} | {r['model_mb']:.0f} | {forward['seconds']:.2f} | {label} | {described} "
                      f"| {r['seconds']:.1f} ({r['seconds'] / forward['seconds']:.1f}x) | {peak:.0f} "
                      f"({peak / r['model_mb']:.2f}x) | {r['written_mb']:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512 width at 2 and 8 layers only")
    parser.add_argument("--shapes", default=None, help="comma-separated WIDTHxLAYERS, e.g. 512x2,7Bx1")
    parser.add_argument("--optimizer-only", action="store_true", help="only GETA's step time and state")
    parser.add_argument("--subnet-only", action="store_true",
                        help="only construct_subnet, without and with the full group-sparse file (float)")
    parser.add_argument("--baseline-library", default=None,
                        help="root of another checkout: --subnet-only also runs its construct_subnet, interleaved")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, width, layers, quantized = args.child
        print(json.dumps(child(task, width, int(layers), bool(int(quantized)))))
        return
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs (machine shared)")
    shapes = [("512", 2), ("512", 8)] + ([] if args.quick else [("512", 32), ("7B", 1)])
    if args.optimizer_only:
        shapes = []
    if args.shapes:
        shapes = [(width, int(layers)) for width, layers in (item.split("x") for item in args.shapes.split(","))]
    if args.subnet_only:
        _subnet_table(shapes, args.baseline_library)
        return
    print("\n| width | layers | mode | model MB | forward s | build s (x fwd) | build peak MB above model "
          "(forward's) | construct_subnet s (x fwd) | its peak MB above model |")
    print("|---|---|---|---|---|---|---|---|---|")
    for width, layers in shapes:
        for quantized in (False, True):
            forward = run_child("forward", width, layers, quantized)
            build = run_child("build", width, layers, quantized)
            subnet = run_child("subnet", width, layers, quantized) if not quantized else None
            subnet_peak = subnet.get("phase_peak_above_model_mb", subnet["peak_above_model_mb"]) if subnet else 0
            subnet_cells = (f"{subnet['seconds']:.2f} ({subnet['seconds'] / forward['seconds']:.1f}x) | "
                            f"{subnet_peak:.0f}") if subnet else "- | -"
            print(f"| {width} | {layers} | {'W+A' if quantized else 'float'} | {build['model_mb']:.0f} | "
                  f"{forward['seconds']:.2f} | {build['seconds']:.2f} ({build['seconds'] / forward['seconds']:.1f}x)"
                  f" | {build['peak_above_model_mb']:.0f} ({forward['peak_above_model_mb']:.0f}) | {subnet_cells} |",
                  flush=True)
    for width in ("512", "1k"):
        steps = run_child("steps", width, 2, False)
        print(f"\nGETA.step() / AdamW(fused=True).step() at {width} width x 2 layers "
              f"(model {steps['model_mb']:.0f} MB), "
              "median per phase: " + ", ".join(f"{k[6:]} {v:.2f}x" for k, v in steps.items() if k.startswith("ratio")))
    state = run_child("optimizer", "512", 2, False)
    print(f"\nOptimizer state after two steps, 512 width x 2 layers (model {state['model_mb']:.0f} MB): "
          f"AdamW(fused) {state['adamw_state_mb']:.0f} MB, GETA {state['geta_state_mb']:.0f} MB "
          f"({state['geta_state_mb'] / state['adamw_state_mb']:.2f}x)")


if __name__ == "__main__":
    main()
