"""Deployable exports of a compressed model: plain PyTorch, float ONNX, integer ONNX.

:func:`export_deployable` builds the deployed model once (:func:`build_deployment`: quantized layers baked into
standard layers, BatchNorm folded, activation quantizers as cheap pre-hooks, modules of this library such as a
head-pruned ``nn.MultiheadAttention`` traced into plain torch code by :mod:`.plain_modules`) and writes the
requested targets:

==============  ===============================================  ===========================================
target          what                                             how exact (checked before writing)
==============  ===============================================  ===========================================
``torch``       ``<Name>_deploy.pt`` (whole module, needs only   the compressed model's function; differs only
                torch and the model's own package) and           by one-step rounding flips of activations
                ``<Name>_deploy.safetensors`` + ``.json``        that land on a rounding boundary
``onnx``        ``<Name>_deploy.onnx``: the float model above,   as ``torch``, plus onnxruntime's float
                dynamic batch (and sequence) axes; linear        kernels (about 1e-6 relative)
                activation quantizers of <= 8 bits as Clip +
                int8 QuantizeLinear/DequantizeLinear
``onnx_int8``   ``<Name>_int8.onnx``: layers with weight and     Linear (QGemm / MatMulIntegerToFloat): as
                activation <= 8 bits as QLinearConv (outputs     ``onnx``, integer products are exact, the
                requantized to uint8), QGemm or                  rescale adds float rounding; QLinearConv:
                MatMulIntegerToFloat; the rest float             its uint8 output grid, within
                                                                 ``requantization_tolerance`` of the peak
==============  ===============================================  ===========================================

Every target is compared with the compressed model on the dummy input and on a second input of another batch size
(and sequence length for token inputs): outputs of another shape or further apart than the bound raise
:class:`DeploymentError` naming the output (and, for the ``torch`` target, the first diverging layer), and nothing
is written. Rounding flips make single elements jump by whole activation steps, so two bounds apply: the largest
difference at most ``max(tolerance, flip_steps * largest activation step) * max(1, max|output|)`` (the
allowance of ``construct_subnet``'s check) and the median difference at most ``median_tolerance * max(1, max|output|)``
(a flip moves few elements; a wrong scale, a missed BatchNorm or a shifted bias moves them all). The ``torch``
target is also checked without its activation quantizers against the compressed model with activation rounding
bypassed, within ``tolerance * max(1, max|output|)``: the baked and folded weights exactly. With
``keep_activation_quantization=False`` that is the comparison for every target, and the difference from the
compressed model is measured and reported.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import torch
from torch import Tensor, nn

from ..quantization.quant_layers import QuantizeMixin
from ..quantization.rounding import ActivationRoundingBypassed
from .baking import (BakedLayer, attach_activation_quantizer, attached_quantizers, bake_layer,
                     detach_activation_quantizer, set_form)
from .bn_folding import fold_batchnorm, foldable_pairs, norm_replacement
from .deploy_files import DEPLOY_FORMAT, save_deployed
from .int8_layers import integer_ineligibility, integer_layer, output_grid
from .model_io import named_outputs, second_input
from .onnx_clips import drop_redundant_clips
from .onnx_io import OnnxExportError, export_onnx, optimized_op_types, run_onnx
from .plain_modules import PlainModuleError, replace_library_modules

__all__ = ["TARGETS", "DeployConfig", "Deployment", "DeploymentError", "build_deployment", "export_deployable",
           "INTEGER_KERNELS", "DEPLOY_FORMAT"]

logger = logging.getLogger(__name__)

TARGETS = ("torch", "onnx", "onnx_int8")
#: Operators of onnxruntime's optimized graph that compute in integers.
INTEGER_KERNELS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "MatMulIntegerToFloat",
                   "DynamicQuantizeMatMul", "NhwcQLinearConv")


class DeploymentError(RuntimeError):
    """An export does not compute the compressed model's function (or cannot be built); nothing was written."""


