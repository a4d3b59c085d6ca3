"""Image arrays: checks (shape, dtype, range, finiteness), conversion to [0, 1], the validation split."""

from __future__ import annotations

import numpy as np

from aejax.checks import check_finite
from aejax.errors import DataError


def _check_image_shape(name: str, images: np.ndarray) -> None:
    if images.ndim not in (3, 4) or min(images.shape[1:], default=0) < 1:
        raise DataError(f"{name} must have shape (N, H, W) or (N, H, W, C), got {images.shape}")


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W[, C]) in [0, 255] -> float32 in [0, 1], with checks on dtype and shape."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DataError(f"images must be uint8 in [0, 255], got dtype {images.dtype}")
    _check_image_shape("images", images)
    return images.astype(np.float32) / 255.0


def check_unit_images(name: str, images: np.ndarray) -> None:
    """Raises DataError naming `name` unless images are float (N, H, W[, C]), finite, in [0, 1]."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{name} must be floating-point pixels in [0, 1], got dtype {images.dtype}")
    _check_image_shape(name, images)
    check_finite(name, images, DataError)
    if images.size and (images.min() < 0 or images.max() > 1):
        raise DataError(f"{name} must lie in [0, 1], found values in [{images.min()}, {images.max()}]")


def unit_float_images(name: str, images: np.ndarray) -> np.ndarray:
    """float32 (N, H, W[, C]) in [0, 1] from uint8 images (scaled by 1/255) or checked float images."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return to_unit_float(images)
    check_unit_images(name, images)
    return images.astype(np.float32, copy=False)


def train_validation_split(images: np.ndarray, num_validation: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """The chapter's split: all but the last `num_validation` rows train, the rest validate."""
    if not 0 < num_validation < len(images):
        raise ValueError(
            f"num_validation must be in 1..{len(images) - 1} for {len(images)} images, got {num_validation}"
        )
    return images[:-num_validation], images[-num_validation:]
