"""Offline data for the demo: scikit-learn's handwritten digits (shipped inside the scikit-learn wheel)."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def digits_loaders(image_size: int = 16, batch_size: int = 64, test_fraction: float = 0.2,
                   seed: int = 0) -> Tuple[DataLoader, DataLoader]:
    """Train and test loaders of the 1,797 8x8 digit images, upsampled to ``image_size`` and standardised.

    The split is stratified by class and fixed by ``seed``; the training loader reshuffles each epoch with a
    generator seeded from ``seed``, so a run is reproducible.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("the demo needs scikit-learn for its offline data: pip install scikit-learn") from error
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(digits.target, dtype=torch.long)
    rng = np.random.default_rng(seed)
    test_indices: List[int] = []
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        test_indices.extend(rng.choice(members, int(round(test_fraction * len(members))), replace=False))
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test_indices] = True
    train = TensorDataset(images[~test_mask], labels[~test_mask])
    test = TensorDataset(images[test_mask], labels[test_mask])
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(test, batch_size=256))