@dataclass(frozen=True)
class DeployConfig:
    """Options of :func:`export_deployable` (validated).

    ``keep_activation_quantization``: keep each activation quantizer (the trained model's function; False drops
    them, an approximation the report measures). ``fold_batchnorm``: fold eval-mode BatchNorm where exact.
    ``tolerance`` / ``flip_steps`` / ``median_tolerance``: the verification bounds (module docstring).
    ``requantize_conv_outputs``: integer convolutions with uint8 outputs (``QLinearConv``, fast, approximate,
    within ``requantization_tolerance`` of the output's peak) instead of exact ``ConvInteger``.
    """

    targets: Tuple[str, ...] = TARGETS
    dynamic_axes: bool = True
    keep_activation_quantization: bool = True
    fold_batchnorm: bool = True
    tolerance: float = 1e-4
    flip_steps: int = 16
    median_tolerance: float = 1e-2
    requantize_conv_outputs: bool = True
    requantization_tolerance: float = 0.1

    def __post_init__(self) -> None:
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        unknown = sorted(set(targets) - set(TARGETS))
        if unknown or not targets:
            raise ValueError(f"unknown export targets {unknown or targets}; choose from {TARGETS}")
        object.__setattr__(self, "targets", targets)
        if self.tolerance <= 0 or self.median_tolerance <= 0 or self.flip_steps < 0:
            raise ValueError("tolerance and median_tolerance must be > 0, flip_steps >= 0")


@dataclass
class Deployment:
    """The deployed model (the ``torch`` target) and how it was made."""

    model: nn.Module
    baked: Dict[str, BakedLayer]
    folded: List[Tuple[str, str]]
    added_bias: List[str] = field(default_factory=list)


# -- building -------------------------------------------------------------------------------------------------
def _bake_all(deployed: nn.Module) -> Dict[str, BakedLayer]:
    layers = {name: module for name, module in deployed.named_modules() if isinstance(module, QuantizeMixin)}
    baked = {}
    for name, layer in layers.items():
        baked[name] = bake_layer(layer, name)
        deployed.set_submodule(name, baked[name].module)
    return baked


def _fold_all(deployed: nn.Module, dummy_input: Any, baked: Dict[str, BakedLayer]) -> Tuple[list, list]:
    pairs = foldable_pairs(deployed, dummy_input)
    added: List[str] = []
    for layer_name, norm_name in pairs:
        layer = deployed.get_submodule(layer_name)
        if layer.bias is None:
            added.append(layer_name)
        factor = fold_batchnorm(layer, deployed.get_submodule(norm_name))  # before the norm is replaced
        if layer_name in baked:
            baked[layer_name].channel_scale = baked[layer_name].channel_scale * factor.to(torch.float64).float()
        norm = deployed.get_submodule(norm_name)
        deployed.set_submodule(norm_name, norm_replacement(norm))
    return pairs, added


@torch.no_grad()
def build_deployment(model: nn.Module, dummy_input: Any, config: DeployConfig = DeployConfig()) -> Deployment:
    """The ``torch`` target of ``model`` (a copy in eval mode; ``model`` is unchanged)."""
    deployed = copy.deepcopy(model).eval()
    baked = _bake_all(deployed)
    folded, added = _fold_all(deployed, dummy_input, baked) if config.fold_batchnorm else ([], [])
    if config.keep_activation_quantization:
        for name, layer in baked.items():
            if layer.activation is not None:
                attach_activation_quantizer(layer.module, layer.activation)
    try:  # e.g. PrunedMultiheadAttention, which torch's MultiheadAttention cannot express after head pruning
        plain = replace_library_modules(deployed, dummy_input)
    except PlainModuleError as error:
        raise DeploymentError(f"torch target: {error}") from error
    logger.info("deployed %s: %d quantized layers baked, %d BatchNorm folded, %d activation quantizers kept, %d "
                "library modules written as plain torch code", type(model).__name__, len(baked), len(folded),
                len(attached_quantizers(deployed)), len(plain))
    return Deployment(deployed, baked, folded, added)


# -- verification ---------------------------------------------------------------------------------------------
@dataclass
class Reference:
    """The compressed model's outputs on the two probe inputs, and the allowed difference."""

    inputs: Tuple[Any, Any]
    names: List[str]
    outputs: Tuple[List[Tensor], List[Tensor]]
    exact_outputs: Tuple[List[Tensor], List[Tensor]]
    bound: float
    rounding_bound: float
    median_bound: float
    peak: float


def _largest_step(baked: Dict[str, BakedLayer]) -> float:
    return max((b.activation.scale for b in baked.values() if b.activation is not None), default=0.0)


