"""The data loaders parse the real file formats: tiny files written here, and the installed data when present."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from only_train_once.datasets import (DatasetNotInstalledError, load_bbc_news, load_fashion_mnist, load_mnist,
                                      read_idx, write_idx)
from only_train_once.datasets.bbc_news import bbc_news_dir
from only_train_once.datasets.images import fashion_mnist_dir, mnist_pickle_path


def idx_bytes(type_code: int, shape, payload: bytes) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_a_hand_written_uint8_idx_file_reads_back(tmp_path):
    path = tmp_path / "images.idx"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (2, 3), bytes([0, 1, 2, 253, 254, 255]))))
    array = read_idx(str(path))
    assert array.dtype == np.uint8 and array.tolist() == [[0, 1, 2], [253, 254, 255]]


def test_big_endian_int32_idx_values_are_decoded(tmp_path):
    path = tmp_path / "labels.idx"
    path.write_bytes(idx_bytes(0x0C, (2,), struct.pack(">2i", 70000, -3)))  # uncompressed files work too
    assert read_idx(str(path)).tolist() == [70000, -3]


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_write_idx_then_read_idx_is_the_identity(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 7).astype(dtype)
    assert np.array_equal(read_idx(write_idx(str(tmp_path / "a.gz"), array)), array)


@pytest.mark.parametrize("raw, problem", [(b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "two zero bytes"),
                                          (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "type code"),
                                          (idx_bytes(0x08, (3,), b"\x00\x01"), "needs 3 bytes")])
def test_malformed_idx_files_are_rejected(tmp_path, raw, problem):
    path = tmp_path / "bad.idx"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=problem):
        read_idx(str(path))


def write_fashion_mnist(root, train_count=6, test_count=4):
    rng = np.random.default_rng(0)
    parts = {}
    for prefix, count in (("train", train_count), ("t10k", test_count)):
        parts[prefix] = (rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
                         rng.integers(0, 10, count, dtype=np.uint8))
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"), parts[prefix][0])
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"), parts[prefix][1])
    return parts


def test_fashion_mnist_loads_from_a_directory_of_idx_files(tmp_path):
    parts = write_fashion_mnist(str(tmp_path))
    data = load_fashion_mnist(str(tmp_path))
    assert np.array_equal(data.train_images, parts["train"][0]) and np.array_equal(data.test_labels, parts["t10k"][1])
    assert data.train_labels.dtype == np.int64


def test_fashion_mnist_directory_can_come_from_the_environment(tmp_path, monkeypatch):
    write_fashion_mnist(str(tmp_path))
    monkeypatch.setenv("OTO_FASHION_MNIST_DIR", str(tmp_path))
    assert load_fashion_mnist().train_images.shape == (6, 28, 28)


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path):
    with pytest.raises(DatasetNotInstalledError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


def test_the_mnist_pickle_layout_loads_as_uint8_with_train_and_validation_joined(tmp_path):
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (n, 784)) for n in (5, 3, 2)]
    labels = [rng.integers(0, 10, n) for n in (5, 3, 2)]
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as handle:  # the package's layout: float32 pixel / 256, three (x, y) parts
        pickle.dump(tuple(((p / 256).astype(np.float32), y) for p, y in zip(pixels, labels)), handle)
    data = load_mnist(str(path))
    assert np.array_equal(data.train_images.reshape(8, 784), np.concatenate(pixels[:2]))
    assert np.array_equal(data.test_images.reshape(2, 784), pixels[2])
    assert data.train_labels.tolist() == np.concatenate(labels[:2]).tolist()


def write_bbc(root, sizes):
    for name, size in sizes.items():
        os.makedirs(os.path.join(root, name))
        for index in range(size):
            with open(os.path.join(root, name, f"{index:03d}.txt"), "w", encoding="latin-1") as handle:
                handle.write(f"{name} article {index} \xa3")


def test_bbc_news_split_is_stratified_disjoint_and_fixed_by_the_seed(tmp_path):
    write_bbc(str(tmp_path), {"business": 10, "sport": 5})
    news = load_bbc_news(str(tmp_path), test_fraction=0.2, seed=3)
    assert news.classes == ("business", "sport")
    assert np.bincount(news.test_labels).tolist() == [2, 1] and np.bincount(news.train_labels).tolist() == [8, 4]
    assert not set(news.train_texts) & set(news.test_texts) and "\xa3" in news.train_texts[0]
    assert load_bbc_news(str(tmp_path), test_fraction=0.2, seed=3).test_texts == news.test_texts
    assert any(load_bbc_news(str(tmp_path), test_fraction=0.2, seed=s).test_texts != news.test_texts
               for s in range(4, 9))


def test_bbc_news_rejects_an_empty_test_fraction(tmp_path):
    with pytest.raises(ValueError, match="test_fraction"):
        load_bbc_news(str(tmp_path), test_fraction=0.0)


# -- the installed data (skipped where it is not installed) ------------------------------------------
def installed(locate):
    try:
        return locate()
    except DatasetNotInstalledError as error:
        pytest.skip(str(error))


def pixel_mean_and_std(images: np.ndarray):
    """Mean and standard deviation of the pixels scaled to [0, 1], from a histogram (fast, exact sums)."""
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    return round(mean, 4), round(np.sqrt((counts * values ** 2).sum() / counts.sum() - mean ** 2), 4)


def test_the_installed_fashion_mnist_has_its_official_sizes_balanced_classes_and_pixel_statistics():
    data = load_fashion_mnist(installed(fashion_mnist_dir))
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert np.bincount(data.train_labels).tolist() == [6000] * 10
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    assert pixel_mean_and_std(data.train_images) == (0.2860, 0.3530)  # the normalisation constants in common use


@pytest.mark.slow  # unpickling 70,000 float images takes about 10 s
def test_the_installed_mnist_pickle_gives_the_official_bytes():
    data = load_mnist(installed(mnist_pickle_path))
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]  # the official first training labels
    assert pixel_mean_and_std(data.train_images) == (0.1307, 0.3081)  # the normalisation constants in common use


def test_the_installed_bbc_news_has_2225_articles_in_5_classes():
    news = load_bbc_news(installed(bbc_news_dir))
    assert news.classes == ("business", "entertainment", "politics", "sports", "tech")
    total = np.bincount(np.concatenate([news.train_labels, news.test_labels]))
    assert total.tolist() == [510, 386, 417, 511, 401]
    assert np.bincount(news.test_labels).tolist() == [102, 77, 83, 102, 80]
