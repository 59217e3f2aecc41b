"""ONNX export with dynamic batch (and sequence) axes, and running the result in onnxruntime.

The TorchScript exporter is tried first (it honours the symbolic functions of the integer layers); models it
cannot trace (Hugging Face decoders in transformers 5: ``aten::diff`` has no symbolic) go through the
``torch.export``-based exporter.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..subnet_construction.onnx_integrity import verify_onnx_file, write_onnx_atomically
from .model_io import ExportWrapper, input_items

__all__ = ["OnnxExportError", "export_onnx", "run_onnx", "optimized_op_types", "session"]

logger = logging.getLogger(__name__)

OPSET = 17


class OnnxExportError(RuntimeError):
    """The model could not be exported to ONNX, or the export does not compute the model's function."""


def _axis_names(items: List[Tuple[str, Tensor]], dynamic: bool) -> Dict[str, Dict[int, str]]:
    """Batch axis 0 of every input; axis 1 ("sequence") of integer inputs of rank >= 2 (token ids, masks)."""
    if not dynamic:
        return {}
    axes = {}
    for name, tensor in items:
        if tensor.dim() == 0:
            continue
        axes[name] = {0: "batch"}
        if not tensor.is_floating_point() and tensor.dim() >= 2:
            axes[name][1] = "sequence"
    return axes


def _output_axes(first: Sequence[Tensor], second: Sequence[Tensor], names: Sequence[str], batch: Tuple[int, int],
                 sequence: Optional[Tuple[int, int]]) -> Dict[str, Dict[int, str]]:
    """Output axes whose size changed between the two probe inputs, named after the input axis they follow."""
    axes: Dict[str, Dict[int, str]] = {}
    for name, a, b in zip(names, first, second):
        for axis, (size_a, size_b) in enumerate(zip(a.shape, b.shape)):
            if size_a == size_b:
                continue
            label = "batch" if (size_a, size_b) == batch else "sequence" if (size_a, size_b) == sequence \
                else f"{name}_dim{axis}"
            axes.setdefault(name, {})[axis] = label
    return axes


def _clean(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def export_onnx(model: nn.Module, inputs: Any, path: str, output_names: Sequence[str],
                probe_outputs: Tuple[Sequence[Tensor], Sequence[Tensor]], probe_inputs: Tuple[Any, Any],
                dynamic: bool = True, torchscript_only: bool = False) -> str:
    """Write ``model`` as ONNX to ``path`` with dynamic axes; ``probe_*``: the outputs on two input shapes (the
    axes that change become dynamic). The file is written atomically, with checksums of its tensors in its
    metadata (:func:`~..subnet_construction.onnx_integrity.verify_onnx_file`). Raises :class:`OnnxExportError`
    naming both exporters' errors."""
    items = input_items(inputs)
    input_names = [_clean(name) for name, _ in items]
    outputs = [_clean(name) for name in output_names]
    first, second = (input_items(probe) for probe in probe_inputs)
    batch = (first[0][1].shape[0], second[0][1].shape[0])
    token = next(((a.shape[1], b.shape[1]) for (_, a), (_, b) in zip(first, second)
                  if not a.is_floating_point() and a.dim() >= 2), None)
    axes = {_clean(k): v for k, v in _axis_names(items, dynamic).items()}
    if dynamic:
        axes.update(_output_axes(*probe_outputs, outputs, batch, token))
    wrapper = ExportWrapper(model, inputs).eval()
    args = tuple(tensor for _, tensor in items)
    errors = []
    for dynamo in ((False,) if torchscript_only else (False, True)):
        try:
            write_onnx_atomically(path, lambda temporary: _export(wrapper, args, temporary, input_names, outputs,
                                                                  axes, dynamo))
            return path
        except Exception as error:  # the exporters raise many types; both messages go into the report
            errors.append(f"{'torch.export' if dynamo else 'TorchScript'} exporter: {type(error).__name__}: "
                          f"{str(error)[:400]}")
            logger.info("ONNX export failed: %s", errors[-1])
    raise OnnxExportError(f"cannot export {type(model).__name__} to ONNX: " + " | ".join(errors))


def _export(wrapper: nn.Module, args: tuple, path: str, input_names: List[str], output_names: List[str],
            axes: Dict[str, Dict[int, str]], dynamo: bool) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not dynamo:
            torch.onnx.export(wrapper, args, path, input_names=input_names, output_names=output_names,
                              dynamic_axes=axes or None, opset_version=OPSET, dynamo=False,
                              autograd_inlining=False)  # the integer layers export through their symbolic
            return
        program = torch.onnx.export(wrapper, args, input_names=input_names, output_names=output_names,
                                    dynamic_axes=axes or None, opset_version=18, dynamo=True, verbose=False)
        assert program is not None  # the dynamo exporter always returns its program
        program.save(path)


def session(path: str, threads: int = 0, optimized_path: Optional[str] = None, log_severity: int = 3,
            spinning: bool = True, verify: bool = True):
    """An onnxruntime CPU session for ``path`` (``threads`` 0: onnxruntime's default). ``spinning=False``: idle
    worker threads sleep instead of spinning (they would steal the cores of whatever runs next). ``verify``: check
    the file's checksums first (``CorruptFileError`` naming a damaged, truncated or empty file)."""
    import onnxruntime as ort

    if verify:
        verify_onnx_file(path)
    options = ort.SessionOptions()
    options.log_severity_level = log_severity
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds(sess, inputs: Any) -> Dict[str, np.ndarray]:
    """onnxruntime feeds for ``inputs`` (only the inputs the graph kept: unused ones are dropped by exporters)."""
    wanted = {i.name for i in sess.get_inputs()}
    return {_clean(name): tensor.detach().cpu().numpy() for name, tensor in input_items(inputs)
            if _clean(name) in wanted}


def run_onnx(path: str, inputs: Any, sess=None) -> List[Tensor]:
    """The outputs of the ONNX model at ``path`` on ``inputs``, as torch tensors."""
    sess = sess or session(path)
    return [torch.from_numpy(np.asarray(out)) for out in sess.run(None, feeds(sess, inputs))]


def optimized_op_types(path: str) -> List[str]:
    """Operator types of the graph onnxruntime runs after its optimizations (read back from the saved graph)."""
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        optimized = os.path.join(folder, "optimized.onnx")
        session(path, optimized_path=optimized)
        model = onnx.load(optimized, load_external_data=False)
    return [node.op_type for node in model.graph.node]