def _reference(model: nn.Module, inputs: Tuple[Any, Any], baked: Dict[str, BakedLayer],
               config: DeployConfig) -> Reference:
    runs = [named_outputs(model, x) for x in inputs]
    with ActivationRoundingBypassed():
        exact = [named_outputs(model, x) for x in inputs]
    peak = max([0.0] + [t.abs().max().item() for run in runs for _, t in run if t.numel() and t.is_floating_point()])
    scale = max(1.0, peak)
    flips = config.flip_steps * _largest_step(baked)
    Pair = Tuple[List[Tensor], List[Tensor]]  # one list of outputs per probe input
    return Reference(inputs, [name for name, _ in runs[0]], cast(Pair, tuple([t for _, t in run] for run in runs)),
                     cast(Pair, tuple([t for _, t in run] for run in exact)), config.tolerance * scale,
                     max(config.tolerance, flips) * scale, max(config.median_tolerance * scale, config.tolerance), peak)


def _differences(reference: Sequence[Tensor], candidate: Sequence[Tensor], names: Sequence[str],
                 label: str, statistic=torch.max) -> List[float]:
    """``statistic`` of ``|reference - candidate|`` per output (integer outputs: 1.0 where any differs)."""
    if len(reference) != len(candidate):
        raise DeploymentError(f"{label}: {len(candidate)} outputs instead of {len(reference)} ({list(names)})")
    found = []
    for name, a, b in zip(names, reference, candidate):
        if tuple(a.shape) != tuple(b.shape):
            raise DeploymentError(f"{label}: output '{name}' has shape {tuple(b.shape)} instead of {tuple(a.shape)}")
        found.append(statistic((a.double() - b.double()).abs()).item() if a.numel() and a.is_floating_point()
                     else float((a != b).any()))
    return found


def _worst(differences: List[float]) -> int:
    return max(range(len(differences)), key=differences.__getitem__)


@dataclass
class TargetCheck:
    """Measured difference of one target from the compressed model on the two probe inputs."""

    max_abs_error: List[float]
    relative_error: List[float]
    bound: float
    compared_with: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _check(reference: Reference, run, label: str, config: DeployConfig, diagnose=None,
           exact: bool = False) -> TargetCheck:
    """Run ``run(inputs) -> outputs`` on both probe inputs; raise unless within the bounds (module docstring).
    ``exact``: compare with the rounding-bypassed reference within ``tolerance`` (no flips to allow for)."""
    exact = exact or not config.keep_activation_quantization
    targets = reference.exact_outputs if exact else reference.outputs
    bound = reference.bound if exact else reference.rounding_bound
    errors, relative = [], []
    for index, inputs in enumerate(reference.inputs):
        produced = run(inputs)
        for statistic, allowed, what in ((torch.max, bound, "at most"), (torch.median, reference.median_bound,
                                                                          "in median")):
            differences = _differences(targets[index], produced, reference.names, label, statistic)
            worst = _worst(differences)
            if not differences[worst] <= allowed:
                where = diagnose(inputs, bound) if diagnose else None
                raise DeploymentError(f"{label}: output '{reference.names[worst]}' differs from the compressed "
                                      f"model's by {differences[worst]:.3g} {what} on input {index} (allowed "
                                      f"{allowed:.3g})" + (f"; first diverging layer: {where}" if where else ""))
        actual = _differences(reference.outputs[index], produced, reference.names, label)
        peak = max((t.abs().max().item() for t in reference.outputs[index] if t.numel() and t.is_floating_point()),
                   default=1.0)
        errors.append(max(actual))
        relative.append(max(actual) / max(peak, 1e-12))
    return TargetCheck(errors, relative, bound, "compressed model with activation rounding bypassed" if exact else
                       "compressed model")


