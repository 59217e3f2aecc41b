"""Files of the ``torch`` deployment target: a whole-module ``.pt`` and a weights-only form.

``<base>_deploy.pt`` unpickles with PyTorch and the model's own package (timm, transformers...) only: the
activation quantizers (:mod:`.baking`) and any module of this library left after construct_subnet
(:mod:`.plain_modules`) are ``torch.fx`` GraphModules, pickled as generated code. It still needs
``torch.load(..., weights_only=False)``. The weights-only form loads on torch >= 2.6 without unpickling:
``<base>_deploy.safetensors`` plus ``<base>_deploy.json`` (the compressed architecture as construct_subnet's
subnet description, the folded BatchNorms, the activation quantizers), applied by :func:`load_deployed` to a fresh
instance of the original model class. All three carry checksums of their data and are written atomically
(:mod:`..subnet_construction.integrity`); :func:`load_deployed` verifies them.
"""

from __future__ import annotations

from typing import Dict, Optional, Set, cast

import torch
from torch import Tensor, nn

from ..quantization.quant_layers import QuantizeMixin
from ..subnet_construction.apply import SubnetSpec, restore_subnet
from ..subnet_construction.integrity import read_json_document, save_module, write_json_document
from ..subnet_construction.io import read_weights, save_weights
from .baking import ActivationQuantizer, attach_activation_quantizer, empty_standard_layer
from .bn_folding import norm_replacement

__all__ = ["DEPLOY_FORMAT", "save_deployed", "load_deployed"]

DEPLOY_FORMAT = "only_train_once.deploy/1"


def save_deployed(model: nn.Module, base: str, description: dict) -> str:
    """Write ``<base>_deploy.pt``, ``.safetensors`` and ``.json``; returns the ``.pt`` path."""
    path = base + "_deploy.pt"
    save_module(model, path)
    save_weights(model, base + "_deploy.safetensors")
    write_json_document(base + "_deploy.json", description)
    return path


def _load_description(path: str) -> dict:
    return read_json_document(path, "a deployment description (JSON) written by oto.export")


def _standard(module: nn.Module, kind: str) -> nn.Module:
    """The deployed standard layer (class name ``kind``) in place of a quantized or float one (same shape)."""
    if isinstance(module, QuantizeMixin) or type(module).__name__ != kind:  # e.g. Conv1D deploys as Linear
        return empty_standard_layer(module)
    return module


def _stored_names(weights_path: str) -> Set[str]:
    from safetensors import safe_open

    with safe_open(weights_path, "pt") as handle:
        return set(handle.keys())


def _untie_stored_separately(model: nn.Module, stored: Set[str]) -> None:
    """A parameter shared under several names (tied embedding and head) that the file stores under more than one
    name gets a tensor per name: baking a quantized head breaks its tie with the float embedding."""
    first_name: Dict[int, str] = {}
    for module_name, module in model.named_modules():
        for attribute, parameter in list(module.named_parameters(recurse=False)):
            name = f"{module_name}.{attribute}" if module_name else attribute
            if id(parameter) in first_name and name in stored and first_name[id(parameter)] in stored:
                setattr(module, attribute, nn.Parameter(parameter.detach().clone(),
                                                        requires_grad=parameter.requires_grad))
            else:
                first_name.setdefault(id(parameter), name)


def load_deployed(model: nn.Module, weights_path: str, description_path: Optional[str] = None) -> nn.Module:
    """Turn ``model``, a fresh instance of the original architecture, into the deployed model; returns it (eval).

    ``description_path`` defaults to the ``.json`` next to ``weights_path``. No unpickling. Raises
    ``CorruptFileError`` naming a damaged, truncated or empty file.
    """
    from safetensors.torch import load_model

    description_path = description_path or weights_path.rsplit(".", 1)[0] + ".json"
    description = _load_description(description_path)
    read_weights(weights_path)  # verifies the checksums before anything is changed
    if description.get("format") != DEPLOY_FORMAT:
        raise ValueError(f"{description_path} is not a deployment description (format {DEPLOY_FORMAT!r})")
    if description.get("subnet"):
        restore_subnet(model, SubnetSpec.from_dict(description["subnet"]))
    for name, kind in description["standard_layers"].items():
        model.set_submodule(name, _standard(model.get_submodule(name), kind))
    for layer_name, norm_name in description["folded_batchnorm"]:
        model.set_submodule(norm_name, norm_replacement(model.get_submodule(norm_name)))
    for name in description["added_bias"]:
        layer = model.get_submodule(name)
        weight = cast(Tensor, layer.weight)
        layer.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device))
    _untie_stored_separately(model, _stored_names(weights_path))
    load_model(model, weights_path, strict=True)
    modules = dict(model.named_modules())
    for name, quantizer in description["activation_quantizers"].items():
        attach_activation_quantizer(modules[name], ActivationQuantizer(**quantizer))
    return model.eval()
