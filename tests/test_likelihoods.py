"""Observation models: the continuous Bernoulli is a normalised, stable density; binarization is
unbiased and reproducible; the Bernoulli kind is the textbook cross-entropy."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.integrate import trapezoid

from aejax.models import likelihoods

# Logits from saturated to λ = 1/2 ± 1e-6 (logit ± 4e-6) and across the series/closed-form switch at 0.1.
LOGITS = np.concatenate(
    [
        [-80.0, -20.0, -5.0, -1.0, -0.1000001, -0.0999999, -0.01, -4e-6, 0.0, 4e-6, 0.05],
        [0.0999999, 0.1000001, 0.3, 1.0, 3.0, 12.0, 80.0],
    ]
)


def _reference_log_normalizer(logits: np.ndarray) -> np.ndarray:
    # float64, straight from the paper: C(λ) = 2 atanh(1 - 2λ) / (1 - 2λ), and C = 2 at λ = 1/2.
    logits = np.asarray(logits, np.float64)
    lam = 1.0 / (1.0 + np.exp(-logits))
    with np.errstate(all="ignore"):  # both branches are computed everywhere; each is used where it is exact
        c = np.where(np.abs(lam - 0.5) < 1e-12, 2.0, 2.0 * np.arctanh(1.0 - 2.0 * lam) / (1.0 - 2.0 * lam))
        # Far from 1/2, 1 - 2λ loses precision in float64 too; there log C = log|l| - log tanh(|l|/2).
        c_far = np.log(np.abs(logits)) - np.log(np.tanh(np.abs(logits) / 2.0))
        return np.where(np.abs(logits) > 5, c_far, np.log(c))


def test_log_normalizer_matches_a_float64_reference_near_and_far_from_one_half():
    got = np.asarray(likelihoods.continuous_bernoulli_log_normalizer(jnp.asarray(LOGITS, jnp.float32)), np.float64)
    # float32 evaluation of values up to log 80 ≈ 4.4: a few float32 ulps (1e-6 relative).
    np.testing.assert_allclose(got, _reference_log_normalizer(LOGITS.astype(np.float32)), rtol=2e-6, atol=2e-7)
    assert got[LOGITS == 0.0][0] == pytest.approx(np.log(2.0), abs=1e-7)


@pytest.mark.parametrize("logit", [-30.0, -4.0, -0.5, -1e-3, 0.0, 2e-6, 0.07, 0.5, 2.0, 9.0, 30.0])
def test_continuous_bernoulli_integrates_to_one(logit):
    x = np.linspace(0.0, 1.0, 200_001)
    density = np.exp(
        np.asarray(
            likelihoods.log_prob(
                "continuous_bernoulli", jnp.full(x.shape, logit, jnp.float32), jnp.asarray(x, jnp.float32)
            ),
            np.float64,
        )
    )
    # Trapezoid on 2e5 intervals; for |logit| = 30 the density is 30 e^{-30 x}: the rule's error is
    # ~ h² f''/12 ≈ 2e-8 relative, and float32 log-densities add ~1e-6 relative.
    assert trapezoid(density, x) == pytest.approx(1.0, abs=2e-5)


def test_continuous_bernoulli_mean_matches_the_density():
    x = np.linspace(0.0, 1.0, 100_001)
    for logit in (-6.0, -0.2, -0.02, 0.0, 1e-5, 0.09, 0.11, 3.0):
        density = np.exp(
            np.asarray(
                likelihoods.log_prob("continuous_bernoulli", jnp.full(x.shape, logit), jnp.asarray(x, jnp.float32)),
                np.float64,
            )
        )
        mean = float(likelihoods.mean("continuous_bernoulli", jnp.float32(logit)))
        assert mean == pytest.approx(trapezoid(x * density, x), abs=1e-5)  # quadrature + float32


def test_continuous_bernoulli_is_finite_with_finite_gradients_everywhere():
    logits = jnp.asarray(np.concatenate([LOGITS, [-1e4, 1e4, -3e38, 3e38]]), jnp.float32)
    targets = jnp.linspace(0.0, 1.0, logits.size)
    value, grad = jax.value_and_grad(lambda l: jnp.sum(likelihoods.log_prob("continuous_bernoulli", l, targets)))(
        logits
    )
    chex.assert_tree_all_finite([value, grad])
    chex.assert_tree_all_finite(jax.grad(lambda l: jnp.sum(likelihoods.mean("continuous_bernoulli", l)))(logits))


def test_continuous_bernoulli_gradient_is_smooth_across_the_series_switch():
    # d/dl log C must be continuous at |l| = 0.1, where the series hands over to the closed form.
    grad = jax.vmap(jax.grad(likelihoods.continuous_bernoulli_log_normalizer))
    below, above = grad(jnp.asarray([0.0999999, -0.0999999])), grad(jnp.asarray([0.1000001, -0.1000001]))
    np.testing.assert_allclose(below, above, atol=2e-5)  # d/dl (l²/12) = 0.0167 at the switch


def test_bernoulli_kind_is_the_textbook_cross_entropy():
    logits = jax.random.normal(jax.random.key(0), (1000,)) * 8
    targets = jax.random.uniform(jax.random.key(1), (1000,))
    chex.assert_trees_all_close(
        likelihoods.log_prob("bernoulli", logits, targets),
        -optax.sigmoid_binary_cross_entropy(logits, targets),
        atol=2e-6,
        rtol=1e-6,
    )


def test_binarization_is_unbiased_and_reproducible():
    grey = jnp.linspace(0.0, 1.0, 11)
    draws = jax.vmap(lambda k: likelihoods.binarize(k, grey))(jax.random.split(jax.random.key(2), 20_000))
    assert set(np.unique(np.asarray(draws))) <= {0.0, 1.0}
    # 20,000 Bernoulli draws: standard error <= 0.5 / sqrt(2e4) = 0.0035; 5 of them is a safe bound.
    np.testing.assert_allclose(np.asarray(draws).mean(axis=0), grey, atol=5 * 0.0035)
    np.testing.assert_array_equal(draws[0, [0, -1]], [0.0, 1.0])  # 0 and 1 are kept exactly
    chex.assert_trees_all_equal(
        likelihoods.binarize(jax.random.key(3), grey), likelihoods.binarize(jax.random.key(3), grey)
    )
    a = likelihoods.binarize_for_evaluation(jnp.full((4, 28, 28), 0.5), "test")
    chex.assert_trees_all_equal(a, likelihoods.binarize_for_evaluation(jnp.full((4, 28, 28), 0.5), "test"))
    assert not np.array_equal(a, likelihoods.binarize_for_evaluation(jnp.full((4, 28, 28), 0.5), "validation"))


def test_entropy_floor_is_the_best_cross_entropy():
    targets = jax.random.uniform(jax.random.key(4), (500,))
    # The cross-entropy -log_prob("bernoulli") is smallest when sigmoid(logit) = target, where it equals H(target).
    exact = -likelihoods.log_prob("bernoulli", jax.scipy.special.logit(targets), targets)
    chex.assert_trees_all_close(likelihoods.bernoulli_entropy(targets), exact, atol=2e-6)
    assert (
        float(likelihoods.bernoulli_entropy(jnp.asarray(0.0)))
        == 0.0
        == float(likelihoods.bernoulli_entropy(jnp.asarray(1.0)))
    )


def test_unknown_kinds_are_named():
    with pytest.raises(ValueError, match="binarized images are scored as 'bernoulli'"):
        likelihoods.log_prob("binarized", jnp.zeros(1), jnp.zeros(1))
    with pytest.raises(ValueError, match="likelihood must be one of"):
        likelihoods.mean("gaussian", jnp.zeros(1))