def _module_outputs(model: nn.Module, inputs: Any, names: Sequence[str]) -> Dict[str, Tensor]:
    captured: Dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [modules[name].register_forward_hook(
        lambda _m, _i, out, name=name: captured.setdefault(name, out) if isinstance(out, Tensor) else None)
        for name in names if name in modules]
    try:
        named_outputs(model, inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def _first_diverging_layer(compressed: nn.Module, deployment: Deployment, bypass: bool = False):
    """A diagnosis callback: the first layer (in call order) whose output differs beyond the bound."""
    folded_layers = {layer for layer, _ in deployment.folded}
    names = [name for name, m in compressed.named_modules() if name and not list(m.children())
             and name not in folded_layers]

    def diagnose(inputs: Any, bound: float) -> Optional[str]:
        if bypass:
            with ActivationRoundingBypassed():
                expected = _module_outputs(compressed, inputs, names)
        else:
            expected = _module_outputs(compressed, inputs, names)
        produced = _module_outputs(deployment.model, inputs, names)
        for name, value in expected.items():
            other = produced.get(name)
            if other is None or other.shape != value.shape:
                return f"{name} (shape {None if other is None else tuple(other.shape)} vs {tuple(value.shape)})"
            if value.is_floating_point() and (value.double() - other.double()).abs().max().item() > bound:
                return name
        return None

    return diagnose


def _check_baked_weights(model: nn.Module, deployment: Deployment, reference: Reference,
                         config: DeployConfig) -> None:
    """The deployed model without activation quantizers against the rounding-bypassed compressed model."""
    bare = copy.deepcopy(deployment.model)
    for module in bare.modules():
        detach_activation_quantizer(module)
    diagnose = _first_diverging_layer(model, Deployment(bare, deployment.baked, deployment.folded), bypass=True)
    _check(reference, _eager_runner(bare), "torch target (weights, activation quantizers off)", config, diagnose,
           exact=True)


# -- targets --------------------------------------------------------------------------------------------------
def _eager_runner(model: nn.Module):
    return lambda inputs: [t for _, t in named_outputs(model, inputs)]


def _onnx_runner(path: str):
    from .onnx_io import session

    sess = session(path)
    return lambda inputs: run_onnx(path, inputs, sess)


def deployment_description(deployment: Deployment, subnet_spec: Optional[dict]) -> dict:
    """What :func:`~.deploy_files.load_deployed` needs besides the weights (JSON-serialisable)."""
    return {
        "format": DEPLOY_FORMAT,
        "architecture": type(deployment.model).__name__,
        "subnet": subnet_spec,
        "standard_layers": {name: type(b.module).__name__ for name, b in deployment.baked.items()},
        "folded_batchnorm": [list(pair) for pair in deployment.folded],
        "added_bias": deployment.added_bias,
        "activation_quantizers": {name: q.to_dict() for name, q in attached_quantizers(deployment.model).items()},
    }


def _float_onnx_model(deployment: Deployment) -> nn.Module:
    model = copy.deepcopy(deployment.model)
    set_form(model, "onnx")  # ONNX has no operator for an arbitrary integer range (module baking)
    return model


def integer_plan(deployment: Deployment) -> Dict[str, str]:
    """``{layer: "int8" or why it stays float}`` for the ``onnx_int8`` target."""
    if not deployment.baked:
        return {}
    return {name: integer_ineligibility(b) or "int8" for name, b in deployment.baked.items()}


def _output_ranges(model: nn.Module, inputs: Sequence[Any], names: Sequence[str]) -> Dict[str, Tuple[float, float]]:
    """``{layer: (min, max)}`` of the outputs of the named layers of ``model`` over ``inputs``."""
    ranges: Dict[str, Tuple[float, float]] = {}

    def record(name, output):
        low, high = output.min().item(), output.max().item()
        old = ranges.get(name, (low, high))
        ranges[name] = (min(low, old[0]), max(high, old[1]))

    hooks = [model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: record(name, out))
             for name in names]
    try:
        for x in inputs:
            named_outputs(model, x)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def _int8_onnx_model(deployment: Deployment, plan: Dict[str, str], reference: Reference,
                     config: DeployConfig) -> nn.Module:
    integer = [name for name, verdict in plan.items() if verdict == "int8"]
    convs = [name for name in integer if isinstance(deployment.baked[name].module, nn.Conv2d)]
    ranges = _output_ranges(deployment.model, reference.inputs, convs) if config.requantize_conv_outputs else {}
    model = _float_onnx_model(deployment)
    for name in integer:
        grid = output_grid(*ranges[name]) if name in ranges else None
        model.set_submodule(name, integer_layer(deployment.baked[name], grid))
    return model


def _drop_redundant_clips(path: str) -> None:
    import onnx

    model = onnx.load(path)
    removed = drop_redundant_clips(model)
    if removed:
        onnx.save(model, path)
        logger.info("%s: %d activation quantizer Clips dropped (their input stays in the int8 range)",
                    os.path.basename(path), removed)


def _export_verified_onnx(model: nn.Module, reference: Reference, path: str, config: DeployConfig, label: str,
                          torchscript_only: bool = False) -> TargetCheck:
    temporary = path + ".unverified"
    try:
        export_onnx(model, reference.inputs[0], temporary, reference.names, reference.outputs, reference.inputs,
                    config.dynamic_axes, torchscript_only)
        _drop_redundant_clips(temporary)
        check = _check(reference, _onnx_runner(temporary), label, config)
    except OnnxExportError as error:
        raise DeploymentError(f"{label}: {error}") from error
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    os.replace(temporary, path)
    return check


