"""Small utilities every stage shares: walking input/output trees, calling a model, module modes, warnings about
arguments kept only for compatibility."""

from .ignored import IgnoredArgumentWarning, warn_ignored
from .model_run import eval_mode, model_outputs, run_model
from .tree import flatten_tensors, is_key_value_cache

__all__ = ["IgnoredArgumentWarning", "eval_mode", "flatten_tensors", "is_key_value_cache", "model_outputs",
           "run_model", "warn_ignored"]
