"""Fashion-MNIST from, in order: a folder of IDX files, Debian's package, TFDS."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from aejax.data.idx import read_idx
from aejax.errors import DataError, DataNotFoundError

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# What TFDS raises for a data set that is unknown, not prepared or cannot be prepared here.
TFDS_ERRORS = (RuntimeError, OSError, ValueError, KeyError, AssertionError)
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _check_split(split: str) -> None:
    if split not in _IDX_FILES:
        raise ValueError(f"split must be one of {sorted(_IDX_FILES)}, got {split!r}")


def _load_idx_split(split: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    image_file, label_file = _IDX_FILES[split]
    missing = [name for name in (image_file, label_file) if not (data_dir / name).is_file()]
    if missing:
        raise DataNotFoundError(
            f"data_dir {str(data_dir)!r} lacks the Fashion-MNIST IDX file(s) {missing}; expected "
            f"{list(_IDX_FILES[split])} for split {split!r}"
        )
    images = read_idx(data_dir / image_file)
    labels = read_idx(data_dir / label_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{data_dir / image_file}: expected images of shape (N, 28, 28), found {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{data_dir / label_file}: expected labels of shape (N,), found {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{data_dir}: {len(images)} images but {len(labels)} labels in split {split!r}; the counts must match"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{data_dir / label_file}: labels must be in 0..9, found {int(labels.max())}")
    return images, labels


def _sources_help() -> str:
    return (
        "Fashion-MNIST can come from three places:\n"
        "  1. --data-dir / data_dir=DIR holding the four official IDX .gz files;\n"
        f"  2. Debian's package (root): 'apt-get install dataset-fashion-mnist' -> {DEBIAN_FASHION_MNIST_DIR};\n"
        "  3. TFDS 'fashion_mnist' (needs the network once, and TensorFlow to prepare it: "
        "pip install 'aejax[tfds-prepare]')."
    )


def _load_tfds_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    try:  # Serving prepared data needs no TensorFlow.
        source = tfds.data_source("fashion_mnist", split=split, download=False)
    except TFDS_ERRORS as err:
        if importlib.util.find_spec("tensorflow") is None:
            raise DataNotFoundError(
                "No local Fashion-MNIST found and TFDS has no prepared copy; preparing it needs "
                "TensorFlow, which is not installed.\n" + _sources_help()
            ) from err
        try:
            source = tfds.data_source("fashion_mnist", split=split, download=True)
        except TFDS_ERRORS as download_err:
            raise DataNotFoundError(
                f"TFDS could not download/prepare fashion_mnist ({download_err}).\n" + _sources_help()
            ) from download_err
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(ex["image"], np.uint8).reshape(28, 28) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], np.uint8)
    return images, labels


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads a Fashion-MNIST split.

    Source order: `data_dir` (IDX .gz files) if given; else Debian's
    /usr/share/datasets/fashion-mnist if present; else TFDS `fashion_mnist`.

    Args:
      split: "train" (60,000 images) or "test" (10,000).
      data_dir: optional directory with the four standard IDX `.gz` files.
    Returns:
      images (N, 28, 28) uint8 in [0, 255] and labels (N,) uint8 in 0..9.
    """
    _check_split(split)
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataNotFoundError(
                f"data_dir {str(data_dir)!r} does not exist or is not a directory.\n" + _sources_help()
            )
        return _load_idx_split(split, data_dir)
    if (DEBIAN_FASHION_MNIST_DIR / _IDX_FILES[split][0]).is_file():
        return _load_idx_split(split, DEBIAN_FASHION_MNIST_DIR)
    return _load_tfds_split(split)
