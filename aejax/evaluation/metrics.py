"""Likelihood bounds in nats (ELBO, IWAE) and posterior diagnostics of the VAE.

Draw `s` of an example batch always uses eps = normal(fold_in(key, s), (B, L)), so the ELBO,
the IWAE bound and every chunking of them see the same latent samples for the same key.
Relation to the chapter's loss: num_pixels * loss(model, params, x, fold_in(key, 0)) =
-mean(elbo(model, params, x, key)) (784 pixels for the chapter's images).

`likelihood` is the observation model (`aejax.models.likelihoods`): "bernoulli" scores the given
pixels with the Bernoulli log-probability (a proper log-likelihood only for 0/1 pixels: pass the
binarized images of a model trained with binarization), "continuous_bernoulli" with that density.
Only for 0/1 pixels or the continuous Bernoulli is -IWAE an upper bound on a negative log-likelihood.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from aejax.checks import check_positive_int
from aejax.models import likelihoods, priors, vae
from aejax.training.train import ceil_div

# A Python float: a jnp constant here would start JAX's backend at import, before entry points
# can set their XLA flags (aejax/runtime.py).
_LOG_2PI = math.log(2 * math.pi)
# Sample indices are int32 inside the compiled program.
MAX_IMPORTANCE_SAMPLES = 2**30
# A latent dimension is active when the variance over the images of its posterior mean exceeds
# this (Burda et al. 2016, §5.2).
ACTIVE_UNITS_THRESHOLD = 0.01


def _noise(key: jax.Array, index: jax.Array, mean: jax.Array) -> jax.Array:
    return jax.random.normal(jax.random.fold_in(key, index), mean.shape, mean.dtype)


def log_likelihood(
    model: vae.Model, params: vae.Params, x: jax.Array, z: jax.Array, likelihood: str = "bernoulli"
) -> jax.Array:
    """log p(x | z) in nats, summed over each image's pixels; shape (B,)."""
    logits = vae.decode_logits(model, params, z)
    return jnp.sum(likelihoods.log_prob(likelihood, logits, x), axis=vae.image_axes(model))


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "likelihood"))
def elbo(
    model: vae.Model,
    params: vae.Params,
    x: ArrayLike,
    key: jax.Array,
    num_samples: int = 1,
    likelihood: str = "bernoulli",
) -> jax.Array:
    """Per-example ELBO in nats: E_q[log p(x|z)] - KL(q(z|x) || p(z)), Monte Carlo over
    `num_samples` draws; the KL term in closed form for the standard prior, else
    log q(z|x) - log p(z) at the same draws.

    The draws are taken one at a time (memory O(B * pixels) whatever `num_samples` is).
    Args: x (B, *image_shape) in [0, 1]. Returns: (B,).
    """
    check_positive_int("num_samples", num_samples)
    mean, log_var = vae.encode(model, params, x)
    x = jnp.asarray(x, jnp.float32)
    closed_form = priors.has_standard_prior(model)

    def add_draw(total, s):
        eps = _noise(key, s, mean)
        z, draw_log_var = vae.posterior_draw(model, params, x, mean, log_var, eps)
        term = log_likelihood(model, params, x, z, likelihood)
        if not closed_form:
            term = term + priors.log_density(model, params, z) - vae.log_posterior(draw_log_var, eps)
        return total + term, None

    total, _ = jax.lax.scan(add_draw, jnp.zeros(mean.shape[:-1]), jnp.arange(num_samples))
    return total / num_samples - (vae.kl_divergence(mean, log_var) if closed_form else 0.0)


