"""Per-node operator descriptions: the module behind a node, its bit widths and its size.

The reference exposes one ``Operator`` object per node (``node.op``), with the module class name in
``op._type`` (used by ``skip_operators``), the module path in ``op.id``, and sizes and bit widths for the
metrics. Structural behaviour (how spaces flow, how costs are counted) lives in
:mod:`only_train_once.operation.catalogue`; this class only describes.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

# Module classes the analyzer handles natively (informational: the analysis works on traced calls, so
# subclasses and renamed classes behave like their base class). Keyed by class name as in the reference.
BASIC_MODULES: Dict[str, str] = {
    "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv", "ConvTranspose1d": "convtranspose",
    "ConvTranspose2d": "convtranspose", "Linear": "linear", "BatchNorm1d": "batchnorm", "BatchNorm2d": "batchnorm",
    "BatchNorm3d": "batchnorm", "InstanceNorm1d": "instancenorm", "InstanceNorm2d": "instancenorm",
    "GroupNorm": "groupnorm", "LayerNorm": "layernorm", "RMSNorm": "rmsnorm", "Embedding": "embedding",
    "PReLU": "prelu", "QuantizeConv2d": "conv", "QuantizeLinear": "linear", "QuantizeConv1d": "conv",
    "QuantizeConvTranspose2d": "convtranspose", "QuantizeEmbedding": "embedding",
}
# Modules whose forward is one traced call pruned by whole heads.
COMPOSED_MODULES: Dict[str, str] = {"MultiheadAttention": "multiheadattention"}
UNPRUNABLE_BASIC_OPERATORS: List[str] = ["depthtospace"]
UNPRUNABLE_COMPOSED_OPERATORS: List[str] = []


class Operator:
    """What a node computes with which module.

    Attributes:
        id: module path (``features.0``), or the op name for calls outside any parameterised module.
        _type: module class name (``Conv2d``, ``QuantizeLinear``) or the op name.
        module: the module owning the node's parameters, if any.
        param_names: names of the parameters the node reads (quantizer scalars included).
        is_stem: the node creates new channels (conv, linear, attention projections).
    """

    def __init__(self, node, module: Optional[nn.Module], module_name: Optional[str],
                 named_params: Dict[str, torch.Tensor]):
        self.module = module
        self.id = module_name if module_name is not None else node.op_name
        self._type = type(module).__name__ if module is not None else node.op_name
        self.param_names = list(node.all_param_names)
        self.name_to_param = {n: named_params[n] for n in self.param_names if n in named_params}
        self.is_stem = bool(node.op_kind is not None and node.op_kind.is_stem)
        self.is_basic = self._type in BASIC_MODULES
        self.cfg_params = node.cfg_params

    @property
    def name(self) -> str:
        return self._type

    @property
    def leaf_modules(self) -> List[nn.Module]:
        return [self.module] if self.module is not None else []

    @property
    def num_params(self) -> int:
        """Parameters of the owning module (counted once per module by the metrics)."""
        if self.module is None:
            return sum(int(p.numel()) for p in self.name_to_param.values() if isinstance(p, nn.Parameter))
        return sum(int(p.numel()) for p in self.module.parameters(recurse=False))

    @property
    def weight_bit(self) -> int:
        return int(getattr(self.module, "weight_bit", 32)) if self.module is not None else 32

    @property
    def activation_bit(self) -> int:
        return int(getattr(self.module, "activation_bit", 32)) if self.module is not None else 32

    @property
    def weight_size(self) -> float:
        """Bits needed to store the module's parameters at its weight bit width."""
        return float(self.num_params * self.weight_bit)

    def __repr__(self) -> str:
        return f"Operator({self.id}, {self._type})"
