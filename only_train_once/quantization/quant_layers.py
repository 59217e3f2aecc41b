"""Quantized layers: float layers whose weight (and optionally input activation) pass through learned quantizers.

Every layer here is its float counterpart plus :class:`QuantizeMixin`, which owns the quantizer parameters
(``d_quant_wt``, ``q_m_wt``, ``[t_quant_wt]``, ``[d_quant_act, q_m_act, [t_quant_act]]``, registered in that order
after the layer's own ``weight`` and ``bias``) and applies them through :func:`fake_quantize`, one call per
quantizer (the tracing contract documented there).

Activation ranges (fixes SPEC 12.5 Q2): :func:`initialize_quant_layer` sets the weight quantizer from weight
statistics and gives the activation quantizer a data-free default range (the largest magnitude of
``act_clip_val``) at the requested bit width, marked uncalibrated. The first training forward (training mode,
gradients enabled, not tracing) then calibrates it once on that batch: ``q_m_act = max|x|`` and ``d_quant_act``
such that the activation bit width is unchanged. The flag ``act_calibrated`` records this and is saved in the
state_dict (a bool tensor under ``<layer>.act_calibrated``), so a round trip keeps the calibrated range and does
not calibrate again; :meth:`QuantizeMixin.calibrate_activation_range` calibrates explicitly (e.g. on real data
before evaluating an untrained model). Tracers should run the model under ``torch.no_grad()`` or in eval mode, so
that a dummy input is not taken as the calibration batch.
"""
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Literal, Optional, Tuple, Type, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .quantizer import (
    DEFAULT_CLIP_VAL,
    MIN_MAGNITUDE,
    DGEQuantizer,
    NanInGradientError,
    QuantizationMode,
    QuantizationType,
    SymQuantizerLinear,
    SymQuantizerNonLinear,
    bit_width,
    fake_quantize,
    is_tracing,
    step_size_for_bits,
)

__all__ = [
    "QuantizationType",
    "QuantizationMode",
    "NanInGradientError",
    "QuantizationConfig",
    "QUANT_PARAMETER_NAMES",
    "QuantizeMixin",
    "QuantizeLinear",
    "QuantizeConv1d",
    "QuantizeConv2d",
    "QuantizeConvTranspose2d",
    "QuantizeEmbedding",
    "initialize_quant_layer",
    "LAYER_TO_QUANTLAYER",
    "SymQuantizerLinear",
    "SymQuantizerNonLinear",
    "DGEQuantizer",
]

logger = logging.getLogger(__name__)

#: Names of the quantizer parameters, in registration order (those of a given layer are a subsequence).
QUANT_PARAMETER_NAMES = ("d_quant_wt", "q_m_wt", "t_quant_wt", "d_quant_act", "q_m_act", "t_quant_act")

QuantType = Union[QuantizationType, str]
QuantMode = Union[QuantizationMode, str]
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


