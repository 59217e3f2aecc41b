"""Tutorial data: the real data sets when they are on disk, offline stand-ins otherwise.

* ``cifar10_loaders(root)`` reads CIFAR-10's python batches (``data_batch_1..5``, ``test_batch``) from ``root``
  when they exist; otherwise it returns scikit-learn's handwritten digits shaped like CIFAR-10 (3x32x32,
  10 classes), which ship inside the scikit-learn wheel.
* ``super_resolution_data(root)`` reads DIV2K-style PNG/JPEG images from ``root`` when they exist; otherwise it
  uses the two photographs bundled with scikit-learn. It returns low/high resolution patch pairs.

Nothing is downloaded.
"""

from __future__ import annotations

import glob
import os
import pickle
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _cifar_from_disk(root: str) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    folder = next((d for d in (root, os.path.join(root, "cifar-10-batches-py"))
                   if os.path.exists(os.path.join(d, "test_batch"))), None)
    if folder is None:
        return None

    def read(name):
        with open(os.path.join(folder, name), "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        images = torch.tensor(batch[b"data"], dtype=torch.float32).view(-1, 3, 32, 32) / 255.0
        return images, torch.tensor(batch[b"labels"], dtype=torch.long)

    train = [read(f"data_batch_{k}") for k in range(1, 6)]
    test_images, test_labels = read("test_batch")
    return torch.cat([t[0] for t in train]), torch.cat([t[1] for t in train]), test_images, test_labels


def _digits_as_cifar(seed: int, image_size: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.repeat(1, 3, 1, 1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(labels))
    return images[order[:split]], labels[order[:split]], images[order[split:]], labels[order[split:]]


def cifar10_loaders(root: str = "./cifar10", batch_size: int = 64, seed: int = 0, augment: bool = True,
                    limit: Optional[Tuple[int, int]] = None,
                    fallback_image_size: int = 32) -> Tuple[DataLoader, DataLoader, str]:
    """Train/test loaders and the name of the data actually used (``"CIFAR-10"`` or ``"digits"``).

    Images are normalised with the CIFAR-10 mean and std; with ``augment`` the training set gets random
    horizontal flips and 4-pixel random crops (applied per batch by the collate function). ``limit`` keeps the
    first ``(train, test)`` samples; the offline digits are resized to ``fallback_image_size``.
    """
    found = _cifar_from_disk(root)
    source = "CIFAR-10" if found is not None else "digits"
    train_x, train_y, test_x, test_y = found if found is not None else _digits_as_cifar(seed, fallback_image_size)
    if limit is not None:
        train_x, train_y, test_x, test_y = train_x[:limit[0]], train_y[:limit[0]], test_x[:limit[1]], test_y[:limit[1]]
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    generator = torch.Generator().manual_seed(seed)

    def collate(batch):
        images = torch.stack([b[0] for b in batch])
        labels = torch.stack([b[1] for b in batch])
        if augment and source == "CIFAR-10":
            flip = torch.rand(len(images), generator=generator) < 0.5
            images[flip] = images[flip].flip(-1)
            padded = F.pad(images, (4, 4, 4, 4))
            dx, dy = torch.randint(0, 9, (2,), generator=generator).tolist()
            images = padded[..., dy:dy + images.shape[-2], dx:dx + images.shape[-1]]
        return images, labels

    train = DataLoader(TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True, generator=generator,
                       collate_fn=collate)
    test = DataLoader(TensorDataset(test_x, test_y), batch_size=256)
    return train, test, source


def _images_from_disk(root: str) -> List[np.ndarray]:
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(root, "**", "*.png"), recursive=True)
                   + glob.glob(os.path.join(root, "**", "*.jpg"), recursive=True))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def super_resolution_data(root: str = "./DIV2K", scale: int = 2, patch: int = 64, patches_per_image: int = 64,
                          seed: int = 0) -> Tuple[TensorDataset, str]:
    """(low-res, high-res) patch pairs in [0, 1] and the data actually used (``"DIV2K"`` or ``"sklearn photos"``).

    Low-resolution patches are bicubic downsamplings of the high-resolution ones by ``scale``.
    """
    images: List[np.ndarray] = []
    source = "sklearn photos"
    if os.path.isdir(root):
        try:
            images, source = _images_from_disk(root), "DIV2K"
        except ImportError:
            images = []
    if not images:
        from sklearn.datasets import load_sample_images

        images = load_sample_images().images
        source = "sklearn photos"
    rng = np.random.default_rng(seed)
    high = []
    for image in images:
        tensor = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255.0
        for _ in range(patches_per_image):
            y = int(rng.integers(0, tensor.shape[1] - patch))
            x = int(rng.integers(0, tensor.shape[2] - patch))
            high.append(tensor[:, y:y + patch, x:x + patch])
    high_res = torch.stack(high)
    low_res = F.interpolate(high_res, scale_factor=1 / scale, mode="bicubic", align_corners=False).clamp(0, 1)
    return TensorDataset(low_res, high_res), source
