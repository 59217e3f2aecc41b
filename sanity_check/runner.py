"""The sanity runner: every registered backbone in every mode, a progress bar, a table (also as markdown).

"max diff" compares the full group-sparse and the compressed model with activation rounding bypassed (exact
equivalence); "with rounding" keeps the fake quantizers on (a few activation quantization steps at most).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import List, Optional, Sequence

from tqdm import tqdm

from .harness import MODES, CaseResult, run_case
from .registry import get_backbone, list_backbones

COLUMNS = ("model", "mode", "nodes", "groups", "prunable", "params -%", "MACs -%", "BOPs -%", "max diff",
           "with rounding", "onnx diff", "time s", "result")


def _row(result: CaseResult) -> List[str]:
    onnx = "" if result.onnx_max_diff is None else f"{result.onnx_max_diff:.1e}"
    return [result.backbone, result.mode, str(result.nodes), str(result.groups), str(result.prunable),
            f"{100 * result.param_reduction:.1f}", f"{100 * result.mac_reduction:.1f}",
            f"{100 * result.bop_reduction:.1f}", f"{result.max_diff:.1e}", f"{result.rounded_max_diff:.1e}", onnx,
            f"{result.seconds:.1f}",
            "pass" if result.passed else f"FAIL {result.error}"[:80]]


def format_table(results: Sequence[CaseResult]) -> str:
    """A markdown table of the results."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    passed = sum(r.passed for r in results)
    lines.append("")
    lines.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(lines)


def run(names: Sequence[str], modes: Sequence[str], seed: int = 0, sparsity: Optional[float] = None,
        onnx: bool = False, out_dir: Optional[str] = None, quiet: bool = False) -> List[CaseResult]:
    cases = [(get_backbone(n), m) for n in names for m in modes]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for backbone, mode in tqdm(cases, desc="sanity", disable=quiet):
            results.append(run_case(backbone, mode, out_dir or scratch, seed=seed, sparsity=sparsity,
                                    visualize=out_dir is not None, onnx=onnx))
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sanity_check", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"backbones to run (default: the {len(list_backbones())} not "
                                                 "marked heavy; heavy ones run when named)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sparsity", type=float, default=None, help="group sparsity (default: random per group)")
    parser.add_argument("--onnx", action="store_true", help="save ONNX and compare in onnxruntime")
    parser.add_argument("--out-dir", default=None, help="keep models and graphs here (default: a temp dir)")
    parser.add_argument("--markdown", default="sanity_results.md", help="where to write the table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    results = run(args.names or list_backbones(), args.modes, args.seed, args.sparsity, args.onnx, args.out_dir,
                  args.quiet)
    table = format_table(results)
    print(table)
    with open(args.markdown, "w", encoding="utf-8") as handle:
        handle.write("# Sanity check results\n\n" + table + "\n")
    print(f"\nwritten to {os.path.abspath(args.markdown)}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