@dataclass(frozen=True)
class QuantizationConfig:
    """Settings of a layer's quantizers. Strings are accepted for the enums; ``ValueError`` lists valid values.

    ``weight_clip_val`` / ``act_clip_val``: ``(lo, hi)`` outside which the straight-through input gradient of the
    weight / activation quantizer is zero.
    """

    quant_type: QuantizationType = QuantizationType.SYMMETRIC_LINEAR
    quant_mode: QuantizationMode = QuantizationMode.WEIGHT_ONLY
    weight_clip_val: Tuple[float, float] = DEFAULT_CLIP_VAL
    act_clip_val: Tuple[float, float] = DEFAULT_CLIP_VAL

    def __post_init__(self) -> None:
        object.__setattr__(self, "quant_type", QuantizationType.parse(self.quant_type))
        object.__setattr__(self, "quant_mode", QuantizationMode.parse(self.quant_mode))
        for name in ("weight_clip_val", "act_clip_val"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not lo < hi:
                raise ValueError(f"{name} must be (lo, hi) with lo < hi, got {getattr(self, name)!r}.")
            object.__setattr__(self, name, (lo, hi))


def _from_module_for(layer_class: Type["QuantizeMixin"]) -> Callable[..., "QuantizeMixin"]:
    """The ``from_module`` static method of ``layer_class`` (see :meth:`QuantizeMixin.__init_subclass__`)."""

    def from_module(
        module: Optional[nn.Module] = None,
        d_quant_init: float = 1.0,
        t_quant_init: float = 1.0,
        q_m_init: float = 1.0,
        quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
        quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
        quant_init_by_module: bool = True,
        num_bits: int = 8,
        *,
        share_parameters: bool = False,
    ) -> "QuantizeMixin":
        """Quantized copy of the float ``module``: same shape, device, dtype, padding mode and training flag.

        The weight and bias are copied (``share_parameters=True``: the new layer takes the module's Parameter
        objects, keeping tied weights tied and ``requires_grad`` flags). If ``quant_init_by_module``, the
        quantizers are then initialised by :func:`initialize_quant_layer` at ``num_bits`` bits, overriding the
        ``*_init`` values. A layer that cannot quantize activations is created weight-only.
        """
        if not layer_class._accepts_float_module(module):
            expected = getattr(layer_class, "_FLOAT_MODULE_DESCRIPTION", layer_class._FLOAT_MODULE.__name__)
            given = type(module).__name__
            raise TypeError(f"{layer_class.__name__}.from_module needs a {expected}, got {given}.")
        assert module is not None  # _accepts_float_module rejects None
        if isinstance(module.weight, nn.parameter.UninitializedParameter):
            raise ValueError(f"{type(module).__name__} is not initialised yet; run one forward pass before converting.")
        quant_mode = QuantizationMode.parse(quant_mode)
        if quant_mode is QuantizationMode.WEIGHT_AND_ACTIVATION and not layer_class._QUANTIZES_ACTIVATION:
            logger.info("%s quantizes its weight only; its input is not a float activation.", layer_class.__name__)
            quant_mode = QuantizationMode.WEIGHT_ONLY
        layer = layer_class(
            **layer_class._float_module_kwargs(module),
            d_quant_init=d_quant_init,
            t_quant_init=t_quant_init,
            q_m_init=q_m_init,
            quant_type=quant_type,
            quant_mode=quant_mode,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        for name in ("weight", "bias"):
            source = getattr(module, name, None)
            if source is None:
                continue
            if share_parameters:
                setattr(layer, name, source)
            else:
                with torch.no_grad():
                    getattr(layer, name).copy_(source)
                getattr(layer, name).requires_grad_(source.requires_grad)
        layer.train(module.training)
        if quant_init_by_module:
            initialize_quant_layer(layer, num_bits, layer.quant_type, layer.quant_mode)
        return layer

    return from_module


class QuantizeMixin(nn.Module):
    """Quantizer parameters and their application, shared by every quantized layer.

    A quantized layer subclasses its float layer first and this mixin second, sets ``_FLOAT_MODULE`` (the float
    class it replaces) and implements ``_float_module_kwargs(module)`` (constructor arguments reproducing a float
    module's shape), calls :meth:`init_quantization` at the end of ``__init__`` and applies
    :meth:`quantize_weight` / :meth:`quantize_act` in ``forward``.
    """

    _FLOAT_MODULE: type
    _QUANTIZES_ACTIVATION = True  # False where the input is not a float activation (embedding indices)
    quant_config: QuantizationConfig
    # set by the subclasses and __init_subclass__ (class docstring)
    _float_module_kwargs: Callable[..., Dict[str, Any]]
    from_module: Callable[..., "QuantizeMixin"]
    # the float layer's weight and the quantizer parameters registered by init_quantization
    weight: Tensor
    d_quant_wt: Tensor
    q_m_wt: Tensor
    d_quant_act: Tensor
    q_m_act: Tensor

    def init_quantization(
        self,
        d_quant_init: float = 1.0,
        t_quant_init: float = 1.0,
        q_m_init: float = 1.0,
        quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
        quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
        weight_clip_val: Tuple[float, float] = DEFAULT_CLIP_VAL,
        act_clip_val: Tuple[float, float] = DEFAULT_CLIP_VAL,
    ) -> None:
        """Create the quantizer parameters (shape ``[1]``, on the weight's device) with the given initial values.

        ``t_quant_*`` exist for the nonlinear type only, the ``*_act`` parameters and the ``act_calibrated``
        flag (True: the given values are used as they are) for weight+activation mode only.
        """
        # __post_init__ parses the strings among quant_type and quant_mode
        self.quant_config = QuantizationConfig(cast(QuantizationType, quant_type), cast(QuantizationMode, quant_mode),
                                               weight_clip_val, act_clip_val)
        if self.quantizes_activation and not self._QUANTIZES_ACTIVATION:
            raise ValueError(f"{type(self).__name__} supports {QuantizationMode.WEIGHT_ONLY.value} mode only.")
        suffixes = ("wt", "act") if self.quantizes_activation else ("wt",)
        for suffix in suffixes:
            self._register_quant_parameter(f"d_quant_{suffix}", d_quant_init)
            self._register_quant_parameter(f"q_m_{suffix}", q_m_init)
            if self.quant_type is QuantizationType.SYMMETRIC_NONLINEAR:
                self._register_quant_parameter(f"t_quant_{suffix}", t_quant_init)
        self._act_calibrated = True

    def _register_quant_parameter(self, name: str, value: float) -> None:
        dtype = torch.promote_types(self.weight.dtype, torch.float32)  # no float16 step sizes
        tensor = torch.tensor([float(value)], dtype=dtype, device=self.weight.device)
        self.register_parameter(name, nn.Parameter(tensor))

    @property
    def quant_type(self) -> QuantizationType:
        return self.quant_config.quant_type

    @property
    def quant_mode(self) -> QuantizationMode:
        return self.quant_config.quant_mode

    @property
    def weight_clip_val(self) -> Tuple[float, float]:
        return self.quant_config.weight_clip_val

    @property
    def act_clip_val(self) -> Tuple[float, float]:
        return self.quant_config.act_clip_val

    @property
    def quantizes_activation(self) -> bool:
        return self.quant_mode is QuantizationMode.WEIGHT_AND_ACTIVATION

    def _exponent(self, suffix: str) -> Optional[Tensor]:
        return getattr(self, f"t_quant_{suffix}") if self.quant_type is QuantizationType.SYMMETRIC_NONLINEAR else None

    def named_quant_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """``(name, parameter)`` for this layer's quantizer parameters, in registration order."""
        for name in QUANT_PARAMETER_NAMES:
            param = self._parameters.get(name)
            if param is not None:
                yield name, param

    def quantize_weight(self, weight: Tensor) -> Tensor:
        """Fake-quantized ``weight`` (same shape) through the weight quantizer."""
        return fake_quantize(
            weight, self.d_quant_wt, self.q_m_wt, self._exponent("wt"), self.weight_clip_val, self.quant_type
        )

    def quantize_act(self, x: Tensor) -> Tensor:
        """``x`` itself in weight-only mode, else ``x`` fake-quantized by the activation quantizer.

        Calibrates the activation range first if it is uncalibrated and this is a training forward.
        """
        if not self.quantizes_activation:
            return x
        if not self._act_calibrated and self.training and torch.is_grad_enabled() and not is_tracing():
            self.calibrate_activation_range(x)
        return fake_quantize(
            x, self.d_quant_act, self.q_m_act, self._exponent("act"), self.act_clip_val, self.quant_type
        )

    @torch.no_grad()
    def calibrate_activation_range(self, x: Tensor) -> None:
        """Set ``q_m_act = max|x|`` (over all ranks under torch.distributed) keeping the activation bit width.

        ``d_quant_act`` is rescaled by ``(q_new / q_old)^t`` so that ``q_m^t / d``, hence the unrounded bit width,
        is unchanged; ``t_quant_act`` is kept. Marks the layer calibrated. Deterministic for a given ``x``.
        """
        q_m = x.detach().abs().amax().to(self.q_m_act.dtype).clamp_min(MIN_MAGNITUDE)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(q_m, op=torch.distributed.ReduceOp.MAX)
        scale = q_m / self.q_m_act.abs().clamp_min(MIN_MAGNITUDE)
        t = self._exponent("act")
        step = self.d_quant_act.abs().clamp_min(MIN_MAGNITUDE)
        self.d_quant_act.copy_(step * (scale if t is None else scale.pow(t)))
        self.q_m_act.copy_(q_m)
        self._act_calibrated = True
        logger.debug("Calibrated the activation range of %s: q_m_act=%.6g", type(self).__name__, float(q_m))

    def _rounded_bit_width(self, suffix: str) -> int:
        t = self._exponent(suffix)
        d, q_m = getattr(self, f"d_quant_{suffix}"), getattr(self, f"q_m_{suffix}")
        return round(float(bit_width(d.detach(), q_m.detach(), None if t is None else t.detach())))

    @property
    def weight_bit(self) -> int:
        """Rounded bit width of the weight quantizer."""
        return self._rounded_bit_width("wt")

    @property
    def activation_bit(self) -> int:
        """Rounded bit width of the activation quantizer; 32 in weight-only mode."""
        return self._rounded_bit_width("act") if self.quantizes_activation else 32

    @property
    def act_calibrated(self) -> bool:
        """Whether the activation range is calibrated (always True in weight-only mode)."""
        return self._act_calibrated

    # The flag lives in Python, so that the per-forward check reads no tensor (no device sync, nothing for a
    # tracer to record); state_dict carries it as the bool tensor "act_calibrated", written and read here.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.quantizes_activation:
            destination[prefix + "act_calibrated"] = torch.tensor(self._act_calibrated)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        key = prefix + "act_calibrated"
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        if self.quantizes_activation:
            # Checkpoints written without the flag (the reference's) hold trained activation ranges.
            self._act_calibrated = bool(state_dict.get(key, True))

    @classmethod
    def _accepts_float_module(cls, module: Optional[nn.Module]) -> bool:
        """Whether ``from_module`` can convert ``module`` (an instance of ``_FLOAT_MODULE`` unless overridden)."""
        return isinstance(module, cls._FLOAT_MODULE)

    def __init_subclass__(cls, **kwargs) -> None:
        """Give every quantized layer class its own static ``from_module`` (a static method, as in the reference),
        building instances of that class: subclasses of a quantized layer convert to the subclass."""
        super().__init_subclass__(**kwargs)
        if "from_module" not in cls.__dict__:
            cls.from_module = staticmethod(_from_module_for(cls))


class QuantizeLinear(nn.Linear, QuantizeMixin):
    """``nn.Linear`` with quantized weight (and input activation in weight+activation mode); bias not quantized."""

    _FLOAT_MODULE = nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        d_quant_init: float = 1.0,
        t_quant_init: float = 1.0,
        q_m_init: float = 1.0,
        quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
        quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
        *,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.init_quantization(d_quant_init, t_quant_init, q_m_init, quant_type, quant_mode)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.quantize_weight(self.weight)
        return F.linear(self.quantize_act(x), weight, self.bias)

    @staticmethod
    def _float_module_kwargs(module: nn.Linear) -> Dict[str, Any]:
        return dict(in_features=module.in_features, out_features=module.out_features, bias=module.bias is not None)


def _conv_kwargs(module: nn.Module) -> Dict[str, Any]:
    return dict(
        in_channels=module.in_channels,
        out_channels=module.out_channels,
        kernel_size=module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=module.groups,
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
    )


class QuantizeConv2d(nn.Conv2d, QuantizeMixin):
    """``nn.Conv2d`` with quantized weight (and input). Reference defaults: ``padding=1``, ``bias=False``.

    Every ``padding_mode`` of ``nn.Conv2d`` is honoured.
    """

    _FLOAT_MODULE = nn.Conv2d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=1,
        dilation=1,
        groups: int = 1,
        bias: bool = False,
        d_quant_init: float = 1.0,
        t_quant_init: float = 1.0,
        q_m_init: float = 1.0,
        quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
        quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
        *,
        padding_mode: PaddingMode = "zeros",
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            device=device, dtype=dtype,
        )
        self.init_quantization(d_quant_init, t_quant_init, q_m_init, quant_type, quant_mode)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.quantize_weight(self.weight)
        return self._conv_forward(self.quantize_act(x), weight, self.bias)

    _float_module_kwargs = staticmethod(_conv_kwargs)


class QuantizeConv1d(nn.Conv1d, QuantizeMixin):
    """``nn.Conv1d`` with quantized weight (and input); ``nn.Conv1d`` defaults, every ``padding_mode``."""

    _FLOAT_MODULE = nn.Conv1d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        d_quant_init: float = 1.0,
        t_quant_init: float = 1.0,
        q_m_init: float = 1.0,
        quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
        quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
        *,
        padding_mode: PaddingMode = "zeros",
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
            device=device, dtype=dtype,
        )
        self.init_quantization(d_quant_init, t_quant_init, q_m_init, quant_type, quant_mode)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.quantize_weight(self.weight)
        return self._conv_forward(self.quantize_act(x), weight, self.bias)

    _float_module_kwargs = staticmethod(_conv_kwargs)


