"""Subnet construction: physically remove zeroed groups, verify, save, load."""

from .apply import SubnetSpec, apply_plan, restore_subnet
from .integrity import CorruptFileError
from .io import load_compressed_weights, load_model
from .onnx_integrity import verify_onnx_file
from .plan import PruningPlan, build_plan
from .pruning_compression import automated_erasing_compression, automated_pruning_compression, verify_subnet
from .verification import SubnetConstructionError, SubnetVerifier

__all__ = ["automated_pruning_compression", "automated_erasing_compression", "SubnetConstructionError",
           "SubnetVerifier", "verify_subnet", "build_plan", "PruningPlan", "apply_plan", "restore_subnet",
           "SubnetSpec", "load_model", "load_compressed_weights", "CorruptFileError",
           "verify_onnx_file"]
