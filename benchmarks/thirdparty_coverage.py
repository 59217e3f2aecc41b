"""Third-party coverage: which timm / Hugging Face architectures compress losslessly, and how much is prunable.

For every entry of ``tests/thirdparty_zoo/registry.py``, float and weight+activation: ``OTO(model, x)`` ->
``random_set_zero_groups(0.5)`` -> ``construct_subnet`` -> reload both files -> outputs compared relative to their
own scale (1e-4), on the dummy input and on a fresh one. Prints one row per model (outcome per mode, the fraction of
trainable parameters in prunable groups, whether OTO warned at build time) and the totals.

    python benchmarks/thirdparty_coverage.py                  # the whole zoo (about 30 min on 2 cores)
    python benchmarks/thirdparty_coverage.py --default        # the default-suite handful
    python benchmarks/thirdparty_coverage.py resnet18 bert    # chosen entries
    python benchmarks/thirdparty_coverage.py --family moe     # one family (mixtures of experts)
    python benchmarks/thirdparty_coverage.py --json out.json  # also write the rows
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from common import machine, print_table

from tests.thirdparty_zoo.registry import BY_NAME, ZOO
from tests.thirdparty_zoo.runner import MODES, run_entry


def _row(entry, results) -> list:
    fraction = next((f"{r.result.prunable_param_fraction:.0%}" for r in results if r.result is not None), "-")
    outcomes = [r.outcome for r in results]
    warned = any(r.warnings_at_build for r in results if not r.passed)
    return [entry.name, entry.library, entry.family, *outcomes, fraction, "yes" if warned else "",
            f"{sum(r.seconds for r in results):.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="zoo entries to run (default: all)")
    parser.add_argument("--default", action="store_true", help="only the entries of the default test suite")
    parser.add_argument("--family", help="only the entries of this family (e.g. moe)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--json", help="write every result to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        sys.exit(f"unknown zoo entries {unknown}; known: {sorted(BY_NAME)}")
    entries = [BY_NAME[n] for n in args.names] if args.names else [e for e in ZOO if e.default or not args.default]
    entries = [e for e in entries if args.family is None or e.family == args.family]
    if not entries:
        sys.exit(f"no zoo entry of family {args.family!r}; known: {sorted({e.family for e in ZOO})}")
    rows, records, passed = [], [], {mode: 0 for mode in args.modes}
    for entry in entries:
        results = [run_entry(entry, mode) for mode in args.modes]
        for result in results:
            passed[result.mode] += result.passed
            records.append({**asdict(result), "outcome": result.outcome, "passed": result.passed})
        rows.append(_row(entry, results))
        print(" | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
    columns = ["model", "library", "family", *args.modes, "prunable params", "warned at OTO", "s"]
    print_table(f"Third-party coverage ({machine()})", columns, rows)
    for mode in args.modes:
        print(f"{mode}: {passed[mode]}/{len(entries)} lossless and smaller ({passed[mode] / len(entries):.1%})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main()
