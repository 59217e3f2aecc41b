"""Run one zoo entry through OTO -> random zero groups -> construct_subnet -> reload -> compare, never raising.

Shared by the zoo tests and ``benchmarks/thirdparty_coverage.py``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from tests.compression_check import CompressionResult, compress_and_compare
from tests.thirdparty_zoo.registry import ZooModel

MODES = ("float", "weight_and_activation")


@dataclass
class ZooResult:
    name: str
    family: str
    mode: str
    result: Optional[CompressionResult] = None
    error: str = ""
    warnings_at_build: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """A lossless and smaller model."""
        return self.result is not None and self.result.lossless and self.result.smaller

    @property
    def outcome(self) -> str:
        if self.error:
            return f"error: {self.error}"
        if not self.result.lossless:
            return f"differs: relative {max(self.result.relative_error, self.result.fresh_relative_error):.2g}"
        if not self.result.smaller:
            return "nothing pruned"
        return "lossless & smaller"


class _WarningCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_entry(entry: ZooModel, mode: str, seed: int = 0) -> ZooResult:
    """One entry in one mode (``"float"`` or ``"weight_and_activation"``), on one intra-op thread: these models
    are small, and on a shared 2-core machine two threads ran a forward 20x slower than one (0.69 s vs 0.034 s
    for mobilenetv2_050 at 64x64, load average 14)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_entry(entry, mode, seed)
    finally:
        torch.set_num_threads(threads)


def _run_entry(entry: ZooModel, mode: str, seed: int) -> ZooResult:
    outcome = ZooResult(entry.name, entry.family, mode)
    collector = _WarningCollector()
    library_logger = logging.getLogger("only_train_once")
    level = library_logger.level
    library_logger.setLevel(logging.WARNING)  # collected even when the application logs errors only
    library_logger.addHandler(collector)
    start = time.perf_counter()

    def remember_build_warnings(_oto) -> None:
        outcome.warnings_at_build = list(collector.messages)

    try:
        torch.manual_seed(seed)
        model = entry.build()
        with tempfile.TemporaryDirectory() as out_dir:
            outcome.result = compress_and_compare(model, entry.example_input(seed), out_dir,
                                                  entry.example_input(seed + 1), quantize=mode != "float",
                                                  seed=seed, before_zeroing=remember_build_warnings)
    except Exception as error:  # the zoo reports every failure instead of stopping at the first
        outcome.error = f"{type(error).__name__}: {str(error)[:300]}"
    finally:
        library_logger.removeHandler(collector)
        library_logger.setLevel(level)
    outcome.seconds = time.perf_counter() - start
    return outcome
