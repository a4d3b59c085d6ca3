import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import data
from aejax.evaluation import metrics
from aejax.models import kernels, mlp, vae

MODEL = mlp.MLP()
PARAMS = MODEL.init(jax.random.key(0))


@pytest.fixture(scope="module")
def images(subset_dir):
    x, _ = data.load_fashion_mnist("test", subset_dir)
    return jnp.asarray(data.to_unit_float(x[:32]))


def test_chapter_loss_is_scaled_negative_elbo(images):
    key = jax.random.key(1)
    # Same draw (fold_in(key, 0)); float32 sums over 784 pixels: relative 1e-5.
    chapter = 784 * vae.loss(MODEL, PARAMS, images, jax.random.fold_in(key, 0))
    assert float(chapter) == pytest.approx(-float(jnp.mean(metrics.elbo(MODEL, PARAMS, images, key))), rel=1e-5)


def test_iwae_with_one_sample_is_the_sampled_elbo(images):
    key = jax.random.key(2)
    mean, log_var = vae.encode(MODEL, PARAMS, images)
    z = vae.sample_latent(jax.random.fold_in(key, 0), mean, log_var)
    log_q = -0.5 * jnp.sum(log_var + (z - mean) ** 2 / jnp.exp(log_var) + jnp.log(2 * jnp.pi), axis=-1)
    log_p_z = -0.5 * jnp.sum(z**2 + jnp.log(2 * jnp.pi), axis=-1)
    expected = metrics.log_likelihood(MODEL, PARAMS, images, z) + log_p_z - log_q
    # Identical draws and formulas; float32 rounding on values of ~ -550 nats.
    np.testing.assert_allclose(metrics.iwae_bound(MODEL, PARAMS, images, key, 1), expected, rtol=1e-5)
    # Its expectation is the analytic-KL ELBO: over 200 keys the averages agree within 4 standard errors.
    keys = jax.random.split(jax.random.key(3), 200)
    iwae_1 = jax.vmap(lambda k: metrics.iwae_bound(MODEL, PARAMS, images[:4], k, 1))(keys)
    elbo_1 = jax.vmap(lambda k: metrics.elbo(MODEL, PARAMS, images[:4], k))(keys)
    difference = np.asarray(iwae_1 - elbo_1)
    assert np.all(np.abs(difference.mean(axis=0)) < 4 * difference.std(axis=0) / np.sqrt(200) + 1e-3)


def test_iwae_bound_grows_with_k(images):
    key = jax.random.key(4)
    bounds = {k: float(jnp.mean(metrics.iwae_bound(MODEL, PARAMS, images, key, k))) for k in (1, 10, 100)}
    average_elbo = float(jnp.mean(metrics.elbo(MODEL, PARAMS, images, key, num_samples=100)))
    # E[L_k] is non-decreasing in k (Burda et al., Thm 1); with 32 images the estimate's noise is
    # far below the gaps measured here (several nats), so strict order is a safe check.
    assert bounds[1] < bounds[10] < bounds[100]
    assert bounds[100] > average_elbo


def test_chunked_equals_unchunked(images):
    key = jax.random.key(5)
    whole = metrics.iwae_bound(MODEL, PARAMS, images, key, 30, chunk_size=30)
    for chunk_size in (7, 1):  # 7 does not divide 30: the last chunk is masked
        # Same draws; only the log-sum-exp order differs (float32, relative 1e-6).
        np.testing.assert_allclose(
            metrics.iwae_bound(MODEL, PARAMS, images, key, 30, chunk_size=chunk_size), whole, rtol=1e-6
        )


def test_extreme_images_are_finite():
    extremes = jnp.stack([jnp.zeros((28, 28)), jnp.ones((28, 28))])
    key = jax.random.key(6)
    chex.assert_tree_all_finite(
        [metrics.elbo(MODEL, PARAMS, extremes, key), metrics.iwae_bound(MODEL, PARAMS, extremes, key, 50)]
    )


