"""Likelihood bounds for the VAE in nats: the ELBO and the importance-weighted bound (IWAE).

Draw `s` of an example batch always uses eps = normal(fold_in(key, s), (B, L)), so the ELBO,
the IWAE bound and every chunking of them see the same latent samples for the same key.
Relation to the chapter's loss: 784 * loss(params, x, fold_in(key, 0)) = -mean(elbo(params, x, key)).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from aejax import vae
from aejax.checks import check_positive_int

# A Python float: a jnp constant here would start JAX's backend at import, before entry points
# can set their XLA flags (aejax/runtime.py).
_LOG_2PI = math.log(2 * math.pi)


def _draw(key: jax.Array, index: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    return vae.sample_latent(jax.random.fold_in(key, index), mean, log_var)


def log_likelihood(params: vae.Params, x: jax.Array, z: jax.Array) -> jax.Array:
    """log p(x | z) in nats, summed over the 784 Bernoulli pixels (targets in [0, 1]); shape (B,)."""
    logits = vae.decode_logits(params, z)
    return -jnp.sum(vae.bernoulli_cross_entropy(logits, x), axis=(-2, -1))


def _gaussian_log_density(z: jax.Array, mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
    return -0.5 * jnp.sum(log_var + jnp.square(z - mean) * jnp.exp(-log_var) + _LOG_2PI, axis=-1)


@functools.partial(jax.jit, static_argnames=("num_samples",))
def elbo(params: vae.Params, x: ArrayLike, key: jax.Array, num_samples: int = 1) -> jax.Array:
    """Per-example ELBO in nats: E_q[log p(x|z)] (Monte Carlo, `num_samples` draws) - KL (analytic).

    Args: x (B, 28, 28) in [0, 1]. Returns: (B,).
    """
    check_positive_int("num_samples", num_samples)
    x = jnp.asarray(x, jnp.float32)
    mean, log_var = vae.encode(params, x)
    draws = jax.vmap(lambda s: log_likelihood(params, x, _draw(key, s, mean, log_var)))(jnp.arange(num_samples))
    return jnp.mean(draws, axis=0) - vae.kl_divergence(mean, log_var)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def iwae_bound(params: vae.Params, x: ArrayLike, key: jax.Array, k: int, chunk_size: int = 100) -> jax.Array:
    """Per-example importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i | x) (Burda et al. 2015).

    The k draws are processed `chunk_size` at a time with a running log-sum-exp, so memory is
    O(B * chunk_size * 784) whatever k is. k = 1 is the single-draw ELBO with a sampled KL term.
    Args: x (B, 28, 28) in [0, 1]. Returns: (B,) in nats.
    """
    check_positive_int("k", k)
    check_positive_int("chunk_size", chunk_size)
    x = jnp.asarray(x, jnp.float32)
    mean, log_var = vae.encode(params, x)
    chunk_size = min(chunk_size, k)
    num_chunks = -(-k // chunk_size)

    def log_weight(s):
        z = _draw(key, s, mean, log_var)
        log_w = log_likelihood(params, x, z) + _gaussian_log_density(z, 0.0, 0.0) - _gaussian_log_density(z, mean, log_var)
        return jnp.where(s < k, log_w, -jnp.inf)  # draws past k in the last chunk count for nothing

    def accumulate(carry, chunk):
        running_max, running_sum = carry
        log_w = jax.vmap(log_weight)(chunk * chunk_size + jnp.arange(chunk_size))  # (chunk, B)
        new_max = jnp.maximum(running_max, jnp.max(log_w, axis=0))
        running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(log_w - new_max), axis=0)
        return (new_max, running_sum), None

    start = (jnp.full(x.shape[0], -jnp.inf), jnp.zeros(x.shape[0]))
    (log_max, total), _ = jax.lax.scan(accumulate, start, jnp.arange(num_chunks))
    return log_max + jnp.log(total) - jnp.log(k)
