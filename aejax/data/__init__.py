"""Data sources, NumPy arrays out (no JAX state): `sources` (every data set by name: `--dataset`),
`fashion_mnist` (IDX, Debian, TFDS), `idx` (the file format), `synthetic` (the chapter's 3-D data),
and `images` (checks and conversions)."""

from aejax.data.fashion_mnist import DEBIAN_FASHION_MNIST_DIR, FASHION_MNIST_CLASSES, load_fashion_mnist
from aejax.data.idx import read_idx
from aejax.data.images import check_unit_images, to_unit_float, train_validation_split, unit_float_images
from aejax.data.sources import Dataset, load
from aejax.data.synthetic import synthetic_3d

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "load_fashion_mnist",
    "read_idx",
    "check_unit_images",
    "to_unit_float",
    "train_validation_split",
    "unit_float_images",
    "synthetic_3d",
    "Dataset",
    "load",
]
