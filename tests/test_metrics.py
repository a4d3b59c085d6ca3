import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import data, metrics, vae

PARAMS = vae.init(jax.random.key(0))


@pytest.fixture(scope="module")
def images(subset_dir):
    x, _ = data.load_fashion_mnist("test", subset_dir)
    return jnp.asarray(data.to_unit_float(x[:32]))


def test_chapter_loss_is_scaled_negative_elbo(images):
    key = jax.random.key(1)
    # Same draw (fold_in(key, 0)); float32 sums over 784 pixels: relative 1e-5.
    chapter = 784 * vae.loss(PARAMS, images, jax.random.fold_in(key, 0))
    assert float(chapter) == pytest.approx(-float(jnp.mean(metrics.elbo(PARAMS, images, key))), rel=1e-5)


def test_iwae_with_one_sample_is_the_sampled_elbo(images):
    key = jax.random.key(2)
    mean, log_var = vae.encode(PARAMS, images)
    z = vae.sample_latent(jax.random.fold_in(key, 0), mean, log_var)
    log_q = -0.5 * jnp.sum(log_var + (z - mean) ** 2 / jnp.exp(log_var) + jnp.log(2 * jnp.pi), axis=-1)
    log_p_z = -0.5 * jnp.sum(z**2 + jnp.log(2 * jnp.pi), axis=-1)
    expected = metrics.log_likelihood(PARAMS, images, z) + log_p_z - log_q
    # Identical draws and formulas; float32 rounding on values of ~ -550 nats.
    np.testing.assert_allclose(metrics.iwae_bound(PARAMS, images, key, 1), expected, rtol=1e-5)
    # Its expectation is the analytic-KL ELBO: over 200 keys the averages agree within 4 standard errors.
    keys = jax.random.split(jax.random.key(3), 200)
    iwae_1 = jax.vmap(lambda k: metrics.iwae_bound(PARAMS, images[:4], k, 1))(keys)
    elbo_1 = jax.vmap(lambda k: metrics.elbo(PARAMS, images[:4], k))(keys)
    difference = np.asarray(iwae_1 - elbo_1)
    assert np.all(np.abs(difference.mean(axis=0)) < 4 * difference.std(axis=0) / np.sqrt(200) + 1e-3)


def test_iwae_bound_grows_with_k(images):
    key = jax.random.key(4)
    bounds = {k: float(jnp.mean(metrics.iwae_bound(PARAMS, images, key, k))) for k in (1, 10, 100)}
    average_elbo = float(jnp.mean(metrics.elbo(PARAMS, images, key, num_samples=100)))
    # E[L_k] is non-decreasing in k (Burda et al., Thm 1); with 32 images the estimate's noise is
    # far below the gaps measured here (several nats), so strict order is a safe check.
    assert bounds[1] < bounds[10] < bounds[100]
    assert bounds[100] > average_elbo


def test_chunked_equals_unchunked(images):
    key = jax.random.key(5)
    whole = metrics.iwae_bound(PARAMS, images, key, 30, chunk_size=30)
    for chunk_size in (7, 1):  # 7 does not divide 30: the last chunk is masked
        # Same draws; only the log-sum-exp order differs (float32, relative 1e-6).
        np.testing.assert_allclose(metrics.iwae_bound(PARAMS, images, key, 30, chunk_size=chunk_size), whole, rtol=1e-6)


def test_extreme_images_are_finite():
    extremes = jnp.stack([jnp.zeros((28, 28)), jnp.ones((28, 28))])
    key = jax.random.key(6)
    chex.assert_tree_all_finite([metrics.elbo(PARAMS, extremes, key), metrics.iwae_bound(PARAMS, extremes, key, 50)])


def test_bad_sample_counts():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metrics.iwae_bound(PARAMS, jnp.zeros((1, 28, 28)), jax.random.key(0), 0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        metrics.elbo(PARAMS, jnp.zeros((1, 28, 28)), jax.random.key(0), num_samples=-2)


def test_iwae_converges_to_exact_likelihood_on_a_1d_latent_model():
    # A tiny VAE with a 1-D latent: log p(x) = log ∫ p(x|z) N(z; 0, 1) dz is computed exactly on a
    # fine grid (trapezoid over [-10, 10], 20,001 points; the integrand is smooth and negligible
    # outside). A deliberately poor encoder makes the ELBO gap large, so convergence is visible.
    params = vae.init(jax.random.key(7), vae.VAEConfig(hidden_sizes=(8,), latent_dim=1))
    x = (jax.random.uniform(jax.random.key(8), (3, 28, 28)) > 0.7).astype(jnp.float32)
    grid = jnp.linspace(-10.0, 10.0, 20_001)
    log_px_given_z = jax.vmap(lambda z: metrics.log_likelihood(params, x, jnp.broadcast_to(z, (3, 1))))(grid)
    log_joint = log_px_given_z - 0.5 * grid[:, None] ** 2 - 0.5 * jnp.log(2 * jnp.pi)
    dz = grid[1] - grid[0]
    exact = jax.scipy.special.logsumexp(log_joint, axis=0, b=dz)  # Riemann sum (ends are ~0)
    gaps = [float(jnp.max(exact - metrics.iwae_bound(params, x, jax.random.key(9), k))) for k in (1, 100, 20_000)]
    assert gaps[0] > gaps[1] > gaps[2] >= -1e-2  # a lower bound, approaching from below
    assert gaps[2] < 0.05  # within 0.05 nats of the exact log-likelihood at k = 20,000
