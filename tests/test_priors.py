"""The VampPrior and the IWAE training objective (issue 20's first rungs)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax.errors import ConfigError
from aejax.evaluation import metrics
from aejax.models import conv, mlp, priors, registry, vae
from aejax.training import fit, population

VAMP = priors.VampPrior(mlp.MLP(hidden_sizes=(32,), latent_dim=3, image_shape=(8, 8)), num_pseudo_inputs=6)
PARAMS = VAMP.init(jax.random.key(0))
# Spread the pseudo-inputs' posteriors so that the mixture has distinct, narrow components.
PARAMS["encoder"]["mean"]["kernel"] = PARAMS["encoder"]["mean"]["kernel"] * 8.0
PARAMS["encoder"]["log_var"]["bias"] = PARAMS["encoder"]["log_var"]["bias"] - 2.0
PARAMS["prior"]["pseudo_inputs"] = jax.random.uniform(jax.random.key(1), (6, 8, 8))


def _direct_log_prior(params, z):
    mean, log_var = VAMP.prior_components(params)
    log_n = -0.5 * jnp.sum((z[..., None, :] - mean) ** 2 / jnp.exp(log_var) + log_var + jnp.log(2 * jnp.pi), axis=-1)
    return jax.nn.logsumexp(log_n, axis=-1) - jnp.log(6.0)


def test_the_vamp_prior_is_the_mixture_of_the_encoders_posteriors_at_the_pseudo_inputs():
    mean, log_var = VAMP.prior_components(PARAMS)
    expected = vae.encode(
        VAMP.base, {k: v for k, v in PARAMS.items() if k != "prior"}, PARAMS["prior"]["pseudo_inputs"]
    )
    chex.assert_trees_all_close((mean, log_var), expected, rtol=1e-6)
    assert float(jnp.std(mean, axis=0).min()) > 0.1  # the components differ
    z = jax.random.normal(jax.random.key(2), (4, 5, 3)) * 2.0
    # The matmul expansion against the direct sum: float32 cancellation on quadratic terms of
    # ~1e2 at most here, so 1e-4 nats absolute plus 1e-5 relative.
    np.testing.assert_allclose(priors.log_density(VAMP, PARAMS, z), _direct_log_prior(PARAMS, z), rtol=1e-5, atol=1e-4)


def test_the_vamp_prior_and_its_marginals_are_densities_and_its_samples_follow_it():
    one = priors.VampPrior(mlp.MLP(hidden_sizes=(16,), latent_dim=1, image_shape=(4, 4)), 5)
    params = one.init(jax.random.key(3))
    params["encoder"]["mean"]["kernel"] = params["encoder"]["mean"]["kernel"] * 10.0
    params["prior"]["pseudo_inputs"] = jax.random.uniform(jax.random.key(4), (5, 4, 4))
    step = 40.0 / 40_000
    grid = jnp.asarray(np.arange(-20.0, 20.0, step) + step / 2, jnp.float32)[:, None]
    # Midpoint sums over [-20, 20] of a mixture of Gaussians inside [-10, 10] with sd >= 0.3:
    # error far below 1e-4.
    assert float(jnp.sum(jnp.exp(priors.log_density(one, params, grid))) * step) == pytest.approx(1.0, abs=1e-4)
    assert float(jnp.sum(jnp.exp(priors.marginal_log_densities(one, params, grid))) * step) == pytest.approx(
        1.0, abs=1e-4
    )
    # 20,000 samples: their mean and variance match the mixture's within 5 standard errors.
    samples = np.asarray(priors.sample(one, params, jax.random.key(5), 20_000))[:, 0]
    density = np.exp(np.asarray(priors.log_density(one, params, grid))) * step
    g = np.asarray(grid[:, 0])
    mixture_mean = np.sum(density * g)
    mixture_var = np.sum(density * (g - mixture_mean) ** 2)
    assert abs(samples.mean() - mixture_mean) < 5 * np.sqrt(mixture_var / 20_000)
    assert abs(samples.var() / mixture_var - 1) < 5 * np.sqrt(2 / 20_000) + 0.01


def test_a_vamp_model_is_scored_with_its_prior_everywhere():
    x = jax.random.uniform(jax.random.key(6), (16, 8, 8))
    key = jax.random.key(7)
    # IWAE with one draw: log p(x|z) + log p(z) - log q(z|x) with the mixture prior, by hand.
    mean, log_var = vae.encode(VAMP, PARAMS, x)
    z = vae.sample_latent(jax.random.fold_in(key, 0), mean, log_var)
    log_q = -0.5 * jnp.sum(log_var + (z - mean) ** 2 / jnp.exp(log_var) + jnp.log(2 * jnp.pi), axis=-1)
    expected = metrics.log_likelihood(VAMP, PARAMS, x, z) + _direct_log_prior(PARAMS, z) - log_q
    # Identical draws; float32 rounding on values of ~ -50 nats and the expansion's 1e-4.
    np.testing.assert_allclose(metrics.iwae_bound(VAMP, PARAMS, x, key, 1), expected, rtol=1e-5, atol=2e-4)
    # The ELBO uses the same sampled KL term: with one draw it is the one-draw IWAE bound.
    np.testing.assert_allclose(metrics.elbo(VAMP, PARAMS, x, key, 1), expected, rtol=1e-5, atol=2e-4)
    # The training loss (one draw from `key` itself) is -ELBO / pixels with the same terms.
    batch = vae.batch_metrics(VAMP, PARAMS, x, jax.random.fold_in(key, 0))
    np.testing.assert_allclose(batch["loss"] * 64, -expected, rtol=1e-5, atol=2e-4)
    # The bound tightens with k, and the prior matters: the standard prior scores other numbers.
    bounds = [float(jnp.mean(metrics.iwae_bound(VAMP, PARAMS, x, key, k))) for k in (1, 10, 100)]
    assert bounds[0] < bounds[1] < bounds[2]
    standard = float(jnp.mean(metrics.iwae_bound(VAMP.base, PARAMS, x, key, 100)))
    assert abs(standard - bounds[2]) > 0.1
    # KL per dimension against each dimension's marginal: its MC estimate is finite and, for
    # these spread components, positive in every dimension.
    per_dim = metrics.kl_per_dim(VAMP, PARAMS, x, jax.random.key(8), chunk_size=5)  # 5 does not divide 16
    assert per_dim.shape == (3,) and bool(jnp.all(jnp.isfinite(per_dim)))
    with pytest.raises(ValueError, match="needs a key"):
        metrics.kl_per_dim(VAMP, PARAMS, x)
    # Generation draws from the mixture.
    chex.assert_shape(vae.generate(VAMP, PARAMS, jax.random.key(9), 4), (4, 8, 8))


def test_vamp_models_are_described_and_rebuilt_and_their_settings_checked():
    for model in (VAMP, priors.VampPrior(conv.Conv(latent_dim=4, image_shape=(8, 8, 3)), 3)):
        description = registry.to_dict(model)
        assert description["prior"] == "vamp" and registry.from_dict(description) == model
        vae.check_params(model, model.init(jax.random.key(0)))
    assert "prior" not in registry.to_dict(mlp.MLP())  # records of standard-prior runs are unchanged
    config = fit.Config().replace(prior="vamp", num_pseudo_inputs=7)
    assert config.model.build((28, 28)) == priors.VampPrior(mlp.MLP(), 7)
    with pytest.raises(ConfigError, match="num_pseudo_inputs"):
        fit.Config().replace(prior="vamp", num_pseudo_inputs=0)
    with pytest.raises(ConfigError, match="prior"):
        fit.Config().replace(prior="exemplar")


def test_iwae_training_objective_is_the_sampled_elbo_with_one_draw_and_tightens_with_more():
    model = mlp.MLP(hidden_sizes=(32,), latent_dim=3, image_shape=(8, 8))
    params = model.init(jax.random.key(10))
    x = jax.random.uniform(jax.random.key(11), (8, 8, 8))
    keys = jax.random.split(jax.random.key(12), 400)

    @functools.partial(jax.jit, static_argnums=(0, 1))
    def losses(objective, samples):
        return jax.vmap(lambda k: vae.batch_metrics(model, params, x, k, objective=objective, samples=samples)["loss"])(
            keys
        )

    elbo, iwae_1 = np.asarray(losses("elbo", 1)), np.asarray(losses("iwae", 1))
    # K = 1: the ELBO with a sampled KL term. Same draws as the closed-form ELBO; their difference
    # (the KL estimate's noise) averages to 0 over 400 keys within 4 standard errors.
    difference = iwae_1 - elbo
    assert np.all(np.abs(difference.mean(axis=0)) < 4 * difference.std(axis=0) / np.sqrt(400) + 1e-6)
    assert float(np.abs(difference).max()) > 1e-4  # and they are not the same numbers
    # The bound tightens with K (Burda et al., Thm 1): the mean loss falls, by far more than its noise.
    means = [float(np.mean(losses("iwae", k))) for k in (1, 5, 50)]
    assert means[0] > means[1] > means[2]
    # With K draws the ELBO objective averages them: its expectation is unchanged.
    elbo_5 = np.asarray(losses("elbo", 5))
    assert abs(float(elbo_5.mean() - elbo.mean())) < 4 * float(elbo.std()) / np.sqrt(elbo.size)
    with pytest.raises(ValueError, match="objective"):
        vae.batch_metrics(model, params, x, keys[0], objective="vimco")
    with pytest.raises(ConfigError, match="train_samples"):
        fit.Config().replace(train_samples=0)


def test_iwae_trained_vamp_model_trains_and_validates_with_its_objective(subset_dir):
    from aejax import data

    images, _ = data.load_fashion_mnist("train", subset_dir)
    config = fit.Config().replace(
        prior="vamp",
        num_pseudo_inputs=20,
        objective="iwae",
        train_samples=5,
        epochs=3,
        batch_size=60,
        num_validation=120,
        hidden_sizes=(64,),
        recipe="adam",
        num_seeds=2,
    )
    result = fit.fit(config, images, progress=False)
    val_loss = result.history["val_loss"]  # (members, epochs)
    assert val_loss.shape == (2, 3) and np.all(np.isfinite(val_loss))
    assert np.all(val_loss[:, -1] < val_loss[:, 0])
    assert isinstance(result.model, priors.VampPrior)
    # The pseudo-inputs train: they moved from their initial values.
    initial = result.model.init(population.member_keys([42])["init"][0])["prior"]["pseudo_inputs"]
    moved = np.asarray(result.member_params(0)["prior"]["pseudo_inputs"]) - np.asarray(initial)
    assert float(np.abs(moved).max()) > 1e-3
