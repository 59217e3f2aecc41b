"""Model conversion: the one place where float layers are swapped for quantized layers; quantizer read-outs."""
import logging
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Tuple, Type, cast

from torch import nn
from torch.nn.utils import parametrize

from .quant_layers import (
    LAYER_TO_QUANTLAYER,
    QUANT_PARAMETER_NAMES,
    QuantizationConfig,
    QuantizationMode,
    QuantizationType,
    QuantizeMixin,
    QuantMode,
    QuantType,
)
from .quantizer import DEFAULT_CLIP_VAL, bit_width
from .transposed_linear import QuantizeTransposedLinear, is_transposed_linear

__all__ = [
    "model_to_quantize_model",
    "reference_layer_filter",
    "quant_layer_class",
    "get_quant_param_dict",
    "get_bitwidth_dict",
]

logger = logging.getLogger(__name__)

FilterFn = Callable[[nn.Module, str], bool]


def reference_layer_filter(module: nn.Module, name: str) -> bool:
    """The default ``filter_fn``: the layer kinds the reference converts, ``nn.Linear`` and ``nn.Conv2d``, and
    Hugging Face's transposed linear ``Conv1D`` (GPT-2's every layer)."""
    return isinstance(module, (nn.Linear, nn.Conv2d)) or is_transposed_linear(module)


def quant_layer_class(module: nn.Module) -> Optional[Type[QuantizeMixin]]:
    """Quantized class that can replace ``module`` (by ``isinstance``); ``None`` if none or already quantized."""
    if isinstance(module, QuantizeMixin):
        return None
    if is_transposed_linear(module):
        return QuantizeTransposedLinear
    for quant_cls in LAYER_TO_QUANTLAYER.values():
        if isinstance(module, quant_cls._FLOAT_MODULE):
            return quant_cls
    return None


def overrides_forward(module: nn.Module, float_class: Type[nn.Module]) -> bool:
    """Whether ``module``'s class computes something else than ``float_class.forward`` (timm's ``ScaledStdConv2d``
    standardises its weight, ``Conv2dSame`` pads at run time): a quantized ``float_class`` would drop it."""
    return type(module).forward is not float_class.forward


def has_reparametrized_weight(module: nn.Module) -> bool:
    """Whether ``module.weight`` is computed by a hook or a parametrization instead of being a Parameter."""
    return parametrize.is_parametrized(module) or not isinstance(module._parameters.get("weight"), nn.Parameter)


