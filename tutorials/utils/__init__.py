"""Helpers shared by the tutorial notebooks: accuracy (torch and onnxruntime) and offline-capable data,
BBC News and the pretrained MiniLM."""

from .data import cifar10_loaders, super_resolution_data
from .text import bbc_news_tensors, import_transformers, minilm_dir
from .utils import accuracy_topk, check_accuracy, check_accuracy_onnx, compute_output_onnx_given_input

__all__ = ["accuracy_topk", "check_accuracy", "check_accuracy_onnx", "compute_output_onnx_given_input",
           "cifar10_loaders", "super_resolution_data", "bbc_news_tensors", "import_transformers", "minilm_dir"]