def test_bad_sample_counts():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metrics.iwae_bound(MODEL, PARAMS, jnp.zeros((1, 28, 28)), jax.random.key(0), 0)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        metrics.elbo(MODEL, PARAMS, jnp.zeros((1, 28, 28)), jax.random.key(0), num_samples=-2)


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli"])
def test_iwae_converges_to_exact_likelihood_on_a_1d_latent_model(likelihood):
    # A tiny VAE with a 1-D latent: log p(x) = log ∫ p(x|z) N(z; 0, 1) dz is computed exactly on a
    # fine grid (Riemann sum over [-10, 10], 4,001 points; the integrand is smooth and negligible
    # outside). A deliberately poor encoder makes the ELBO gap large, so convergence is visible.
    model = mlp.MLP(hidden_sizes=(8,), latent_dim=1)
    params = model.init(jax.random.key(7))
    uniform = jax.random.uniform(jax.random.key(8), (3, 28, 28))
    x = uniform if likelihood == "continuous_bernoulli" else (uniform > 0.7).astype(jnp.float32)
    grid = jnp.linspace(-10.0, 10.0, 4001)
    log_px_given_z = jax.jit(
        jax.vmap(lambda z: metrics.log_likelihood(model, params, x, jnp.broadcast_to(z, (3, 1)), likelihood))
    )(grid)
    log_joint = log_px_given_z - 0.5 * grid[:, None] ** 2 - 0.5 * jnp.log(2 * jnp.pi)
    exact = jax.scipy.special.logsumexp(log_joint, axis=0, b=grid[1] - grid[0])
    gaps = [
        float(
            jnp.max(
                exact
                - metrics.iwae_bound(model, params, x, jax.random.key(9), k, chunk_size=500, likelihood=likelihood)
            )
        )
        for k in (1, 100, 5000)
    ]
    # Measured gaps (nats): bernoulli 8.0, 0.58, -0.002; continuous Bernoulli 1.9, 0.17, -0.007. At
    # k = 5000 the bound is within its Monte Carlo noise (~0.01) of the exact value; a negative gap
    # larger than 0.02 would mean it overshoots.
    assert gaps[0] > gaps[1] > abs(gaps[2])
    assert -0.02 < gaps[2] < 0.05


def _constant_posterior_params(mean_bias: float, log_var_bias: float, latent: int = 3) -> tuple[mlp.MLP, vae.Params]:
    model = mlp.MLP(hidden_sizes=(4,), latent_dim=latent)
    params = model.init(jax.random.key(10))
    for head, bias in (("mean", mean_bias), ("log_var", log_var_bias)):
        params["encoder"][head] = {"kernel": jnp.zeros((4, latent)), "bias": jnp.full(latent, bias)}
    return model, params


@pytest.mark.parametrize("log_var", [-95.0, -40.0, 30.0])
def test_iwae_is_finite_and_exact_for_extreme_log_variances(log_var):
    # q(z|x) = N(0.3, exp(log_var)) for every x. Computed from eps, log q = -1/2 sum(log_var + eps² +
    # log 2 pi), so each weight is exact; from (z - mean)² exp(-log_var) it was NaN below ~-90.
    model, params = _constant_posterior_params(0.3, log_var)
    x = jnp.zeros((2, 28, 28))
    key = jax.random.key(11)
    bound = metrics.iwae_bound(model, params, x, key, 1)
    eps = jax.random.normal(jax.random.fold_in(key, 0), (2, 3))
    z = 0.3 + jnp.exp(log_var / 2) * eps
    expected = (
        metrics.log_likelihood(model, params, x, z)
        - 0.5 * jnp.sum(z**2 + np.log(2 * np.pi), axis=-1)
        + 0.5 * jnp.sum(log_var + eps**2 + np.log(2 * np.pi), axis=-1)
    )
    chex.assert_tree_all_finite(bound)
    np.testing.assert_allclose(bound, expected, rtol=1e-5)  # the same terms; float32 on values of ~1e2


