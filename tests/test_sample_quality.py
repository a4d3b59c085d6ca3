"""Sample quality: the in-project classifier, the Fréchet distance and precision/recall."""

import dataclasses
import json
import re

import jax
import numpy as np
import pytest
import scipy.linalg

from aejax import data
from aejax.evaluation import sample_quality


def test_frechet_distance_is_the_closed_form_between_gaussian_fits():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 5))
    b = rng.normal(size=(3000, 5)) @ np.diag([1.0, 2.0, 0.5, 1.0, 3.0]) + 1.5
    assert sample_quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    mean_a, mean_b, cov_a, cov_b = a.mean(0), b.mean(0), np.cov(a.T), np.cov(b.T)
    # The same formula with an eigen-decomposition for the matrix root (both float64).
    root_a = scipy.linalg.sqrtm(cov_a).real
    cross = scipy.linalg.sqrtm(root_a @ cov_b @ root_a).real
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * cross)
    assert sample_quality.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    # And the population value of these two Gaussians, within sampling error.
    population = 5 * 1.5**2 + sum((s - 1.0) ** 2 for s in (1.0, 2.0, 0.5, 1.0, 3.0))
    assert sample_quality.frechet_distance(a, b) == pytest.approx(population, rel=0.05)
    with pytest.raises(ValueError, match="features must be"):
        sample_quality.frechet_distance(a, b[:, :3])


def test_precision_and_recall_see_quality_and_coverage_separately():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(1500, 4)).astype(np.float32)
    same = rng.normal(size=(1500, 4)).astype(np.float32)
    result = sample_quality.precision_recall(real, same, chunk_size=256)  # 256 does not divide 1500
    assert result["precision"] > 0.8 and result["recall"] > 0.8
    # Mode collapse: samples from one corner are precise but cover little of the data.
    collapsed = (0.3 * rng.normal(size=(1500, 4)) + 0.5).astype(np.float32)
    result = sample_quality.precision_recall(real, collapsed, chunk_size=256)
    assert result["precision"] > 0.9 and result["recall"] < 0.3
    # Samples off the data: neither.
    assert sample_quality.precision_recall(real, same + 10.0) == {"precision": 0.0, "recall": 0.0}
    # By brute force on a small set: the k-th neighbour radii and the membership.
    small, other = real[:60], same[:50]
    d_rr = ((small[:, None] - small[None]) ** 2).sum(-1)
    d_gr = ((other[:, None] - small[None]) ** 2).sum(-1)
    d_gg = ((other[:, None] - other[None]) ** 2).sum(-1)
    r_real, r_gen = np.sort(d_rr, axis=1)[:, 3], np.sort(d_gg, axis=1)[:, 3]
    expected = {
        "precision": float(np.mean(np.any(d_gr <= r_real[None], axis=1))),
        "recall": float(np.mean(np.any(d_gr.T <= r_gen[None], axis=1))),
    }
    # Shares of 50 and 60 points, averaged in float32: exact within 1e-7.
    assert sample_quality.precision_recall(small, other, chunk_size=7) == pytest.approx(expected, abs=1e-6)


def test_bad_labels_are_refused_before_training():
    x = np.zeros((10, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"labels must be \(N,\) = \(10,\) non-negative integers"):
        sample_quality.train_classifier(x, np.arange(9), jax.random.key(0), epochs=1)
    with pytest.raises(ValueError, match="labels must be"):
        sample_quality.train_classifier(x, np.linspace(0, 1, 10), jax.random.key(0), epochs=1)


def test_a_trained_classifier_scores_a_models_samples_through_the_clis(tmp_path, capsys):
    from experiments import evaluate_vae, train_classifier, vae_fashion_mnist

    classifier_out, vae_out, eval_out = tmp_path / "classifier", tmp_path / "vae", tmp_path / "eval"
    digits = ["--dataset", "digits"]
    assert train_classifier.main([*digits, "--epochs", "20", "--batch-size", "64", "--out", str(classifier_out)]) == 0
    trained = json.loads((classifier_out / "metrics.json").read_text())
    assert trained["test_accuracy"] > 0.9 and trained["image_shape"] == [8, 8]
    train_flags = ["--epochs", "3", "--batch-size", "64", "--num-validation", "200", "--out", str(vae_out)]
    assert vae_fashion_mnist.main([*digits, *train_flags]) == 0
    evaluation = ["--params", str(vae_out / "params.msgpack"), "--iwae-k", "1,5", "--elbo-samples", "1"]
    classifier = ["--classifier", str(classifier_out / "classifier.msgpack"), "--num-samples", "1500"]
    assert evaluate_vae.main([*evaluation, *classifier, "--out", str(eval_out)]) == 0
    results = json.loads((eval_out / "metrics.json").read_text())
    assert results["sample_quality"]["classifier_test_accuracy"] == trained["test_accuracy"]
    assert results["frechet_distance"] > 0 and 0 <= results["precision"] <= 1 and 0 <= results["recall"] <= 1
    # Real training images score what a perfect generator would: far better than a 3-epoch model.
    reference = trained["training_images_vs_test"]
    assert results["sample_quality"]["training_images_vs_test"] == reference
    assert reference["frechet_distance"] < 0.5 * results["frechet_distance"] and reference["recall"] > results["recall"]
    assert "Fréchet distance" in capsys.readouterr().out
    # The classifier as the file holds it: its features tell real digits from noise.
    loaded = sample_quality.load(classifier_out / "classifier.msgpack")
    assert loaded.accuracy == trained["test_accuracy"] and loaded.reference == reference
    x_test = data.unit_float_images("digits", data.load("digits", "test").images)
    noise = sample_quality.scores(loaded, x_test, np.random.default_rng(2).uniform(size=x_test.shape))
    assert reference["frechet_distance"] < 0.2 * noise["frechet_distance"]
    assert reference["precision"] > 0.5 > noise["precision"]
    with pytest.raises(ValueError, match="classifier takes"):
        sample_quality.scores(loaded, x_test, np.zeros((10, 28, 28), np.float32))

    # A file that is not a classifier, or one for other images, is refused before any work.
    for path, message in [
        (vae_out / "params.msgpack", "holds no classifier"),
        (
            tmp_path / "other.msgpack",
            r"--classifier takes images of shape \(28, 28\), the model in --params makes \(8, 8\)",
        ),
    ]:
        if path.name == "other.msgpack":
            written = sample_quality.load(classifier_out / "classifier.msgpack")
            sample_quality.save(path, dataclasses.replace(written, image_shape=(28, 28)), {})
        with pytest.raises(SystemExit) as exit_info:
            evaluate_vae.main([*evaluation, "--classifier", str(path), "--out", str(tmp_path / "refused")])
        assert exit_info.value.code == 2 and re.search(message, capsys.readouterr().err)
        assert not (tmp_path / "refused").exists()
