"""Data sets by name (`--dataset`): every source's images and labels, its splits, and its refusals."""

import json

import numpy as np
import pytest
from PIL import Image

from aejax import data
from aejax.data import sources
from aejax.errors import ConfigError, DataError, DataNotFoundError
from experiments import evaluate_vae, vae_fashion_mnist
from tests.conftest import run_main


def test_digits_are_split_once_and_the_same_way_each_time():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert train.images.shape == (1498, 8, 8) and test.images.shape == (299, 8, 8)  # 1,797 = 5/6 + 1/6
    assert train.images.dtype == np.float32 and 0 <= train.images.min() and train.images.max() == 1
    np.testing.assert_array_equal(data.load("digits", "test").images, test.images)
    # Together the two splits are the 1,797 images, each once: a permutation, split in two.
    from sklearn.datasets import load_digits

    everything = (load_digits().images / 16.0).astype(np.float32)
    assert sorted(map(bytes, np.concatenate([train.images, test.images]))) == sorted(map(bytes, everything))
    assert sorted(set(train.labels)) == list(range(10)) and train.class_names == tuple("0123456789")


def test_npz_npy_and_folders_of_images(tmp_path):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", pictures=colour, classes=np.arange(60) % 3)
    train = data.load(f"npz:{tmp_path}/mine.npz", "train", images_key="pictures", labels_key="classes", test_holdout=12)
    test = data.load(f"npz:{tmp_path}/mine.npz", "test", images_key="pictures", labels_key="classes", test_holdout=12)
    assert train.images.shape == (48, 32, 32, 3) and test.images.shape == (12, 32, 32, 3)
    together = np.concatenate([train.images, test.images])
    assert sorted(map(bytes, together)) == sorted(map(bytes, colour))  # a permutation of the user's images
    np.testing.assert_array_equal(
        train.labels, [np.flatnonzero((colour == im).all(axis=(1, 2, 3)))[0] % 3 for im in train.images]
    )

    np.save(tmp_path / "grey.npy", rng.random((30, 5, 7, 1), dtype=np.float32))
    grey = data.load(f"npy:{tmp_path}/grey.npy", "train")
    assert grey.images.shape == (25, 5, 7) and grey.labels is None  # a channel axis of 1 is dropped

    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(
                tmp_path / "pets" / label / f"{i}.png"
            )
    pets = data.load(f"folder:{tmp_path}/pets", "train", test_holdout=2)
    assert pets.images.shape == (6, 6, 6, 3) and pets.class_names == ("cat", "dog")
    assert (
        sorted(pets.labels.tolist() + data.load(f"folder:{tmp_path}/pets", "test", test_holdout=2).labels.tolist())
        == [0] * 4 + [1] * 4
    )


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((10, 4, 4), np.int16), "must be uint8 in [0, 255] or floats in [0, 1], got dtype int16"),
        (np.full((10, 4, 4), 1.5, np.float32), "must lie in [0, 1] (floats) or be uint8, found values in [1.5, 1.5]"),
        (np.full((10, 4, 4), np.nan, np.float32), "hold 160 NaN/inf value(s)"),
        (np.zeros((10, 16), np.uint8), "must have shape (N, H, W) or (N, H, W, C), got (10, 16)"),
        (np.zeros((1, 4, 4), np.uint8), "--test-holdout must be in 1..0 for its 1 images, got 0"),
    ],
)
def test_bad_arrays_are_refused_naming_the_source(tmp_path, images, message):
    np.save(tmp_path / "bad.npy", images)
    with pytest.raises(DataError) as raised:
        data.load(f"npy:{tmp_path}/bad.npy", "train")
    assert message in str(raised.value) and f"npy:{tmp_path}/bad.npy" in str(raised.value)


def test_bad_sources_are_refused(tmp_path):
    with pytest.raises(DataError, match="--dataset must be fashion_mnist, digits, npz:PATH"):
        data.load("cifar", "train")
    with pytest.raises(DataNotFoundError, match="no such file"):
        data.load(f"npz:{tmp_path}/none.npz", "train")
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"has no array 'images' \(--images-key\); it holds \['x'\]"):
        data.load(f"npz:{tmp_path}/x.npz", "train")
    (tmp_path / "mixed").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "mixed" / "b.png")
    with pytest.raises(DataError, match=r"the images must share one shape, found \[\(4, 4\), \(5, 4\)\]"):
        data.load(f"folder:{tmp_path}/mixed", "train")
    with pytest.raises(ConfigError, match="data_dir applies to --dataset fashion_mnist only"):
        sources.Settings(dataset="digits", data_dir="/tmp")
    with pytest.raises(ConfigError, match="test_holdout applies to data sets without a test split"):
        sources.Settings(test_holdout=5)


def test_an_unprepared_tfds_data_set_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="--dataset tfds:mnist: no prepared TFDS copy"):
        data.load("tfds:mnist", "test")


def test_colour_images_of_ones_own_train_evaluate_and_resume_end_to_end(tmp_path, capsys):
    # 32 x 32 x 3 colour images in an .npz: a population of 2 conv VAEs, then its evaluation.
    rng = np.random.default_rng(2)
    blobs = np.clip(rng.normal(0.5, 0.2, (150, 1, 1, 3)) + rng.normal(0, 0.05, (150, 32, 32, 3)), 0, 1)
    np.savez(tmp_path / "colour.npz", images=blobs.astype(np.float32), labels=np.arange(150) % 2)
    out = tmp_path / "run"
    flags = [
        "--dataset",
        f"npz:{tmp_path}/colour.npz",
        "--model",
        "conv",
        "--channels",
        "8,16",
        "--num-seeds",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "25",
        "--num-validation",
        "25",
        "--out",
        str(out),
    ]
    code, err = run_main(vae_fashion_mnist.main, flags, capsys)
    assert code == 0, err
    code, err = run_main(
        vae_fashion_mnist.main, [*flags, "--epochs", "2", "--resume"], capsys
    )  # the last --epochs wins
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["invocations"] == 2
    assert all(len(values) == 2 for values in metrics["history"]["val_loss"])
    code, err = run_main(
        evaluate_vae.main,
        [
            "--params",
            str(out / "params.msgpack"),
            "--iwae-k",
            "1,10",
            "--elbo-samples",
            "2",
            "--out",
            str(tmp_path / "eval"),
        ],
        capsys,
    )
    assert code == 0, err
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert result["model"]["name"] == "conv" and result["model"]["image_shape"] == [32, 32, 3]
    assert result["num_test_images"] == 25 and len(result["members"]) == 2  # the held-out sixth of 150
    for row in result["members"]:  # the bound tightens with k
        assert row["test_negative_iwae_nats"]["10"]["mean"] <= row["test_negative_iwae_nats"]["1"]["mean"] + 1.0
    assert (tmp_path / "eval" / "vae_reconstructions_plot.png").stat().st_size > 0
    with Image.open(out / "vae_reconstructions_plot.png") as figure:  # colour images are drawn in colour
        pixels = np.asarray(figure.convert("RGB"), np.int16)
    assert np.abs(pixels[..., 0] - pixels[..., 2]).max() > 30