def test_k_beyond_int32_sample_indices_is_refused():
    with pytest.raises(ValueError, match="k must be at most 1073741824"):
        metrics.iwae_bound(MODEL, PARAMS, jnp.zeros((1, 28, 28)), jax.random.key(0), 2**31)


def test_kl_per_dim_and_active_units_of_a_constructed_encoder():
    # hidden_0 and hidden_1 copy pixel 0 through SELU's linear part (x >= 0: selu(x) = scale * x), so
    # E_q[z_l | x] = a_l * scale² * x_0: its variance over the images is a_l² scale⁴ Var(x_0).
    a = jnp.asarray([0.0, 0.2, 0.5, 2.0])
    model = mlp.MLP(hidden_sizes=(3, 3), latent_dim=4)
    params = model.init(jax.random.key(12))
    copy = lambda n_in: {"kernel": jnp.zeros((n_in, 3)).at[0, 0].set(1.0), "bias": jnp.zeros(3)}  # noqa: E731
    params["encoder"]["hidden_0"], params["encoder"]["hidden_1"] = copy(784), copy(3)
    params["encoder"]["mean"] = {"kernel": jnp.zeros((3, 4)).at[0].set(a), "bias": jnp.zeros(4)}
    params["encoder"]["log_var"] = {"kernel": jnp.zeros((3, 4)), "bias": jnp.asarray([0.0, -1.0, 0.5, 0.0])}
    x0 = jnp.linspace(0.0, 1.0, 101)
    x = jnp.zeros((101, 28, 28)).at[:, 0, 0].set(x0)
    scale = kernels.SELU_SCALE
    expected_activity = np.asarray(a) ** 2 * scale**4 * float(jnp.var(x0))
    np.testing.assert_allclose(metrics.latent_activity(model, params, x), expected_activity, rtol=1e-5)
    # Activities 0, 0.0041, 0.026, 0.41 (scale⁴ Var(x_0) = 0.104): two units above 0.01, three above 0.003.
    assert (
        int(metrics.active_units(model, params, x)) == 2
        and int(metrics.active_units(model, params, x, threshold=0.003)) == 3
    )
    means = np.asarray(a)[None] * scale**2 * np.asarray(x0)[:, None]
    log_var = np.asarray([0.0, -1.0, 0.5, 0.0])
    expected_kl = 0.5 * np.mean(means**2 + np.exp(log_var) - 1 - log_var, axis=0)
    np.testing.assert_allclose(metrics.kl_per_dim(model, params, x), expected_kl, rtol=1e-5, atol=1e-7)
    rate = metrics.rate_and_distortion(model, params, x, jax.random.key(13))["rate"]
    assert float(rate) == pytest.approx(float(np.sum(expected_kl)), rel=1e-5)


@pytest.mark.parametrize("a, s", [(2.0, 0.5), (0.5, 1.0)])
def test_mutual_information_of_a_linear_gaussian_encoder(a, s):
    # x ~ N(0, 1), q(z|x) = N(a x, s²): I(x; z) = 1/2 log(1 + a²/s²) (1.417 and 0.112 nats here).
    n = 4000
    x = jax.random.normal(jax.random.key(14), (n, 1))
    exact = 0.5 * np.log1p(a**2 / s**2)
    estimates = [
        float(metrics.mutual_information_from_posterior(jax.random.key(k), a * x, jnp.full((n, 1), np.log(s**2))))
        for k in range(3)
    ]
    # Measured (float64 reference and this code): within 0.01 of the exact value at n = 4,000;
    # 0.03 leaves room for the seed and fails for a wrong formula (e.g. a missing entropy term).
    assert abs(np.mean(estimates) - exact) < 0.03
    # Every q(z|x) the prior: no information. The estimate's noise is that of the sampled cross term,
    # sd 1/2 sqrt(2 L / n) = 0.019 for L = 3; four of them bound it.
    collapsed = metrics.mutual_information_from_posterior(jax.random.key(0), jnp.zeros((n, 3)), jnp.zeros((n, 3)))
    assert abs(float(collapsed)) < 4 * 0.5 * np.sqrt(2 * 3 / n)
