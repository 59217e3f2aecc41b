"""Accuracy helpers for the tutorials (torch models and ONNX files)."""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

import numpy as np
import torch


def accuracy_topk(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> List[float]:
    """Top-k accuracies of one batch, in percent of the batch."""
    maxk = max(topk)
    predicted = output.topk(maxk, dim=1).indices
    hits = predicted.eq(target.view(-1, 1))
    return [100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in topk]


def _batch(batch, two_input: bool):
    if isinstance(batch, dict):
        images, labels = batch["pixel_values"], batch["labels"]
    else:
        images, labels = batch[0], batch[1]
    return ((images, images) if two_input else (images,)), labels


def check_accuracy(model: torch.nn.Module, testloader: Iterable, two_input: bool = False) -> Tuple[float, float]:
    """Top-1 and top-5 accuracy in percent over the whole loader (sample-weighted); restores train mode."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    with torch.no_grad():
        for batch in testloader:
            inputs, labels = _batch(batch, two_input)
            output = model(*inputs)
            top1, top5 = accuracy_topk(output, labels, topk=(1, min(5, output.shape[1])))
            correct1 += top1 * labels.numel() / 100.0
            correct5 += top5 * labels.numel() / 100.0
            total += labels.numel()
    model.train(was_training)
    return 100.0 * correct1 / total, 100.0 * correct5 / total


def compute_output_onnx_given_input(model_path: str, *inputs: torch.Tensor) -> np.ndarray:
    """Run an ONNX file in onnxruntime on ``inputs`` (positional, in the graph's input order)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)[0]


def check_accuracy_onnx(model_path: str, testloader: Iterable, two_input: bool = False) -> Tuple[float, float]:
    """Top-1 and top-5 accuracy in percent of an ONNX model over the loader (sample-weighted, unlike the
    reference helper, which summed batch percentages and divided by the sample count)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    correct1 = correct5 = total = 0
    for batch in testloader:
        inputs, labels = _batch(batch, two_input)
        feeds = {name: t.numpy() for name, t in zip(names, inputs)}
        output = torch.from_numpy(session.run(None, feeds)[0])
        top1, top5 = accuracy_topk(output, labels, topk=(1, min(5, output.shape[1])))
        correct1 += top1 * labels.numel() / 100.0
        correct5 += top5 * labels.numel() / 100.0
        total += labels.numel()
    return 100.0 * correct1 / total, 100.0 * correct5 / total
