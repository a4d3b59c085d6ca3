import gzip
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from aejax import data


def _chapter_generate_3d_data(m, w1=0.1, w2=0.3, noise=0.1):
    # The chapter's code verbatim in behaviour: global legacy RNG seeded with 4.
    np.random.seed(4)
    angles = np.random.rand(m) * 3 * np.pi / 2 - 0.5
    x = np.empty((m, 3))
    x[:, 0] = np.cos(angles) + np.sin(angles) / 2 + noise * np.random.randn(m) / 2
    x[:, 1] = np.sin(angles) * 0.7 + noise * np.random.randn(m) / 2
    x[:, 2] = x[:, 0] * w1 + x[:, 1] * w2 + noise * np.random.randn(m)
    return x - x.mean(axis=0, keepdims=0)


@pytest.mark.parametrize("m", [60, 7])
def test_synthetic_3d_equals_the_chapter(m):
    x = data.synthetic_3d(m)
    assert x.dtype == np.float32 and x.shape == (m, 3)
    # Exact up to the float32 cast (one rounding: relative 2**-24).
    np.testing.assert_allclose(x, _chapter_generate_3d_data(m), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-6)


def test_synthetic_3d_rejects_tiny_m():
    with pytest.raises(ValueError, match="m must be"):
        data.synthetic_3d(1)


def test_subset_is_real_fashion_mnist(subset_dir):
    train_x, train_y = data.load_fashion_mnist("train", subset_dir)
    test_x, test_y = data.load_fashion_mnist("test", subset_dir)
    assert train_x.shape == (720, 28, 28) and test_x.shape == (180, 28, 28)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(train_y, minlength=10), 72)
    np.testing.assert_array_equal(np.bincount(test_y, minlength=10), 18)
    # Real images: mostly-dark background with varied foreground, not constant or noise.
    assert 40 < train_x.mean() < 110 and train_x.max() == 255


def _copy_subset(subset_dir, tmp_path):
    for path in subset_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def _write_gz(path, payload: bytes):
    with gzip.open(path, "wb") as f:
        f.write(payload)


def test_truncated_idx_is_named(subset_dir, tmp_path):
    d = _copy_subset(subset_dir, tmp_path)
    raw = gzip.open(d / "train-images-idx3-ubyte.gz").read()
    _write_gz(d / "train-images-idx3-ubyte.gz", raw[:-100])
    with pytest.raises(ValueError, match="train-images.*truncated or corrupt"):
        data.load_fashion_mnist("train", d)


def test_corrupt_gzip_is_named(subset_dir, tmp_path):
    d = _copy_subset(subset_dir, tmp_path)
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data")
    with pytest.raises(ValueError, match="t10k-labels.*not a readable gzip"):
        data.load_fashion_mnist("test", d)


def test_wrong_magic_is_named(subset_dir, tmp_path):
    d = _copy_subset(subset_dir, tmp_path)
    raw = gzip.open(d / "train-labels-idx1-ubyte.gz").read()
    _write_gz(d / "train-labels-idx1-ubyte.gz", b"\x00\x00\x0d" + raw[3:])  # 0x0D = float IDX
    with pytest.raises(ValueError, match="wrong IDX magic"):
        data.load_fashion_mnist("train", d)


def test_wrong_image_dimensions_are_named(subset_dir, tmp_path):
    d = _copy_subset(subset_dir, tmp_path)
    header = b"\x00\x00\x08\x03" + (180).to_bytes(4, "big") + (14).to_bytes(4, "big") + (56).to_bytes(4, "big")
    _write_gz(d / "t10k-images-idx3-ubyte.gz", header + bytes(180 * 14 * 56))
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28\), found \(180, 14, 56\)"):
        data.load_fashion_mnist("test", d)


def test_label_count_mismatch_is_named(subset_dir, tmp_path):
    d = _copy_subset(subset_dir, tmp_path)
    _write_gz(d / "t10k-labels-idx1-ubyte.gz", b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes(3))
    with pytest.raises(ValueError, match="180 images but 3 labels"):
        data.load_fashion_mnist("test", d)


def test_missing_dir_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)does not exist.*apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("train", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="lacks the Fashion-MNIST IDX file"):
        data.load_fashion_mnist("train", tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_fashion_mnist("validation", tmp_path)


def test_tfds_path_offline_with_mock_data(monkeypatch, tmp_path):
    monkeypatch.setattr(data.fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    with tfds.testing.mock_data(num_examples=12):
        images, labels = data.load_fashion_mnist("test")
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.max() <= 9


def test_no_source_at_all_lists_the_three_options(monkeypatch, tmp_path):
    monkeypatch.setattr(data.fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty-tfds"))
    with pytest.raises(FileNotFoundError) as info:
        data.load_fashion_mnist("train")
    message = str(info.value)
    assert "--data-dir" in message and "dataset-fashion-mnist" in message and "tfds-prepare" in message


def test_to_unit_float_and_split():
    images = np.full((10, 28, 28), 255, np.uint8)
    x = data.to_unit_float(images)
    assert x.dtype == np.float32 and x.max() == 1.0
    fit, val = data.train_validation_split(x, 3)
    assert fit.shape[0] == 7 and val.shape[0] == 3
    with pytest.raises(ValueError, match="uint8"):
        data.to_unit_float(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, H, W, C\)"):
        data.to_unit_float(np.zeros((2, 784), np.uint8))
    with pytest.raises(ValueError, match="num_validation"):
        data.train_validation_split(x, 10)