def model_to_quantize_model(
    model: nn.Module,
    d_quant_init: float = 1e-4,
    t_quant_init: float = 1.0,
    q_m_init: float = 1.0,
    quant_init_by_module: bool = True,
    num_bits: int = 16,
    quant_type: QuantType = QuantizationType.SYMMETRIC_NONLINEAR,
    quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
    *,
    filter_fn: Optional[FilterFn] = None,
    act_clip_val: Optional[Tuple[float, float]] = None,
) -> nn.Module:
    """Replace, in place, every supported layer of ``model`` chosen by ``filter_fn`` by its quantized layer.

    Supported layers are those of :data:`LAYER_TO_QUANTLAYER` and their subclasses; quantized layers are never
    converted again, nor the ``out_proj`` of an ``nn.MultiheadAttention`` (which applies its weight itself).
    ``filter_fn(module, qualified_name) -> bool`` defaults to :func:`reference_layer_filter`. Each new layer
    takes over the old layer's Parameter objects (tied weights stay tied) and is built by
    ``from_module(module, d_quant_init, t_quant_init, q_m_init, quant_type, quant_mode, quant_init_by_module,
    num_bits)``; with ``quant_init_by_module`` every quantizer starts at ``num_bits`` bits. ``quant_type`` and
    ``quant_mode`` are enums or their string values (``ValueError`` names the valid values, before any change).
    ``act_clip_val`` (default: the reference's ``(-2, 2)``) is every new layer's activation straight-through window
    ``(lo, hi)``: the input gradient is zero outside it. A calibrated activation range (``q_m_act = max|x|``) often
    exceeds 2 after BatchNorm + ReLU, and the reference's window then zeroes the gradient of every activation
    between 2 and ``q_m_act``, which the forward passes unclipped; ``(-math.inf, math.inf)`` passes them
    (benchmarks/RESULTS.md, issue 13). Returns ``model`` itself.
    """
    # __post_init__ parses the strings among quant_type and quant_mode
    config = QuantizationConfig(cast(QuantizationType, quant_type), cast(QuantizationMode, quant_mode),
                                act_clip_val=act_clip_val or DEFAULT_CLIP_VAL)
    filter_fn = reference_layer_filter if filter_fn is None else filter_fn
    model_class = quant_layer_class(model)
    if model_class is not None and filter_fn(model, ""):
        raise ValueError(
            f"The model itself is a {type(model).__name__}; use {model_class.__name__}.from_module."
        )
    replacements: Dict[int, Optional[nn.Module]] = {}  # one decision per module object, however often it appears
    # The replaced modules are kept alive until the end: a freed module's id can be reused by a new quantized
    # layer, which a shared parent visited again would then mistake for the freed one (CoaT's shared crpe).
    visited: List[nn.Module] = []
    own_forward: Dict[str, List[str]] = {}  # class (base class) -> layers left float because forward differs
    excluded: List[nn.Module] = []  # left float on purpose by filter_fn: not worth a warning

    def quantized_copy(module: nn.Module, name: str) -> Optional[nn.Module]:
        quant_cls = quant_layer_class(module)
        if quant_cls is None:
            return None
        if not filter_fn(module, name):
            excluded.append(module)
            return None
        if has_reparametrized_weight(module):
            logger.warning("%s (%s) computes its weight from other parameters (spectral_norm, weight_norm or a "
                           "parametrization); it stays a float layer. Remove the re-parametrization to quantize it.",
                           name, type(module).__name__)
            return None
        if quant_cls is not QuantizeTransposedLinear and overrides_forward(module, quant_cls._FLOAT_MODULE):
            own_forward.setdefault(f"{type(module).__name__} ({quant_cls._FLOAT_MODULE.__name__})", []).append(name)
            return None
        layer = quant_cls.from_module(
            module, d_quant_init, t_quant_init, q_m_init, config.quant_type, config.quant_mode,
            quant_init_by_module, num_bits, share_parameters=True,
        )
        if act_clip_val is not None and layer.quantizes_activation:
            # Set after the initialisation, whose data-free activation range is the window's (finite) bound.
            layer.quant_config = replace(layer.quant_config, act_clip_val=config.act_clip_val)
        return layer

    def convert_children(parent: nn.Module, prefix: str) -> None:
        if isinstance(parent, nn.MultiheadAttention):
            return  # it applies its out_proj weight itself: a swapped layer would never quantize
        for child_name, child in list(parent._modules.items()):  # named_children() hides repeated modules
            if child is None:
                continue
            name = prefix + child_name
            if id(child) not in replacements:
                visited.append(child)
                replacements[id(child)] = quantized_copy(child, name)
            if replacements[id(child)] is None:
                convert_children(child, name + ".")
            else:
                setattr(parent, child_name, replacements[id(child)])

    convert_children(model, "")
    _warn_own_forward(own_forward)
    _warn_float_layers(model, excluded)
    _warn_float_experts(model)
    converted = sum(layer is not None for layer in replacements.values())
    logger.info(
        "Converted %d layers to quantized layers (%s, %s, %s).", converted, config.quant_type.value,
        config.quant_mode.value, f"{num_bits} bits" if quant_init_by_module else "given initial values",
    )
    return model


def _is_linear_like(module: nn.Module) -> bool:
    """A layer multiplying its input by a weight matrix (linear, convolution, transposed linear): one whose own
    ``weight`` Parameter has two or more dimensions. Embeddings (lookups) are not."""
    weight = module._parameters.get("weight")
    return weight is not None and weight.dim() >= 2 and not isinstance(module, nn.Embedding)


