"""Quantization: learned-step fake quantizers, quantized layers and model conversion (SPEC sections 3 and 4)."""
from .calibration import calibrate_activations, uncalibrated_layers
from .fused import fused_kernels_enabled, set_fused_kernels
from .quant_layers import (
    LAYER_TO_QUANTLAYER,
    QUANT_PARAMETER_NAMES,
    QuantizationConfig,
    QuantizeConv1d,
    QuantizeConv2d,
    QuantizeConvTranspose2d,
    QuantizeEmbedding,
    QuantizeLinear,
    QuantizeMixin,
    initialize_quant_layer,
)
from .quant_model import (
    get_bitwidth_dict,
    get_quant_param_dict,
    model_to_quantize_model,
    quant_layer_class,
    reference_layer_filter,
)
from .quantizer import (
    MIN_MAGNITUDE,
    DGEQuantizer,
    NanInGradientError,
    QuantizationMode,
    QuantizationType,
    SymQuantizerLinear,
    SymQuantizerNonLinear,
    bit_width,
    fake_quantize,
    step_size_for_bits,
)
from .transposed_linear import QuantizeTransposedLinear, is_transposed_linear

__all__ = [
    "calibrate_activations",
    "uncalibrated_layers",
    "QuantizationType",
    "QuantizationMode",
    "NanInGradientError",
    "QuantizationConfig",
    "QUANT_PARAMETER_NAMES",
    "MIN_MAGNITUDE",
    "QuantizeMixin",
    "QuantizeLinear",
    "QuantizeConv1d",
    "QuantizeConv2d",
    "QuantizeConvTranspose2d",
    "QuantizeEmbedding",
    "QuantizeTransposedLinear",
    "is_transposed_linear",
    "initialize_quant_layer",
    "LAYER_TO_QUANTLAYER",
    "SymQuantizerLinear",
    "SymQuantizerNonLinear",
    "DGEQuantizer",
    "fake_quantize",
    "bit_width",
    "step_size_for_bits",
    "model_to_quantize_model",
    "reference_layer_filter",
    "quant_layer_class",
    "get_quant_param_dict",
    "get_bitwidth_dict",
    "set_fused_kernels",
    "fused_kernels_enabled",
]