@functools.partial(jax.jit, static_argnames=("model", "k", "chunk_size", "likelihood"))
def iwae_bound(
    model: vae.Model,
    params: vae.Params,
    x: ArrayLike,
    key: jax.Array,
    k: int,
    chunk_size: int = 100,
    likelihood: str = "bernoulli",
) -> jax.Array:
    """Per-example importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i | x) (Burda et al. 2015).

    The k draws are processed `chunk_size` at a time with a running log-sum-exp, so memory is
    O(B * chunk_size * pixels) whatever k is. log q(z | x) is computed from the noise eps, so any
    finite log-variance gives a finite, exact term; log p(z) is the model's prior.
    k = 1 is the single-draw ELBO with a sampled KL term.
    Args: x (B, *image_shape) in [0, 1]; 1 <= k <= MAX_IMPORTANCE_SAMPLES. Returns: (B,) in nats.
    """
    check_positive_int("k", k)
    check_positive_int("chunk_size", chunk_size)
    if k > MAX_IMPORTANCE_SAMPLES:
        raise ValueError(f"k must be at most {MAX_IMPORTANCE_SAMPLES} (sample indices are int32), got {k}")
    mean, log_var = vae.encode(model, params, x)
    x = jnp.asarray(x, jnp.float32)
    chunk_size = min(chunk_size, k)
    num_chunks = ceil_div(k, chunk_size)

    def log_weight(s):
        eps = _noise(key, s, mean)
        z, draw_log_var = vae.posterior_draw(model, params, x, mean, log_var, eps)
        log_prior = priors.log_density(model, params, z)
        log_w = log_likelihood(model, params, x, z, likelihood) + log_prior - vae.log_posterior(draw_log_var, eps)
        return jnp.where(s < k, log_w, -jnp.inf)  # draws past k in the last chunk count for nothing

    def accumulate(carry, chunk):
        running_max, running_sum = carry
        log_w = jax.vmap(log_weight)(chunk * chunk_size + jnp.arange(chunk_size))  # (chunk, B)
        new_max = jnp.maximum(running_max, jnp.max(log_w, axis=0))
        running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(log_w - new_max), axis=0)
        return (new_max, running_sum), None

    start = (jnp.full(mean.shape[:-1], -jnp.inf), jnp.zeros(mean.shape[:-1]))
    (log_max, total), _ = jax.lax.scan(accumulate, start, jnp.arange(num_chunks))
    return log_max + jnp.log(total) - jnp.log(k)


@functools.partial(jax.jit, static_argnames=("model", "chunk_size"))
def kl_per_dim(
    model: vae.Model, params: vae.Params, x: ArrayLike, key: jax.Array | None = None, chunk_size: int = 100
) -> jax.Array:
    """KL(q(z_l | x) || p(z_l)) per latent dimension l, averaged over the images x; (L,) nats.

    A dimension with KL near 0 carries no information about x. Standard prior: in closed form, and
    the sum is the rate (the mean KL). Another prior: p(z_l) is its marginal (a hierarchical
    model's lower layers: p(z_l | z_top) and q(z_l | x, z_top) at the drawn z_top), and the terms
    are estimated with one draw z ~ q(z | x) per image from `key` (needed then), `chunk_size`
    images at a time; such a prior does not factorise, so their sum is not the rate.
    """
    mean, log_var = vae.encode(model, params, x)
    if priors.has_standard_prior(model):
        return jnp.mean(vae.kl_terms(mean, log_var), axis=0)
    if key is None:
        raise ValueError(f"kl_per_dim needs a key for a model with a {getattr(model, 'NAME', 'learned')} prior")
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    z, draw_log_var = vae.posterior_draw(model, params, jnp.asarray(x, jnp.float32), mean, log_var, eps)
    log_q = -0.5 * (draw_log_var + jnp.square(eps) + _LOG_2PI)
    n = z.shape[0]
    num_chunks = ceil_div(n, chunk_size)
    chunks = jnp.pad(z, ((0, num_chunks * chunk_size - n), (0, 0))).reshape(num_chunks, chunk_size, -1)
    log_p = jax.lax.map(lambda c: priors.marginal_log_densities(model, params, c), chunks).reshape(-1, z.shape[-1])
    return jnp.mean(log_q - log_p[:n], axis=0)