class QuantizeConvTranspose2d(nn.ConvTranspose2d, QuantizeMixin):
    """``nn.ConvTranspose2d`` with quantized weight (and input); ``nn.ConvTranspose2d`` defaults."""

    _FLOAT_MODULE = nn.ConvTranspose2d

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups: int = 1,
        bias: bool = True,
        dilation=1,
        d_quant_init: float = 1.0,
        t_quant_init: float = 1.0,
        q_m_init: float = 1.0,
        quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
        quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
        *,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias, dilation,
            device=device, dtype=dtype,
        )
        self.init_quantization(d_quant_init, t_quant_init, q_m_init, quant_type, quant_mode)

    def forward(self, x: Tensor, output_size: Optional[list] = None) -> Tensor:
        padding = cast(Tuple[int, ...], self.padding)  # never a string for a transposed convolution
        # _output_padding is typed with lists for TorchScript; torch's own ConvTranspose2d.forward passes these
        # tuples too, ignoring the same error
        output_padding = self._output_padding(
            x, output_size, self.stride, padding, self.kernel_size, 2, self.dilation  # type: ignore[arg-type]
        )
        weight = self.quantize_weight(self.weight)
        return F.conv_transpose2d(
            self.quantize_act(x), weight, self.bias, self.stride, padding, output_padding, self.groups,
            self.dilation,
        )

    @staticmethod
    def _float_module_kwargs(module: nn.ConvTranspose2d) -> Dict[str, Any]:
        return dict(
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            kernel_size=module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            output_padding=module.output_padding,
            groups=module.groups,
            bias=module.bias is not None,
            dilation=module.dilation,
        )


