"""Small utilities every stage shares: walking input/output trees, calling a model, module modes."""

from .model_run import eval_mode, model_outputs, run_model
from .tree import flatten_tensors, is_key_value_cache

__all__ = ["eval_mode", "flatten_tensors", "is_key_value_cache", "model_outputs", "run_model"]
