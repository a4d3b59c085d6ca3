"""Per-pixel observation models p(x | z) of the VAE's decoder, from its logits, in nats.

Two observation models (the `--likelihood` flag), and the data's binarization (`--binarize`):

- ``"bernoulli"`` (the chapter): the Bernoulli cross-entropy applied to grey levels x in [0, 1].
  It is **not** a log-density of grey-level images: its "probabilities" do not sum to 1 over the
  256 grey levels, and even a perfect model pays the targets' binary entropy (`bernoulli_entropy`,
  about 190 nats per Fashion-MNIST test image). Use it to reproduce the chapter, not to cite.
- ``"continuous_bernoulli"``: the normalised density C(λ) λ^x (1 - λ)^(1 - x) on x in [0, 1]
  (Loaiza-Ganem & Cunningham, NeurIPS 2019), a proper density of grey levels.
- binarization (``--binarize``, with ``"bernoulli"``): the literature's density-estimation
  protocol. Every time a training batch is used, its pixels are resampled x ~ Bernoulli(grey
  level) (`binarize`), and the Bernoulli likelihood of those 0/1 pixels is a proper discrete
  log-likelihood. Validation and test images are binarized once, with fixed keys
  (`binarize_for_evaluation`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from aejax.models import kernels

KINDS = ("bernoulli", "continuous_bernoulli")
# Validation and test images of a model trained on binarized images are binarized once with this key's draws.
BINARIZATION_SEED = 0
# Below this |logit| the continuous Bernoulli's closed forms cancel catastrophically in float32;
# their Taylor series (error < 4e-10 at the threshold) take over.
_TAYLOR_BELOW = 0.1


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(
            f"likelihood must be one of {KINDS} (binarized images are scored as 'bernoulli'), got {kind!r}"
        )


def continuous_bernoulli_log_normalizer(logits: ArrayLike) -> jax.Array:
    """log C(λ), λ = sigmoid(logits), of the continuous Bernoulli; shape of `logits`, nats.

    C(λ) = 2 atanh(1 - 2λ) / (1 - 2λ) = l / tanh(l / 2) for the logit l, so
    log C = log|l| + log1p(exp(-|l|)) - log(-expm1(-|l|)), finite for saturated logits; near
    λ = 1/2 (|l| < 0.1) the series log 2 + l²/12 - 7 l⁴/1440 replaces it.
    """
    logits = jnp.asarray(logits)
    magnitude = jnp.abs(logits)
    small = magnitude < _TAYLOR_BELOW
    # Each branch gets inputs that are safe for it, so neither yields inf/NaN (or NaN gradients).
    far = jnp.where(small, _TAYLOR_BELOW, magnitude)
    near = jnp.where(small, logits, 0.0) ** 2
    closed_form = jnp.log(far) + jnp.log1p(jnp.exp(-far)) - jnp.log(-jnp.expm1(-far))
    series = jnp.log(2.0) + near / 12.0 - 7.0 * near**2 / 1440.0
    return jnp.where(small, series, closed_form)


def log_prob(kind: str, logits: ArrayLike, targets: ArrayLike) -> jax.Array:
    """log p(x | λ) per pixel, in nats, with λ = sigmoid(logits); shape of `logits`.

    Args:
      kind: "bernoulli" (-cross-entropy; a log-probability only for 0/1 targets) or
        "continuous_bernoulli" (a log-density on [0, 1]; can be positive).
      logits: decoder outputs, any shape.
      targets: pixels in [0, 1], broadcastable to `logits`.

    >>> log_prob("continuous_bernoulli", jnp.zeros(1), jnp.full(1, 0.3))  # λ = 1/2: uniform
    Array([0.], dtype=float32)
    """
    _check_kind(kind)
    log_p = -kernels.sigmoid_cross_entropy(logits, targets)
    if kind == "continuous_bernoulli":
        log_p = log_p + continuous_bernoulli_log_normalizer(logits)
    return log_p


def mean(kind: str, logits: ArrayLike) -> jax.Array:
    """E[x] under p(x | λ) per pixel, in [0, 1]; shape of `logits`.

    Bernoulli: λ. Continuous Bernoulli: 1 / (1 - exp(-l)) - 1 / l (series 1/2 + l/12 - l³/720
    near l = 0); it lies between λ and 1/2.
    """
    _check_kind(kind)
    logits = jnp.asarray(logits)
    if kind == "bernoulli":
        return jax.nn.sigmoid(logits)
    small = jnp.abs(logits) < _TAYLOR_BELOW
    near = jnp.where(small, logits, 0.0)
    # 1 / (1 - exp(-l)) as -1 / expm1(-l) for l > 0 and exp(l) / expm1(l) for l < 0: neither
    # overflows, so values and gradients stay finite for saturated logits.
    positive = jnp.where(logits > 0, jnp.maximum(logits, _TAYLOR_BELOW), 1.0)
    negative = jnp.where(logits > 0, -1.0, jnp.minimum(logits, -_TAYLOR_BELOW))
    first = jnp.where(logits > 0, -1.0 / jnp.expm1(-positive), jnp.exp(negative) / jnp.expm1(negative))
    far = jnp.where(logits > 0, positive, negative)
    return jnp.where(small, 0.5 + near / 12.0 - near**3 / 720.0, first - 1.0 / far)


def binarize(key: jax.Array, images: ArrayLike) -> jax.Array:
    """One draw x ~ Bernoulli(images) per pixel (dynamic binarization); 0/1 in the dtype of `images`.

    Unbiased: E[x] = the grey level. The same key gives the same draw.
    """
    images = jnp.asarray(images)
    return jax.random.bernoulli(key, images).astype(images.dtype)


def binarize_for_evaluation(images: ArrayLike, split: str) -> jax.Array:
    """The fixed binarization of a held-out split ("validation" or "test"): `binarize` with
    `fold_in(jax.random.key(BINARIZATION_SEED), 0 or 1)`, so every evaluation sees the same pixels."""
    streams = {"validation": 0, "test": 1}
    if split not in streams:
        raise ValueError(f"split must be one of {tuple(streams)}, got {split!r}")
    return binarize(jax.random.fold_in(jax.random.key(BINARIZATION_SEED), streams[split]), images)


def bernoulli_entropy(probabilities: ArrayLike) -> jax.Array:
    """Binary entropy -p log p - (1 - p) log(1 - p) per pixel, in nats; shape of `probabilities`.

    Summed over an image's pixels, it is the lowest value the grey-level cross-entropy
    ("bernoulli" on grey levels) can reach for that image.
    """
    p = jnp.asarray(probabilities)
    return -(jax.scipy.special.xlogy(p, p) + jax.scipy.special.xlogy(1.0 - p, 1.0 - p))
