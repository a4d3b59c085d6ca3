import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import data
from aejax.errors import RunDirError
from aejax.evaluation import evaluator
from aejax.models import mlp


@pytest.fixture(scope="module")
def images(subset_dir):
    x, _ = data.load_fashion_mnist("test", subset_dir)
    return jnp.asarray(data.to_unit_float(x[:40]))


def _draws(batch: jax.Array, key: jax.Array) -> jax.Array:
    """A value per image from the image and the batch's key: shows which key each batch got."""
    return jnp.sum(batch, axis=(1, 2)) + jax.random.uniform(key, (len(batch),))


def test_batched_keys_batch_i_by_fold_in_and_drops_the_padding(images):
    key = jax.random.key(0)
    values = evaluator.batched(_draws, images[:7], key, 3, "test")  # 3 batches, the last holds 1 image
    expected = np.concatenate([_draws(images[i : i + 3], jax.random.fold_in(key, i // 3))[: 7 - i] for i in (0, 3, 6)])
    # An image's value depends only on it and its batch's key (a (3,) draw in both): bit for bit.
    np.testing.assert_array_equal(values, expected)
    assert values.shape == (7,)


def test_a_stopped_loop_continues_with_only_the_batches_left(images, tmp_path):
    key, path = jax.random.key(1), tmp_path / "progress.npz"
    whole = evaluator.batched(_draws, images, key, 8, "whole")  # 5 batches
    calls = []

    def stopping(batch, batch_key):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _draws(batch, batch_key)

    progress = evaluator.Progress(path, resume=False, every=0.0)  # saves after every batch
    with pytest.raises(KeyboardInterrupt):
        evaluator.batched(stopping, images, key, 8, "stopped", progress, "bound")
    resumed = evaluator.Progress(path, resume=True)
    assert resumed.batches(8) == 2 and resumed.invocations == 2
    calls.clear()
    values = evaluator.batched(
        lambda b, k: calls.append(1) or _draws(b, k), images, key, 8, "resumed", resumed, "bound"
    )
    assert len(calls) == 3  # batches 2, 3 and 4 only
    np.testing.assert_array_equal(values, whole)  # the same function on the same batches and keys


def test_a_progress_file_of_partial_batches_is_refused(tmp_path):
    progress = evaluator.Progress(tmp_path / "progress.npz", resume=False)
    progress.update("bound", np.zeros(12, np.float32), complete=True)
    with pytest.raises(RunDirError, match="bound holds 12 values, not whole batches of 8"):
        evaluator.batched(_draws, jnp.zeros((40, 2, 2)), jax.random.key(0), 8, "x", progress, "bound")
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(RunDirError, match="not a readable evaluation progress file"):
        evaluator.Progress(tmp_path / "torn.npz", resume=True)


def test_evaluate_model_reports_each_bound_as_the_mean_of_its_per_image_values(images):
    model = mlp.MLP()
    params = model.init(jax.random.key(2))
    settings = evaluator.Settings(iwae_ks=(1, 50), elbo_samples=2, batch_size=16, seed=3)
    results, per_image = evaluator.evaluate_model(settings, model, params, images, "bernoulli")
    assert sorted(per_image) == ["negative_elbo", "negative_iwae_k1", "negative_iwae_k50"]
    assert all(values.shape == (len(images),) for values in per_image.values())
    bounds = {"negative_elbo": results["test_negative_elbo_nats"]}
    bounds |= {f"negative_iwae_k{k}": v for k, v in results["test_negative_iwae_nats"].items()}
    for name, summary in bounds.items():
        # float64 mean of the same float32 values (stats.mean_and_standard_error)
        assert summary["mean"] == pytest.approx(float(np.mean(per_image[name], dtype=np.float64)), rel=1e-12)
    # The IWAE bound tightens with k (Burda et al., Thm 1): on an untrained model the gap is tens of
    # nats per image, far above the noise of 40 images.
    assert np.mean(per_image["negative_iwae_k50"]) < np.mean(per_image["negative_iwae_k1"])
    diagnostics = results["diagnostics"]
    assert 0 <= diagnostics["active_units"] <= model.latent_dim
    assert diagnostics["mutual_information_nats"] <= diagnostics["mutual_information_max_nats"] + 1e-6


def test_a_broken_model_stops_before_the_importance_sampled_pass(images, monkeypatch):
    model = mlp.MLP()
    params = jax.tree.map(lambda leaf: jnp.full_like(leaf, jnp.nan), model.init(jax.random.key(4)))
    monkeypatch.setattr(evaluator.metrics, "iwae_bound", lambda *args, **kwargs: pytest.fail("IWAE pass reached"))
    with pytest.raises(FloatingPointError, match="-ELBO is not finite for 40 test image"):
        evaluator.evaluate_model(evaluator.Settings(batch_size=20), model, params, images, "bernoulli")
