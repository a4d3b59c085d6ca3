"""Image data sets by name (`--dataset`): images (N, H, W) or (N, H, W, C) and labels, checked.

| `--dataset` | what | splits |
|---|---|---|
| `fashion_mnist` | Fashion-MNIST (IDX files, Debian's package or TFDS: `fashion_mnist.py`) | official |
| `digits` | scikit-learn's bundled 8 x 8 digits (1,797 images, no network) | held out |
| `npz:PATH` | array `images_key` (default "images"), optional `labels_key` ("labels") | held out |
| `npy:PATH` | one array of images | held out |
| `folder:PATH` | one PNG/JPEG per image; labels from class sub-folders, if any | held out |
| `tfds:NAME` | a prepared TFDS image data set (`mnist`, `cifar10`, …) | official |

"held out": a source without a test split is shuffled once with a fixed seed, and its last
`test_holdout` images (default: one in six, as Fashion-MNIST's 10,000 of 70,000) are the test
split, so training and evaluation see the same split. Images are uint8 in [0, 255] or floats in
[0, 1]; a last axis of size 1 is dropped ((N, H, W, 1) -> (N, H, W)). Every split is checked
before it is returned: one shape, a supported dtype, values in range, at least one image, labels
matching the images; a `DataError` names the source otherwise.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from aejax.config import check_types, fail, option
from aejax.data.fashion_mnist import FASHION_MNIST_CLASSES, TFDS_ERRORS, load_fashion_mnist
from aejax.errors import DataError, DataNotFoundError

KINDS = ("fashion_mnist", "digits", "npz:", "npy:", "folder:", "tfds:")
SPLITS = ("train", "test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_HOLDOUT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A split's images, labels (None when the source has none) and class names (None: unnamed)."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    source: str


@dataclasses.dataclass(frozen=True)
class Settings:
    """What names a data set and its splits (the scripts' data flags; recorded in params files)."""

    dataset: str = option(
        "fashion_mnist",
        "the images: fashion_mnist, digits (scikit-learn's 8x8), npz:PATH, "
        "npy:PATH, folder:PATH (PNG/JPEG, class sub-folders) or tfds:NAME (aejax/data/sources.py)",
    )
    data_dir: str | None = option(
        None, "fashion_mnist: folder with the four IDX .gz files (default: Debian's package, else TFDS)"
    )
    images_key: str = option("images", "npz: the images' array")
    labels_key: str = option("labels", "npz: the labels' array (optional in the file)")
    test_holdout: int | None = option(
        None, "digits, npz, npy, folder: images held out as the test split (default: one in six)"
    )

    def __post_init__(self):
        check_types(self)
        check_name(self.dataset)
        if self.data_dir is not None and self.dataset != "fashion_mnist":
            fail("data_dir", f"applies to --dataset fashion_mnist only, got --dataset {self.dataset}")
        for name, default in (("images_key", "images"), ("labels_key", "labels")):
            if getattr(self, name) != default and not self.dataset.startswith("npz:"):
                fail(name, f"applies to --dataset npz only, got --dataset {self.dataset}")
        if self.test_holdout is not None:
            if self.dataset == "fashion_mnist" or self.dataset.startswith("tfds:"):
                fail("test_holdout", f"applies to data sets without a test split, and {self.dataset} has one")
            if self.test_holdout < 1:
                fail("test_holdout", f"must be a positive integer, got {self.test_holdout}")

    def load(self, split: str) -> Dataset:
        return self.load_splits((split,))[split]

    def load_splits(self, splits: tuple[str, ...] = SPLITS) -> dict[str, Dataset]:
        return load_splits(
            self.dataset,
            splits,
            data_dir=self.data_dir,
            images_key=self.images_key,
            labels_key=self.labels_key,
            test_holdout=self.test_holdout,
        )


def check_name(dataset: str) -> None:
    """DataError unless `dataset` is one of the names in the module docstring (no I/O)."""
    if dataset in ("fashion_mnist", "digits"):
        return
    kind, _, rest = dataset.partition(":")
    if f"{kind}:" not in KINDS or not rest:
        raise DataError(
            f"--dataset must be fashion_mnist, digits, npz:PATH, npy:PATH, folder:PATH or tfds:NAME, got {dataset!r}"
        )


def load(
    dataset: str,
    split: str,
    *,
    data_dir: str | None = None,
    images_key: str = "images",
    labels_key: str = "labels",
    test_holdout: int | None = None,
) -> Dataset:
    """The `split` ("train" or "test") of `dataset`, checked (see the module docstring)."""
    settings = {"data_dir": data_dir, "images_key": images_key, "labels_key": labels_key, "test_holdout": test_holdout}
    return load_splits(dataset, (split,), **settings)[split]


def load_splits(
    dataset: str,
    splits: tuple[str, ...] = SPLITS,
    *,
    data_dir: str | None = None,
    images_key: str = "images",
    labels_key: str = "labels",
    test_holdout: int | None = None,
) -> dict[str, Dataset]:
    """The `splits` of `dataset`, checked, by name; a source without a test split is read and checked
    once for all of them."""
    check_name(dataset)
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kind, _, rest = dataset.partition(":")
    if kind in ("fashion_mnist", "tfds"):
        loaded = {}
        for split in splits:
            images, labels = load_fashion_mnist(split, data_dir) if kind == "fashion_mnist" else _tfds(rest, split)
            loaded[split] = (check_images(dataset, f"{split} images", images), labels)
        names = FASHION_MNIST_CLASSES if kind == "fashion_mnist" else None
    else:
        if kind == "digits":
            images, labels, names = _digits()
        elif kind == "npz":
            (images, labels), names = _npz(Path(rest), images_key, labels_key), None
        elif kind == "npy":
            images, labels, names = _array(Path(rest)), None, None
        else:
            images, labels, names = _folder(Path(rest))
        images = check_images(dataset, "images", images)  # all of them: a bad image is named whatever its split
        loaded = {split: _holdout(dataset, images, labels, split, test_holdout) for split in splits}
    return {
        split: Dataset(images, _check_labels(dataset, split, labels, len(images)), names, dataset)
        for split, (images, labels) in loaded.items()
    }


def _check_labels(dataset: str, split: str, labels, count: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{dataset}: the {split} labels must be integers of shape ({count},), got {labels.dtype} {labels.shape}"
        )
    return labels


def check_images(source: str, what: str, images: np.ndarray) -> np.ndarray:
    """Images (N, H, W) or (N, H, W, C), uint8 or float32 in [0, 1]; DataError naming `source` and
    `what` ("train images", …) for any other shape, dtype or range, or no images."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or min(images.shape[1:], default=0) < 1:
        raise DataError(f"{source}: the {what} must have shape (N, H, W) or (N, H, W, C), got {images.shape}")
    if len(images) == 0:
        raise DataError(f"{source}: holds no {what}")
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(f"{source}: the {what} must be uint8 in [0, 255] or floats in [0, 1], got dtype {images.dtype}")
    if not np.all(np.isfinite(images)):
        raise DataError(f"{source}: the {what} hold {int(np.sum(~np.isfinite(images)))} NaN/inf value(s)")
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 1:
        raise DataError(
            f"{source}: the {what} must lie in [0, 1] (floats) or be uint8, found values in [{low:g}, {high:g}]"
        )
    return images.astype(np.float32, copy=False)


def _holdout(
    source: str, images: np.ndarray, labels: np.ndarray | None, split: str, test_holdout: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    count = len(images)
    held = count // 6 if test_holdout is None else test_holdout
    if not 0 < held < count:
        raise DataError(f"{source}: --test-holdout must be in 1..{count - 1} for its {count} images, got {held}")
    order = np.random.default_rng(_HOLDOUT_SEED).permutation(count)
    chosen = order[count - held :] if split == "test" else order[: count - held]
    return images[chosen], None if labels is None else labels[chosen]


def _digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64), tuple(map(str, range(10)))


def _check_file(path: Path, kind: str) -> None:
    if not path.is_file():
        raise DataNotFoundError(f"--dataset {kind}:{path}: no such file")


def _npz(path: Path, images_key: str, labels_key: str) -> tuple[np.ndarray, np.ndarray | None]:
    _check_file(path, "npz")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if images_key not in archive:
                raise DataError(
                    f"--dataset npz:{path} has no array {images_key!r} (--images-key); it holds {sorted(archive.files)}"
                )
            return archive[images_key], archive[labels_key] if labels_key in archive else None
    except (OSError, ValueError) as err:
        raise DataError(f"--dataset npz:{path} is not a readable .npz archive ({err})") from None


def _array(path: Path) -> np.ndarray:
    _check_file(path, "npy")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"--dataset npy:{path} is not a readable .npy array ({err})") from None


def _folder(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    from PIL import Image

    if not path.is_dir():
        raise DataNotFoundError(f"--dataset folder:{path}: no such folder")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    folders = [path / name for name in classes] or [path]
    files = [
        (label, f)
        for label, folder in enumerate(folders)
        for f in sorted(folder.iterdir())
        if f.suffix.lower() in _IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(
            f"--dataset folder:{path} holds no .png/.jpg images" + (" in its class sub-folders" if classes else "")
        )
    arrays = []
    for _, file in files:
        try:
            with Image.open(file) as image:
                arrays.append(np.asarray(image.convert("L" if image.mode in ("1", "L", "P", "I;16") else "RGB")))
        except OSError as err:
            raise DataError(f"--dataset folder:{path}: {file.name} is not a readable image ({err})") from None
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise DataError(f"--dataset folder:{path}: the images must share one shape, found {shapes[:4]}")
    labels = np.asarray([label for label, _ in files], np.int64) if classes else None
    return np.stack(arrays), labels, tuple(classes) if classes else None


def _tfds(name: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, download=False)
    except TFDS_ERRORS as err:
        raise DataNotFoundError(
            f"--dataset tfds:{name}: no prepared TFDS copy of split {split!r} ({str(err).splitlines()[0] if str(err) else type(err).__name__}); prepare "
            "it once with TensorFlow installed (tfds build), or export it to an .npz"
        ) from None
    examples = [source[i] for i in range(len(source))]
    if not examples or "image" not in examples[0]:
        raise DataError(f"--dataset tfds:{name}: split {split!r} holds no 'image' feature")
    images = np.stack([np.asarray(ex["image"]) for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples]) if "label" in examples[0] else None
    return images, labels
