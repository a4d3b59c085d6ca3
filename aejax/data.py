"""Data sources: the chapter's synthetic 3-D set and Fashion-MNIST (NumPy out, no JAX state)."""

from __future__ import annotations

import gzip
import importlib.util
import os
import zlib
from pathlib import Path

import numpy as np

from aejax.checks import check_finite
from aejax.errors import DataError, DataNotFoundError

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), then the number of dimensions.
_IDX_UBYTE = 0x08


def synthetic_3d(
    m: int = 60, *, seed: int = 4, w1: float = 0.1, w2: float = 0.3, noise: float = 0.1
) -> np.ndarray:
    """The chapter's `generate_3d_data(m)` after `np.random.seed(seed)`, centred.

    Uses the legacy NumPy RNG (`RandomState`) so values equal the chapter's exactly.
    Returns: (m, 3) float32 with zero column means.
    """
    if m < 2:
        raise ValueError(f"m must be an integer >= 2, got {m!r}")
    rng = np.random.RandomState(seed)
    angles = rng.rand(m) * 3 * np.pi / 2 - 0.5
    data = np.empty((m, 3))
    data[:, 0] = np.cos(angles) + np.sin(angles) / 2 + noise * rng.randn(m) / 2
    data[:, 1] = np.sin(angles) * 0.7 + noise * rng.randn(m) / 2
    data[:, 2] = data[:, 0] * w1 + data[:, 1] * w2 + noise * rng.randn(m)
    return (data - data.mean(axis=0)).astype(np.float32)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one gzipped IDX file of unsigned bytes (the MNIST format).

    Returns: uint8 array whose shape is the file's declared dimensions.
    Raises: DataNotFoundError (a FileNotFoundError), or DataError naming the file for any corrupt content.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file not found: {path}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file ({err}); re-download or reinstall it") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise DataError(
            f"{path}: wrong IDX magic number: expected 0x0000 0x08 <ndim> (unsigned-byte IDX), "
            f"found {raw[:4].hex(' ') or 'an empty file'}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions but the file is {len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header} bytes: truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


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
    except (RuntimeError, OSError, ValueError, KeyError, AssertionError) as err:
        if importlib.util.find_spec("tensorflow") is None:
            raise DataNotFoundError(
                "No local Fashion-MNIST found and TFDS has no prepared copy; preparing it needs "
                "TensorFlow, which is not installed.\n" + _sources_help()
            ) from err
        try:
            source = tfds.data_source("fashion_mnist", split=split, download=True)
        except (RuntimeError, OSError, ValueError, KeyError, AssertionError) as download_err:
            raise DataNotFoundError(
                f"TFDS could not download/prepare fashion_mnist ({download_err}).\n" + _sources_help()
            ) from download_err
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(ex["image"], np.uint8).reshape(28, 28) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], np.uint8)
    return images, labels


def load_fashion_mnist(
    split: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
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
            raise DataNotFoundError(f"data_dir {str(data_dir)!r} does not exist or is not a directory.\n" + _sources_help())
        return _load_idx_split(split, data_dir)
    if (DEBIAN_FASHION_MNIST_DIR / _IDX_FILES[split][0]).is_file():
        return _load_idx_split(split, DEBIAN_FASHION_MNIST_DIR)
    return _load_tfds_split(split)


def _check_image_shape(name: str, images: np.ndarray) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{name} must have shape (N, 28, 28), got {images.shape}")


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) in [0, 255] -> float32 in [0, 1], with checks on dtype and shape."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
    _check_image_shape("images", images)
    return images.astype(np.float32) / 255.0


def check_unit_images(name: str, images: np.ndarray) -> None:
    """Raises DataError naming `name` unless images are float (N, 28, 28), finite, in [0, 1]."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{name} must be floating-point pixels in [0, 1], got dtype {images.dtype}")
    _check_image_shape(name, images)
    check_finite(name, images, DataError)
    if images.size and (images.min() < 0 or images.max() > 1):
        raise DataError(f"{name} must lie in [0, 1], found values in [{images.min()}, {images.max()}]")


def unit_float_images(name: str, images: np.ndarray) -> np.ndarray:
    """float32 (N, 28, 28) in [0, 1] from uint8 images (scaled by 1/255) or checked float images."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return to_unit_float(images)
    check_unit_images(name, images)
    return images.astype(np.float32, copy=False)


def train_validation_split(
    images: np.ndarray, num_validation: int = 5000
) -> tuple[np.ndarray, np.ndarray]:
    """The chapter's split: all but the last `num_validation` rows train, the rest validate."""
    if not 0 < num_validation < len(images):
        raise ValueError(
            f"num_validation must be in 1..{len(images) - 1} for {len(images)} images, got {num_validation}"
        )
    return images[:-num_validation], images[-num_validation:]
