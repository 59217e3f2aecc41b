"""Inference layers whose weight already holds its quantized values: quantized layers as loaded from a packed file.

A packed file stores each weight as integers ``k`` and a step ``d``; the loader dequantizes them once into the
weight ``d * k``. Running the weight quantizer on that again would be wrong for the nonlinear quantizer
(``t != 1``): ``sign(w) * d * round(|w|^t / d)`` moves the levels ``d * k``. So these layers are the quantized
layers with the weight quantizer replaced by :func:`grid_weight`, an identity; the activation quantizers, the
quantizer parameters (hence ``weight_bit``/``activation_bit``) and the state-dict keys stay as they are. The
weight is frozen (``requires_grad=False``): training it would leave the grid. For training, use the quantized
layers themselves.
"""

from __future__ import annotations

from typing import Any, Dict

from torch import Tensor, nn
from torch.overrides import handle_torch_function, has_torch_function

from ..quantization.quant_layers import (
    QuantizeConv1d,
    QuantizeConv2d,
    QuantizeConvTranspose2d,
    QuantizeEmbedding,
    QuantizeLinear,
    QuantizeMixin,
)

__all__ = ["grid_weight", "GridConv1d", "GridConv2d", "GridConvTranspose2d", "GridEmbedding", "GridLinear",
           "GRID_LAYERS", "to_grid_layer"]


def grid_weight(weight: Tensor, step: Tensor) -> Tensor:
    """``weight`` itself: it already holds the quantized values ``step * k``.

    Overridable through ``__torch_function__`` like :func:`~only_train_once.quantization.quantizer.fake_quantize`
    (``step`` is the layer's ``d_quant_wt``), so that export passes see where a grid layer uses its weight.
    """
    if has_torch_function((weight, step)):
        return handle_torch_function(grid_weight, (weight, step), weight, step)
    return weight


class _GridWeight:
    """Mixin placed before a quantized layer class: its weight skips the weight quantizer."""

    d_quant_wt: Tensor  # the weight step, a parameter of the quantized layer this is mixed into

    def quantize_weight(self, weight: Tensor) -> Tensor:
        return grid_weight(weight, self.d_quant_wt)


class GridLinear(_GridWeight, QuantizeLinear):
    """:class:`QuantizeLinear` whose weight holds its quantized values (module docstring)."""


class GridConv1d(_GridWeight, QuantizeConv1d):
    """:class:`QuantizeConv1d` whose weight holds its quantized values (module docstring)."""


class GridConv2d(_GridWeight, QuantizeConv2d):
    """:class:`QuantizeConv2d` whose weight holds its quantized values (module docstring)."""


class GridConvTranspose2d(_GridWeight, QuantizeConvTranspose2d):
    """:class:`QuantizeConvTranspose2d` whose weight holds its quantized values (module docstring)."""


class GridEmbedding(_GridWeight, QuantizeEmbedding):
    """:class:`QuantizeEmbedding` whose table holds its quantized values (module docstring); no ``max_norm``
    (renormalising the table in place would take it off the grid)."""


#: Grid layer class for each quantized layer class, keyed by the quantized class name.
GRID_LAYERS: Dict[str, type] = {
    QuantizeLinear.__name__: GridLinear,
    QuantizeConv1d.__name__: GridConv1d,
    QuantizeConv2d.__name__: GridConv2d,
    QuantizeConvTranspose2d.__name__: GridConvTranspose2d,
    QuantizeEmbedding.__name__: GridEmbedding,
}


def to_grid_layer(module: nn.Module, layer_class: str, quant_type: str, quant_mode: str) -> QuantizeMixin:
    """A grid layer shaped like ``module`` (a float or quantized layer), sharing its weight and bias Parameters.

    ``layer_class`` names the quantized class (``"QuantizeConv2d"``); ``quant_type``/``quant_mode`` are the
    quantized layer's. The quantizer parameters are created with placeholder values: load them afterwards.
    Raises ``ValueError`` for an unknown ``layer_class`` and for an embedding with ``max_norm``.
    """
    # Any: ``from_module`` is attached by QuantizeMixin.__init_subclass__, out of mypy's sight
    grid_class: Any = GRID_LAYERS.get(layer_class)
    if grid_class is None:
        raise ValueError(f"no grid layer for {layer_class!r}; known quantized layers: {sorted(GRID_LAYERS)}")
    if getattr(module, "max_norm", None) is not None:
        raise ValueError("an embedding with max_norm renormalises its table in place, off the quantization grid; "
                         "set max_norm=None on the model before saving and loading it packed")
    return grid_class.from_module(module, quant_type=quant_type, quant_mode=quant_mode, quant_init_by_module=False,
                                  share_parameters=True)