def _warn_own_forward(own_forward: Dict[str, List[str]]) -> None:
    """One warning naming the layer classes left float because their forward is not their base class's."""
    if own_forward:
        described = "; ".join(f"{cls}: {len(names)} (e.g. {names[0]})" for cls, names in own_forward.items())
        logger.warning("layers whose class overrides its base class's forward (weight standardisation, 'same' "
                       "padding...) stay float, since a quantized base layer would drop what they compute: %s. "
                       "Quantize them with a layer of your own, or exclude them with filter_fn.", described)


def _warn_float_layers(model: nn.Module, excluded: List[nn.Module]) -> None:
    """Warn once, naming them, about the linear-like layers a conversion could not quantize. Those ``filter_fn``
    excluded are only logged at INFO: a first pass over the embeddings alone excludes every other layer on purpose,
    and a warning would wrongly say they will never be quantized."""
    floating = [(name or "<model>", module) for name, module in model.named_modules()
                if _is_linear_like(module) and not isinstance(module, QuantizeMixin)]
    excluded_ids = {id(module) for module in excluded}
    unsupported = [name for name, module in floating if id(module) not in excluded_ids]
    filtered = [name for name, module in floating if id(module) in excluded_ids]
    if unsupported:
        logger.warning("%d linear-like layers stay float (not supported or re-parametrized): %s", len(unsupported),
                       _shorten(unsupported))
    if filtered:
        logger.info("%d linear-like layers stay float, excluded by filter_fn: %s", len(filtered), _shorten(filtered))


def _shorten(names: List[str], shown: int = 20) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _warn_float_experts(model: nn.Module) -> None:
    """Warn once about mixture-of-experts modules (Hugging Face keeps every expert's matrices in one 3-D
    ``down_proj``/``gate_up_proj``): no quantized layer holds a batch of matrices, so their weights and inputs stay
    float; their hidden units are still pruned (:mod:`only_train_once.operation.experts`)."""
    experts = [name for name, module in model.named_modules()
               if getattr(module._parameters.get("down_proj"), "ndim", 0) == 3]
    if experts:
        logger.warning("%d mixture-of-experts modules keep their expert weights and inputs in float (3-D expert "
                       "weights have no quantized layer): %s", len(experts),
                       ", ".join(experts[:5]) + (" ..." if len(experts) > 5 else ""))


def get_quant_param_dict(model: nn.Module) -> Dict[str, Dict[str, float]]:
    """``{layer name: {quantizer parameter name: value}}`` for every quantizer parameter of ``model``.

    A quantizer parameter is one whose own name (last dotted component) is in :data:`QUANT_PARAMETER_NAMES`.
    """
    params: Dict[str, Dict[str, float]] = {}
    for full_name, param in model.named_parameters():
        layer, _, name = full_name.rpartition(".")
        if name in QUANT_PARAMETER_NAMES:
            params.setdefault(layer, {})[name] = param.item()
    return params


def get_bitwidth_dict(param_dict: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """Unrounded bit widths ``{layer: {"weight": b, ["activation": b]}}`` from :func:`get_quant_param_dict` output.

    ``b = log2(|q_m|^t / |d| + 1) + 1`` with ``t = 1`` where the layer has no exponent; ``"activation"`` only for
    layers with an activation quantizer.
    """
    bits: Dict[str, Dict[str, float]] = {}
    for layer, params in param_dict.items():
        # Python numbers in, a float out
        bits[layer] = {
            "weight": cast(float, bit_width(params["d_quant_wt"], params["q_m_wt"], params.get("t_quant_wt")))}
        if "d_quant_act" in params:
            bits[layer]["activation"] = cast(
                float, bit_width(params["d_quant_act"], params["q_m_act"], params.get("t_quant_act")))
    return bits
