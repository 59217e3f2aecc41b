"""Import timm and torchvision beside the CPU torch wheel, for tests and benchmarks only.

PyPI's torchvision is a CUDA build whose C++ extension does not load beside the CPU torch wheel; its Python
package then registers fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` and fails because the
operators were never defined. Defining the two schemas first lets the pure-Python parts (the model zoo) import.
The library itself never imports torchvision.
"""
from __future__ import annotations

import importlib
from types import ModuleType

import pytest
import torch

_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_defined_library: torch.library.Library | None = None


def _define_missing_torchvision_operators() -> None:
    global _defined_library
    if _defined_library is not None:
        return
    missing = [schema for schema in _TORCHVISION_SCHEMAS
               if not torch._C._dispatch_has_kernel(f"torchvision::{schema.split('(')[0]}")
               and not _operator_exists(schema.split("(")[0])]
    if missing:
        _defined_library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in missing:
            _defined_library.define(schema)


def _operator_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def import_or_skip(name: str) -> ModuleType:
    """``pytest.importorskip`` for timm / torchvision / transformers that first makes torchvision importable."""
    if name.split(".")[0] in ("timm", "torchvision", "transformers"):
        _define_missing_torchvision_operators()
    return pytest.importorskip(name)


def import_module(name: str) -> ModuleType:
    """The same for benchmarks: raises ImportError when the package is not installed."""
    if name.split(".")[0] in ("timm", "torchvision", "transformers"):
        _define_missing_torchvision_operators()
    return importlib.import_module(name)
