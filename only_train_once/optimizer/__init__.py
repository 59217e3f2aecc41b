"""Optimizers that prune (HESSO, HESSOCRIC) or prune and learn bit widths (GETA) while training (SPEC 5)."""

from .base_hybrid_sparse_optimizer import BaseHybridSparseOptimizer
from .base_optimizer import BaseOptimizer
from .config import BitRange, GetaConfig, HessoConfig, Schedule
from .finite import NonFiniteError
from .fused_kernels import fused_optimizer_kernels_enabled, set_fused_optimizer_kernels
from .geta import GETA
from .hesso import HESSO
from .hessocric import HESSOCRIC
from .hyperparameter import DEFAULT_OPT_PARAMS, SUPPORT_GRADIENT_ESTIMATES
from .metrics import SparseOptimizerMetrics

__all__ = [
    "BaseOptimizer",
    "BaseHybridSparseOptimizer",
    "BitRange",
    "GetaConfig",
    "HessoConfig",
    "Schedule",
    "GETA",
    "HESSO",
    "HESSOCRIC",
    "NonFiniteError",
    "fused_optimizer_kernels_enabled",
    "set_fused_optimizer_kernels",
    "DEFAULT_OPT_PARAMS",
    "SUPPORT_GRADIENT_ESTIMATES",
    "SparseOptimizerMetrics",
]