class QuantizeEmbedding(nn.Embedding, QuantizeMixin):
    """``nn.Embedding`` with a quantized table; weight-only (its input is indices). Dense gradients only.

    The whole table is quantized, then looked up, so the weight quantizer sees the ``weight`` Parameter like every
    other layer. ``max_norm`` renormalises the float table in place before quantization, as ``nn.Embedding`` does.
    """

    _FLOAT_MODULE = nn.Embedding
    _QUANTIZES_ACTIVATION = False

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: Optional[int] = None,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        d_quant_init: float = 1.0,
        t_quant_init: float = 1.0,
        q_m_init: float = 1.0,
        quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
        quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
        *,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(
            num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq, device=device,
            dtype=dtype,
        )
        self.init_quantization(d_quant_init, t_quant_init, q_m_init, quant_type, quant_mode)

    def forward(self, indices: Tensor) -> Tensor:
        if self.max_norm is not None:
            with torch.no_grad():
                torch.embedding_renorm_(self.weight, indices, self.max_norm, self.norm_type)
        weight = self.quantize_weight(self.weight)
        return F.embedding(indices, weight, self.padding_idx, None, self.norm_type, self.scale_grad_by_freq)

    @staticmethod
    def _float_module_kwargs(module: nn.Embedding) -> Dict[str, Any]:
        if module.sparse:
            raise ValueError("QuantizeEmbedding does not support sparse=True embeddings (sparse gradients).")
        return dict(
            num_embeddings=module.num_embeddings,
            embedding_dim=module.embedding_dim,
            padding_idx=module.padding_idx,
            max_norm=module.max_norm,
            norm_type=module.norm_type,
            scale_grad_by_freq=module.scale_grad_by_freq,
        )


