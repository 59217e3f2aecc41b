"""Quantized transposed linear layer: Hugging Face's ``transformers.pytorch_utils.Conv1D`` (GPT-2, GPT, ...).

``Conv1D(nf, nx)`` is a linear layer whose weight is stored ``(in_features, out_features)`` and applied as
``addmm(bias, x, weight)``. It is recognised by class (name and module), so the library does not import
transformers; :class:`QuantizeTransposedLinear` keeps its parameter names, layout and forward, so state dicts,
pruning axes and ``nf`` rewriting after pruning are the same as for the float layer.
"""

from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from .quant_layers import QuantizationMode, QuantizationType, QuantizeMixin, QuantMode, QuantType


def is_transposed_linear(module: nn.Module) -> bool:
    """Whether ``module`` is (a subclass of) ``transformers.pytorch_utils.Conv1D``."""
    return any(cls.__name__ == "Conv1D" and cls.__module__ == "transformers.pytorch_utils"
               for cls in type(module).__mro__)


class QuantizeTransposedLinear(QuantizeMixin):
    """``transformers.pytorch_utils.Conv1D`` with quantized weight (and input activation in weight+activation
    mode); weight ``(nx, nf)``, bias ``(nf,)`` not quantized."""

    _FLOAT_MODULE = nn.Module  # matched by is_transposed_linear (see _accepts_float_module), not by isinstance
    _FLOAT_MODULE_DESCRIPTION = "transformers.pytorch_utils.Conv1D"

    def __init__(
        self,
        nf: int,
        nx: int,
        d_quant_init: float = 1.0,
        t_quant_init: float = 1.0,
        q_m_init: float = 1.0,
        quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
        quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
        *,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.nf = nf
        self.nx = nx
        self.weight = nn.Parameter(torch.empty(nx, nf, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(nf, device=device, dtype=dtype))
        self.init_quantization(d_quant_init, t_quant_init, q_m_init, quant_type, quant_mode)

    def forward(self, x: Tensor) -> Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        rows = self.quantize_act(x.view(-1, x.size(-1)))  # quantizers feed the addmm directly (QADG folding)
        return torch.addmm(self.bias, rows, self.quantize_weight(self.weight)).view(size_out)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"

    @staticmethod
    def _float_module_kwargs(module: nn.Module) -> Dict[str, Any]:
        return dict(nf=module.nf, nx=module.nx)

    @classmethod
    def _accepts_float_module(cls, module: Optional[nn.Module]) -> bool:
        return module is not None and is_transposed_linear(module)
