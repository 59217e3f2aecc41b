"""construct_subnet cost: time and peak memory versus model size.

Each case runs in its own process; a sampling thread reads the resident set size every millisecond while
construct_subnet runs. Reported per case: model size, construct_subnet time and its ratio to one forward,
and the peak memory above the pre-call resident size, as a multiple of the model's parameter bytes.

    python benchmarks/subnet.py
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time

from common import machine, print_table

CASES = ("ResNet-50 224", "transformer x24")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler(threading.Thread):
    """Highest resident set size seen while running."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = resident_bytes()
        self._done = threading.Event()

    def run(self):
        while not self._done.wait(0.001):
            self.peak = max(self.peak, resident_bytes())

    def stop(self) -> int:
        self._done.set()
        self.join()
        return max(self.peak, resident_bytes())


def run_case(name: str) -> dict:
    import numpy as np
    import torch

    from common import ResNet50
    from only_train_once import OTO
    from sanity_check.backends import LlamaConfig, LlamaForCausalLM

    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    if name == "ResNet-50 224":
        model, dummy_input = ResNet50().eval(), torch.randn(1, 3, 224, 224)
    else:
        config = LlamaConfig(vocab_size=1000, hidden_size=512, intermediate_size=1376, num_hidden_layers=24,
                             num_attention_heads=8, max_position_embeddings=128)
        model, dummy_input = LlamaForCausalLM(config).eval(), torch.randint(0, 1000, (1, 64))
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    start = time.perf_counter()
    with torch.no_grad():
        model(dummy_input)
    forward = time.perf_counter() - start
    oto = OTO(model, dummy_input)
    np.random.seed(0)
    oto.random_set_zero_groups(0.5)
    before = resident_bytes()
    sampler = PeakSampler()
    with tempfile.TemporaryDirectory() as out_dir:
        sampler.start()
        start = time.perf_counter()
        oto.construct_subnet(out_dir=out_dir)
        seconds = time.perf_counter() - start
        peak = sampler.stop()
    return {"params_m": model_bytes / 4e6, "model_mb": model_bytes / 2 ** 20, "seconds": seconds,
            "forward": forward, "extra_peak_mb": max(0, peak - before) / 2 ** 20}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        print(json.dumps(run_case(sys.argv[2])))
        return
    print(f"machine: {machine()}\n")
    rows = []
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append([name, f"{result['params_m']:.1f}", f"{result['model_mb']:.0f}", f"{result['seconds']:.2f}",
                     f"{result['seconds'] / result['forward']:.1f}x", f"{result['extra_peak_mb']:.0f}",
                     f"{result['extra_peak_mb'] / result['model_mb']:.2f}x"])
    print_table("construct_subnet (50% random group sparsity, torch format, verification on)",
                ["model", "params M", "model MB", "seconds", "vs forward", "extra peak MB", "extra peak / model"],
                rows)


if __name__ == "__main__":
    main()