@torch.no_grad()
def initialize_quant_layer(
    layer: nn.Module,
    num_bits: int = 16,
    quant_type: QuantType = QuantizationType.SYMMETRIC_LINEAR,
    quant_mode: QuantMode = QuantizationMode.WEIGHT_ONLY,
) -> None:
    """Initialise a quantized layer's quantizers at ``num_bits`` bits; no-op for other modules.

    Weight: ``q_m_wt = max|W|``, ``d_quant_wt = q_m_wt / (2^(num_bits-1) - 1)``, ``t_quant_wt = 1``, so
    ``weight_bit == num_bits``. Activation (weight+activation mode): range ``max(|lo|, |hi|)`` of
    ``act_clip_val`` at ``num_bits`` bits, ``t_quant_act = 1``, uncalibrated, so that the first training batch sets
    the range (module docstring). ``quant_type`` and ``quant_mode`` are accepted for compatibility; the layer's own
    configuration decides which parameters exist and are set.
    """
    if not isinstance(layer, QuantizeMixin):
        return
    QuantizationType.parse(quant_type)
    QuantizationMode.parse(quant_mode)
    ranges = {"wt": layer.weight.detach().abs().max().clamp_min(MIN_MAGNITUDE)}
    if layer.quantizes_activation:
        ranges["act"] = torch.tensor(max(abs(v) for v in layer.act_clip_val))
        layer._act_calibrated = False
    for suffix, q_m in ranges.items():
        getattr(layer, f"q_m_{suffix}").fill_(q_m)
        getattr(layer, f"d_quant_{suffix}").fill_(step_size_for_bits(num_bits, q_m))
        if layer.quant_type is QuantizationType.SYMMETRIC_NONLINEAR:
            getattr(layer, f"t_quant_{suffix}").fill_(1.0)


#: Quantized layer for each supported float layer, keyed by the float class name (conversion matches by
#: ``isinstance`` against each entry's ``_FLOAT_MODULE``, so subclasses are converted too).
LAYER_TO_QUANTLAYER: Dict[str, Type[QuantizeMixin]] = {
    cls._FLOAT_MODULE.__name__: cls
    for cls in (QuantizeLinear, QuantizeConv2d, QuantizeConv1d, QuantizeConvTranspose2d, QuantizeEmbedding)
}
