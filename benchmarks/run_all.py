"""Run every benchmark and write one report, ``benchmarks/RESULTS.md``, with the date and the machine.

    python benchmarks/run_all.py [--quick] [--numerics] [--out benchmarks/RESULTS.md]

Each benchmark is its own script (run it alone for more options); this one runs them one after another in
fresh processes and collects what they print. ``--numerics`` adds the (long) optimizer-numerics study.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BENCHMARKS = [
    ("Quantization overhead (training step vs float)", ["quant_overhead.py"]),
    ("Graph build (OTO(model, x) vs one forward)", ["graph_build.py"]),
    ("Subnet construction (time and peak memory)", ["subnet.py"]),
    ("Optimizer step (GETA phases vs AdamW)", ["optimizer_step.py"]),
    ("Low-bit export latency (onnxruntime)", ["lowbit_latency.py"]),
]
QUICK_ARGUMENTS = {"graph_build.py": ["--quick", "--repeats", "3"], "optimizer_step.py": ["--steps", "8"],
                   "quant_overhead.py": ["--quick", "--threads", "1", "--models", "vgg7_bn", "mlp", "deit_tiny"]}
NUMERICS = ("Optimizer numerics (digits accuracy per numerics fix)",
            ["optimizer_numerics.py", "--seeds", "0", "1", "2"])


def machine() -> str:
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python "
            f"{platform.python_version()}, torch {torch.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and models")
    parser.add_argument("--numerics", action="store_true", help="also run the optimizer numerics study")
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = parser.parse_args()
    runs = BENCHMARKS + ([NUMERICS] if args.numerics else [])
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sections = [f"# Benchmark results\n\n{datetime.date.today().isoformat()}, {machine()}.\n"
                f"Produced by `python benchmarks/run_all.py{' --quick' if args.quick else ''}`; every figure is a "
                "ratio or a median measured within one run.\n"]
    failures = 0
    for title, command in runs:
        script = os.path.join(HERE, command[0])
        if not os.path.exists(script):
            continue
        arguments = command[1:] + (QUICK_ARGUMENTS.get(command[0], []) if args.quick else [])
        print(f"running {command[0]} {' '.join(arguments)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, script, *arguments], cwd=HERE, env=environment, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - start
        failure = f"FAILED ({done.returncode}):\n\n```\n{done.stderr[-3000:]}\n```"
        body = done.stdout.strip() if done.returncode == 0 else failure
        failures += done.returncode != 0
        invocation = ' '.join([command[0]] + arguments)
        sections.append(f"## {title}\n\n`python benchmarks/{invocation}` ({seconds:.0f} s)\n\n{body}\n")
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write("\n".join(sections))
    print(f"written to {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
