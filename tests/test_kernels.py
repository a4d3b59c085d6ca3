"""The tuned CPU forms equal their standard forms (values; derivatives bitwise, ties included)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aejax.models import kernels


def test_selu_matches_jax_selu():
    # No exact 0: jax.nn.selu's derivative there (a tie) changed across JAX versions; aejax's tie
    # value is pinned against jnp.maximum's below.
    x = jnp.linspace(-30.0, 30.0, 10000)
    # exp(x) - 1 instead of expm1: absolute error at most a few float32 ulps of alpha * scale ~ 1.76.
    chex.assert_trees_all_close(kernels.selu(x), jax.nn.selu(x), atol=5e-7, rtol=0)
    grads = jax.vmap(jax.grad(kernels.selu))(x)
    chex.assert_trees_all_close(grads, jax.vmap(jax.grad(jax.nn.selu))(x), atol=5e-7, rtol=1e-6)


def test_selu_and_bce_gradients_equal_the_jnp_maximum_forms_bitwise_ties_included():
    # The select-based derivative of max(x, 0) must reproduce jnp.maximum's exactly, 1/2 at
    # x == 0 included: ties occur in real training, and any difference changes the parameters.
    x = jnp.concatenate([jnp.array([0.0, -0.0]), jax.random.normal(jax.random.key(5), (999,)) * 5.0])
    t = jax.random.uniform(jax.random.key(6), x.shape)
    scale, alpha = kernels.SELU_SCALE, kernels.SELU_ALPHA
    reference_selu = lambda v: scale * (jnp.maximum(v, 0.0) + alpha * (jnp.exp(jnp.minimum(v, 0.0)) - 1.0))
    reference_bce = lambda l: jnp.maximum(l, 0.0) + jnp.log(1.0 + jnp.exp(-jnp.abs(l))) - t * l
    grad = lambda f: jax.jit(jax.grad(lambda v: jnp.sum(f(v) * t)))(x)
    np.testing.assert_array_equal(grad(kernels.selu), grad(reference_selu))
    np.testing.assert_array_equal(grad(lambda l: kernels.sigmoid_cross_entropy(l, t)), grad(reference_bce))
    assert float(jax.grad(kernels.selu)(0.0)) == pytest.approx(0.5 * scale * (1.0 + alpha), rel=1e-6)


def test_bce_gradient_is_sigmoid_minus_target():
    logits = jax.random.normal(jax.random.key(3), (1000,)) * 10.0
    targets = jax.random.uniform(jax.random.key(4), (1000,))
    grads = jax.grad(lambda l: jnp.sum(kernels.sigmoid_cross_entropy(l, targets)))(logits)
    # d/dl [softplus(l) - t l] = sigmoid(l) - t; float32 round-off of e / (1 + e) is a few 1e-8.
    chex.assert_trees_all_close(grads, jax.nn.sigmoid(logits) - targets, atol=1e-6, rtol=0)


def test_bce_from_logits_is_stable():
    logits = jnp.array([-200.0, -20.0, 0.0, 20.0, 200.0])
    targets = jnp.array([1.0, 0.5, 0.5, 0.0, 1.0])
    bce = kernels.sigmoid_cross_entropy(logits, targets)
    chex.assert_tree_all_finite(bce)
    np.testing.assert_allclose(np.asarray(bce)[[0, 4]], [200.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(bce[2], np.log(2.0), rtol=1e-6)


def test_cross_entropy_matches_optax():
    logits = jax.random.normal(jax.random.key(7), (4096,)) * 20.0
    targets = jax.random.uniform(jax.random.key(8), (4096,))
    # Same function, other float32 rounding (log(1 + e) vs log1p): within a few 1e-7 nats.
    chex.assert_trees_all_close(
        kernels.sigmoid_cross_entropy(logits, targets),
        optax.sigmoid_binary_cross_entropy(logits, targets),
        atol=2e-6,
        rtol=1e-6,
    )
