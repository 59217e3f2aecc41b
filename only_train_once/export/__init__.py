"""Real low-bit export of quantized (compressed) models.

* :func:`export_qdq_onnx`: a standard ONNX QDQ graph, integer weight initializers and QuantizeLinear /
  DequantizeLinear, that onnxruntime runs (:mod:`.qdq_onnx`, :mod:`.qdq_markers`, :mod:`.qdq_rewrite`);
* :func:`save_packed` / :func:`load_packed`: weights bit-packed at their learned width in safetensors, reloaded
  into grid layers with bitwise-identical outputs (:mod:`.packed`, :mod:`.bitpack`, :mod:`.grid_layers`).

Both read the integers behind each quantizer through :mod:`.integer_weights`.

* :func:`export_deployable` (``OTO.export``): deployable targets that run faster than the dense model, a plain
  PyTorch model, float ONNX and integer ONNX (:mod:`.deploy`, :mod:`.baking`, :mod:`.bn_folding`,
  :mod:`.int8_layers`, :mod:`.plain_modules`, :mod:`.onnx_clips`, :mod:`.onnx_io`, :mod:`.deploy_files`);
  :func:`load_deployed` reloads the weights-only form.
"""

from .deploy import TARGETS, DeployConfig, DeploymentError, export_deployable
from .deploy_files import load_deployed
from .grid_layers import GRID_LAYERS, grid_weight
from .integer_weights import (
    ActivationGrid,
    IntegerWeight,
    NoQuantizedLayersError,
    UnsupportedBitWidthError,
    activation_grid,
    integer_weight,
    quantized_layers,
)
from .packed import PACKED_FORMAT, load_packed, save_packed
from .qdq_onnx import EXACT_SESSION_CONFIG, export_qdq_onnx

__all__ = ["export_deployable", "load_deployed", "DeployConfig", "DeploymentError", "TARGETS", "export_qdq_onnx",
           "EXACT_SESSION_CONFIG", "save_packed", "load_packed", "PACKED_FORMAT",
           "NoQuantizedLayersError", "UnsupportedBitWidthError", "IntegerWeight", "ActivationGrid",
           "integer_weight", "activation_grid", "quantized_layers", "GRID_LAYERS", "grid_weight"]
