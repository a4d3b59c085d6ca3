"""The bad-input catalogue through the VAE script: each case exits non-zero with a message naming
what was expected and what was found, and writes nothing."""

import gzip
import shutil

import jax
import numpy as np
import pytest

from aejax import data
from aejax.models import linear_ae
from experiments import vae_fashion_mnist


def _gz(path, payload: bytes):
    with gzip.open(path, "wb") as f:
        f.write(payload)


def _idx(*shape) -> bytes:
    return (
        b"\x00\x00\x08"
        + bytes([len(shape)])
        + b"".join(n.to_bytes(4, "big") for n in shape)
        + bytes(int(np.prod(shape)))
    )


def _missing_dir(d):
    shutil.rmtree(d)


def _no_idx_files(d):
    for path in d.iterdir():
        path.unlink()


def _truncated(d):
    raw = gzip.open(d / "train-images-idx3-ubyte.gz").read()
    _gz(d / "train-images-idx3-ubyte.gz", raw[:-100])


def _not_gzip(d):
    (d / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b garbage")


def _wrong_magic(d):
    _gz(d / "train-images-idx3-ubyte.gz", b"\x00\x00\x0d\x03" + bytes(12))


def _wrong_image_shape(d):
    _gz(d / "train-images-idx3-ubyte.gz", _idx(720, 32, 32))


def _count_mismatch(d):
    _gz(d / "train-labels-idx1-ubyte.gz", _idx(700))


CORRUPTIONS = [
    (_missing_dir, "does not exist or is not a directory"),
    (_no_idx_files, "lacks the Fashion-MNIST IDX file(s)"),
    (_truncated, "train-images-idx3-ubyte.gz: IDX header declares shape (720, 28, 28)"),
    (_not_gzip, "train-labels-idx1-ubyte.gz: not a readable gzip file"),
    (_wrong_magic, "wrong IDX magic number: expected 0x0000 0x08 <ndim>"),
    (_wrong_image_shape, "expected images of shape (N, 28, 28), found (720, 32, 32)"),
    (_count_mismatch, "720 images but 700 labels"),
]


@pytest.mark.parametrize("corrupt, message", CORRUPTIONS, ids=[c.__name__.strip("_") for c, _ in CORRUPTIONS])
def test_bad_data_dir(subset_dir, tmp_path, capsys, corrupt, message):
    d = tmp_path / "data"
    shutil.copytree(subset_dir, d)
    corrupt(d)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        vae_fashion_mnist.main(["--data-dir", str(d), "--epochs", "1", "--out", str(out)])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--batch-size", "601"], "--batch-size must be at most the 600 training examples, got 601"),
        (["--learning-rate", "-1"], "--learning-rate must be a finite number > 0, got -1.0"),
        (["--keep-checkpoints", "0"], "--keep-checkpoints must be a positive integer, got 0"),
        (["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--recipe", "keras"], "invalid choice"),
        (["--epochs", "-1"], "--epochs must be a positive integer"),
        (["--batch-size", "5000"], "--batch-size must be at most the 600 training examples"),
        (["--num-validation", "720"], "--num-validation must be smaller than the 720"),
    ],
)
def test_bad_flags(subset_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        vae_fashion_mnist.main(["--data-dir", str(subset_dir), "--num-validation", "120", "--out", str(out), *flags])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_output_directory(subset_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(SystemExit) as info:
        vae_fashion_mnist.main(
            ["--data-dir", str(subset_dir), "--num-validation", "120", "--epochs", "1", "--out", str(blocker / "out")]
        )
    assert info.value.code == 2 and "is not a writable folder" in capsys.readouterr().err
    assert blocker.read_text() == "a file, not a directory"


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((4, 28, 28), np.uint8), "must be floating-point pixels in [0, 1], got dtype uint8"),
        (np.zeros((4, 784), np.float32), "must have shape (N, H, W) or (N, H, W, C), got (4, 784)"),
        (np.full((4, 28, 28), np.nan, np.float32), "must be finite, found 3136 NaN/inf value(s) among 3136"),
        (np.full((4, 28, 28), 255.0, np.float32), "must lie in [0, 1], found values in [255.0, 255.0]"),
    ],
)
def test_bad_image_arrays(images, message):
    with pytest.raises(ValueError) as info:
        data.check_unit_images("images", images)
    assert str(info.value) == "images " + message


def test_nonfinite_linear_ae_input():
    x = data.synthetic_3d(60)
    x[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"x must be finite, found 1 NaN/inf value\(s\) among 180"):
        linear_ae.train(x, key=jax.random.key(0))
    with pytest.raises(ValueError, match="images must be uint8"):
        data.to_unit_float(np.zeros((2, 28, 28), np.float64))