@functools.partial(jax.jit, static_argnames=("model",))
def latent_activity(model: vae.Model, params: vae.Params, x: ArrayLike) -> jax.Array:
    """Cov_x(E_q[z_l | x]) per latent dimension: the variance over the images of each mean; (L,).
    (A hierarchical model's lower layers: of their means at the top layer's mean, `encode`'s.)"""
    return jnp.var(vae.encode(model, params, x)[0], axis=0)


def active_units(
    model: vae.Model, params: vae.Params, x: ArrayLike, threshold: float = ACTIVE_UNITS_THRESHOLD
) -> jax.Array:
    """How many latent dimensions are active: Cov_x(E_q[z_l | x]) > threshold (Burda et al. 2016, §5.2)."""
    return jnp.sum(latent_activity(model, params, x) > threshold)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def mutual_information_from_posterior(
    key: jax.Array, mean: ArrayLike, log_var: ArrayLike, chunk_size: int = 64
) -> jax.Array:
    """I(x; z) under q(x, z) = p_data(x) q(z | x), from posteriors N(mean_n, exp(log_var_n)) of N images.

    The estimator of He et al. (2019, "Lagging inference networks"): -H[q(z|x)] averaged over x
    (closed form) minus E[log q(z)], with one draw z_n ~ q(z | x_n) per image and the aggregate
    posterior q(z) = (1/N) sum_m q(z | x_m). The mixture includes each draw's own posterior, which
    biases the estimate down when the posteriors are narrow next to the spacing of the N codes, more
    so in more dimensions; use thousands of images, and compare models on the same images.
    Nats, a scalar, at most log N.
    """
    mean, log_var = jnp.asarray(mean), jnp.asarray(log_var)
    n, latent = mean.shape
    neg_entropy = jnp.mean(-0.5 * latent * _LOG_2PI - 0.5 * jnp.sum(1.0 + log_var, axis=-1))
    z = vae.sample_latent(key, mean, log_var)
    num_chunks = ceil_div(n, chunk_size)
    padded = jnp.pad(z, ((0, num_chunks * chunk_size - n), (0, 0))).reshape(num_chunks, chunk_size, latent)

    def log_aggregate(chunk):  # log q(z) for each z of the chunk: (chunk,)
        diff = chunk[:, None, :] - mean[None]
        log_q = -0.5 * jnp.sum(jnp.square(diff) * jnp.exp(-log_var)[None] + log_var[None] + _LOG_2PI, axis=-1)
        return jax.scipy.special.logsumexp(log_q, axis=1) - jnp.log(n)

    log_qz = jax.lax.map(log_aggregate, padded).reshape(-1)[:n]
    return neg_entropy - jnp.mean(log_qz)


def mutual_information(model: vae.Model, params: vae.Params, x: ArrayLike, key: jax.Array) -> jax.Array:
    """I(x; z) in nats under the encoder, estimated on the images x (N, *image_shape); see
    `mutual_information_from_posterior`. A hierarchical model: I(x; z_top) of its top layer, whose
    posterior is a Gaussian (a lower bound on I(x; z))."""
    mean, log_var = vae.encode(model, params, x)
    top = priors.top_dim(model)
    return mutual_information_from_posterior(key, mean[:, :top], log_var[:, :top])


def rate_and_distortion(
    model: vae.Model, params: vae.Params, x: ArrayLike, key: jax.Array, likelihood: str = "bernoulli"
) -> dict[str, jax.Array]:
    """{"rate": mean KL(q(z|x) || p(z)), "distortion": mean -log p(x | z), z ~ q(z|x)}, nats per image.

    rate + distortion = -ELBO (one draw); the images are scored as given.
    """
    terms = vae.evaluate(model, params, jnp.asarray(x), key, likelihood=likelihood)
    return {"rate": terms["kl"], "distortion": vae.num_pixels(model) * terms["reconstruction"]}