def _integer_kernels(path: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for op_type in optimized_op_types(path):
        if op_type in INTEGER_KERNELS:
            counts[op_type] = counts.get(op_type, 0) + 1
    return counts


def export_deployable(model: nn.Module, dummy_input: Any, out_dir: str, targets: Sequence[str] = TARGETS,
                      dynamic_axes: bool = True, keep_activation_quantization: bool = True,
                      fold_batchnorm: bool = True, name: Optional[str] = None, subnet_spec: Optional[dict] = None,
                      tolerance: float = 1e-4, flip_steps: int = 16, median_tolerance: float = 1e-2,
                      requantize_conv_outputs: bool = True) -> Dict[str, Any]:
    """Write the deployable targets of ``model`` (the compressed model, quantized or not) to ``out_dir``.

    ``dummy_input``: as for OTO (dict inputs are passed by keyword). ``subnet_spec``: the compressed model's subnet
    description (``construct_subnet``'s ``_subnet.json`` content), stored with the weights-only form so that
    :func:`load_deployed` can rebuild the architecture. Returns ``{target: path, ..., "report": path}``; the
    report (JSON: per target its exactness and measured errors, per layer whether it is integer) is also logged.
    Raises :class:`DeploymentError` if a target does not reproduce the model (module docstring).
    """
    config = DeployConfig(tuple(targets), dynamic_axes, keep_activation_quantization, fold_batchnorm, tolerance,
                          flip_steps, median_tolerance, requantize_conv_outputs)
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name or getattr(model, "name", None) or type(model).__name__)
    deployment = build_deployment(model, dummy_input, config)
    probes = (dummy_input, second_input(dummy_input))
    reference = _reference(model, probes, deployment.baked, config)
    paths: Dict[str, Any] = {}
    report: Dict[str, Any] = {"model": type(model).__name__, "folded_batchnorm": len(deployment.folded),
                              "activation_quantization_kept": config.keep_activation_quantization, "targets": {}}
    if "torch" in config.targets:
        _check_baked_weights(model, deployment, reference, config)
        check = _check(reference, _eager_runner(deployment.model), "torch target", config,
                       _first_diverging_layer(model, deployment))
        paths["torch"] = save_deployed(deployment.model, base, deployment_description(deployment, subnet_spec))
        report["targets"]["torch"] = check.to_dict()
    if "onnx" in config.targets:
        path = base + "_deploy.onnx"
        check = _export_verified_onnx(_float_onnx_model(deployment), reference, path, config, "onnx target")
        paths["onnx"] = path
        report["targets"]["onnx"] = check.to_dict()
    if "onnx_int8" in config.targets:
        paths["onnx_int8"], report["targets"]["onnx_int8"] = _export_int8(deployment, reference, base, config)
    report_path = base + "_deploy_report.json"
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1, sort_keys=True)
    paths["report"] = report_path
    logger.info("deployment report of %s: %s", type(model).__name__, json.dumps(report["targets"]))
    return paths


def _export_int8(deployment: Deployment, reference: Reference, base: str, config: DeployConfig):
    plan = integer_plan(deployment)
    path = base + "_int8.onnx"
    model = _int8_onnx_model(deployment, plan, reference, config)
    requantized = [n for n, m in model.named_modules() if getattr(getattr(m, "spec", None), "output_grid", None)]
    if requantized:  # the uint8 output grids are an approximation: its own, stated bound
        allowed = config.requantization_tolerance * reference.peak
        reference = dataclasses.replace(reference, rounding_bound=max(reference.rounding_bound, allowed),
                                        median_bound=max(reference.median_bound, allowed / 4))
    check = _export_verified_onnx(model, reference, path, config, "onnx_int8 target",
                                  torchscript_only=any(v == "int8" for v in plan.values()))
    kernels = _integer_kernels(path)
    integer = sorted(name for name, verdict in plan.items() if verdict == "int8")
    if integer and not kernels:
        # The file is verified and correct, only not faster: onnxruntime left its QDQ groups as float operators.
        logger.warning("onnx_int8: onnxruntime's optimized graph has no integer kernel although %d layers (%s) are "
                       "int8; they run as Dequantize -> float operators", len(integer), ", ".join(integer[:3]))
    details = check.to_dict()
    details.update({"requantized_conv_outputs": requantized, "integer_layers": integer,
                    "float_layers": {n: v for n, v in plan.items() if v != "int8"},
                    "integer_kernels": kernels})
    logger.info("onnx_int8: %d of %d quantized layers integer (%s); float: %s", len(integer), len(plan), kernels,
                details["float_layers"])
    return path, details
