"""The variational autoencoder for any model: the model interface, the chapter's loss, generation.

A *model* is a frozen, hashable description (a jit static argument) with pure functions over a
params pytree (`Model`): `init(key)`, `encode(params, x)` to the mean and log-variance of the
diagonal-Gaussian q(z | x), and `decode_logits(params, z)` to the logits of p(x | z)
(`aejax.models.likelihoods`), plus its `latent_dim` and `image_shape` ((H, W) or (H, W, C)). The
prior is N(0, I) unless the model defines its own (`aejax.models.priors`: the VampPrior).
`aejax.models.mlp` (the chapter's VAE) and `aejax.models.conv` are two models;
`FlaxVAE` makes one of any Flax encoder and decoder:

>>> model = vae.FlaxVAE(MyEncoder(), MyDecoder(), latent_dim=16, image_shape=(28, 28))
>>> params = model.init(jax.random.key(0))

The functions here take the model first and check their inputs where it costs nothing after
compilation (dtype and shape at trace time; pixels in [0, 1] and finite parameters under
`aejax.checks.checked`), then call the model's own functions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.experimental import checkify
from jax.typing import ArrayLike

from aejax.config import check_types, fail
from aejax.models import likelihoods, priors
from aejax.training.train import Metrics, mean_over_batches, weighted_mean

Params = Any
OBJECTIVES = ("elbo", "iwae")
LOG_2PI = math.log(2 * math.pi)


class Model(Protocol):
    """What aejax needs of a VAE (see the module docstring); frozen and hashable."""

    latent_dim: int
    image_shape: tuple[int, ...]

    def init(self, key: jax.Array) -> Params: ...

    def encode(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]: ...

    def decode_logits(self, params: Params, z: jax.Array) -> jax.Array: ...


@dataclasses.dataclass(frozen=True)
class FlaxVAE:
    """A model made of two Flax modules: `encoder(x)` maps images (B, *image_shape) to (mean, log_var),
    each (B, latent_dim); `decoder(z)` maps codings (B, latent_dim) to logits (B, *image_shape).
    Params: `{"encoder": …, "decoder": …}`, initialised from split(key) in that order."""

    encoder: nn.Module
    decoder: nn.Module
    latent_dim: int
    image_shape: tuple[int, ...]

    @functools.partial(jax.jit, static_argnums=0)  # one compilation, not one per layer's operations
    def init(self, key: jax.Array) -> Params:
        encoder_key, decoder_key = jax.random.split(key)
        return {
            "encoder": self.encoder.init(encoder_key, jnp.zeros((1,) + tuple(self.image_shape)))["params"],
            "decoder": self.decoder.init(decoder_key, jnp.zeros((1, self.latent_dim)))["params"],
        }

    def encode(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encoder.apply({"params": params["encoder"]}, x)

    def decode_logits(self, params: Params, z: jax.Array) -> jax.Array:
        return self.decoder.apply({"params": params["decoder"]}, z)


class FlaxModel:
    """A base for models described by their settings and built of two Flax modules: a subclass (a
    frozen dataclass) defines `modules()`, and inherits init, encode and decode_logits."""

    def modules(self) -> FlaxVAE:
        raise NotImplementedError

    def check_settings(self, layers: str) -> None:
        """ConfigError naming the first bad field: the field types, the layer sizes in field `layers`,
        latent_dim and image_shape (what every such model has)."""
        check_types(self)
        sizes = getattr(self, layers)
        if not sizes or min(sizes) <= 0:
            fail(layers, f"must be one or more positive integers, got {sizes!r}")
        if self.latent_dim <= 0:
            fail("latent_dim", f"must be a positive integer, got {self.latent_dim!r}")
        if len(self.image_shape) not in (2, 3) or min(self.image_shape) < 1:
            fail("image_shape", f"must be (H, W) or (H, W, C) of positive sizes, got {self.image_shape!r}")

    def init(self, key: jax.Array) -> Params:
        return self.modules().init(key)

    def encode(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.modules().encode(params, x)

    def decode_logits(self, params: Params, z: jax.Array) -> jax.Array:
        return self.modules().decode_logits(params, z)


def num_pixels(model: Model) -> int:
    """Values per image (H * W * C): the chapter's loss divides the KL term by it (784)."""
    return math.prod(model.image_shape)


def image_axes(model: Model) -> tuple[int, ...]:
    """The trailing axes of a batch that one image spans."""
    return tuple(range(-len(model.image_shape), 0))


def check_images(model: Model, x: ArrayLike) -> jax.Array:
    """float32 images (..., *image_shape); TypeError/ValueError at trace time, [0, 1] under checkify."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"images must be floating-point pixels in [0, 1], got dtype {x.dtype} "
            "(uint8 images: use aejax.data.to_unit_float or divide by 255)"
        )
    shape = tuple(model.image_shape)
    if x.ndim < len(shape) or x.shape[x.ndim - len(shape) :] != shape:
        raise ValueError(f"images must have shape (..., {', '.join(map(str, shape))}) for this model, got {x.shape}")
    x = x.astype(jnp.float32)
    checkify.debug_check(jnp.all((x >= 0) & (x <= 1)), "images must lie in [0, 1] (and be finite)")
    return x


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"encoder/hidden_0/kernel": leaf, …}"""
    return {
        prefix + "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _check_finite(params: Params, part: str) -> None:
    tree = params.get(part, params) if isinstance(params, dict) else params
    for name, value in _leaves(tree, f"{part}/").items():
        checkify.debug_check(jnp.all(jnp.isfinite(value)), f"params {name} must be finite")


def check_params(model: Model, params: Params) -> None:
    """Raises ValueError naming every leaf of `params` that is missing, unexpected, wrongly shaped,
    not floating point or not finite, against the tree `model.init` makes (needs concrete arrays)."""
    expected = _leaves(jax.eval_shape(model.init, jax.random.key(0)))
    found = _leaves(params)
    problems = [f"{name} is unexpected" for name in found if name not in expected]
    for name, value in found.items():
        if name not in expected:
            continue
        value = np.asarray(value)
        if value.shape != expected[name].shape:
            problems.append(f"{name} has shape {value.shape}, expected {expected[name].shape}")
        elif not np.issubdtype(value.dtype, np.floating):
            problems.append(f"{name} has dtype {value.dtype}, expected floating point")
        elif not np.all(np.isfinite(value)):
            problems.append(
                f"{name} holds {value.size - np.count_nonzero(np.isfinite(value))} NaN/inf value(s) "
                "(the model diverged or the file is damaged)"
            )
    problems += [f"{name} is missing" for name in expected if name not in found]
    if problems:
        raise ValueError(
            f"params do not fit the model ({describe(model)}): "
            + "; ".join(problems[:6])
            + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        )


def describe(model: Model) -> str:
    """A short description of a model for messages."""
    name = getattr(model, "NAME", type(model).__name__)
    return f"{name}, latent size {model.latent_dim}, images {tuple(model.image_shape)}"


@functools.partial(jax.jit, static_argnames=("model",))
def encode(model: Model, params: Params, x: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Images (..., *image_shape) in [0, 1] -> (mean, log_var) of q(z | x), each (..., latent_dim)."""
    x = check_images(model, x)
    _check_finite(params, "encoder")
    return model.encode(params, x)


def encode_top(model: Model, params: Params, x: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(mean, log_var) of the Gaussian a draw z ~ q(z | x) starts from (`posterior_draw`): `encode`'s
    for a one-layer model; a hierarchical model's top layer alone, (..., top_dim) each (under a
    gradient, `encode`'s lower layers would cost a backward pass of zeros)."""
    x = check_images(model, x)
    _check_finite(params, "encoder")
    return priors.top_posterior(model, params, x)


@functools.partial(jax.jit, static_argnames=("model",))
def decode_logits(model: Model, params: Params, z: ArrayLike) -> jax.Array:
    """Codings (..., latent_dim) -> (..., *image_shape) logits of p(x | z)."""
    z = jnp.asarray(z)
    if z.ndim < 1 or z.shape[-1] != model.latent_dim:
        raise ValueError(f"codings must have shape (..., {model.latent_dim}) for this model, got {z.shape}")
    _check_finite(params, "decoder")
    return model.decode_logits(params, z)


@functools.partial(jax.jit, static_argnames=("model", "likelihood"))
def decode(model: Model, params: Params, z: ArrayLike, likelihood: str = "bernoulli") -> jax.Array:
    """Codings (..., latent_dim) -> images E[x | z] (..., *image_shape) in [0, 1]."""
    return likelihoods.mean(likelihood, decode_logits(model, params, z))


def reparameterize(mean: ArrayLike, log_var: ArrayLike, noise: ArrayLike) -> jax.Array:
    """z = mean + exp(log_var / 2) * noise (the chapter's Sampling layer); shape of `mean`."""
    return mean + jnp.exp(log_var / 2) * noise


def posterior_draw(
    model: Model, params: Params, x: jax.Array, mean: jax.Array, log_var: jax.Array, eps: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A draw z ~ q(z | x) from standard-normal noise eps (..., L) (leading axes broadcast against
    x's batch), and the log-variances of the Gaussians it came from, both of eps's shape; with
    (mean, log_var) = `encode_top(x)` (or `encode(x)`). A hierarchical model draws layer by layer
    (`draw_posterior`: each lower layer's Gaussian depends on the draw above); any other is one Gaussian,
    z = mean + exp(log_var / 2) * eps. Either way log q(z | x) = `log_posterior(log_var, eps)`."""
    if hasattr(model, "draw_posterior"):
        return model.draw_posterior(params, x, mean, log_var, eps)
    return reparameterize(mean, log_var, eps), jnp.broadcast_to(log_var, eps.shape)


def log_posterior(log_var: jax.Array, eps: jax.Array) -> jax.Array:
    """log q(z | x) of a draw from noise eps and its Gaussians' log-variances, summed over the
    last axis: exact for any finite log_var."""
    return -0.5 * jnp.sum(log_var + jnp.square(eps) + LOG_2PI, axis=-1)


@functools.partial(jax.jit, static_argnames=("model",))
def sample_posterior(model: Model, params: Params, key: jax.Array, x: ArrayLike) -> jax.Array:
    """One draw z ~ q(z | x) per image, (..., latent_dim), from `key`, for any model (a
    hierarchical one layer by layer; any other: `sample_latent` of `encode`)."""
    x = check_images(model, x)
    mean, log_var = encode_top(model, params, x)
    eps = jax.random.normal(key, mean.shape[:-1] + (model.latent_dim,), mean.dtype)
    return posterior_draw(model, params, x, mean, log_var, eps)[0]


def sample_latent(key: jax.Array, mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
    """Reparameterised draw z = mean + exp(log_var / 2) * eps, eps ~ N(0, I); shape of `mean`."""
    return reparameterize(mean, log_var, jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean)))


def kl_terms(mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
    """KL(N(mean, exp(log_var)) || N(0, 1)) per latent dimension, in nats; shape of `mean`."""
    # expm1 keeps exp(log_var) - 1 - log_var accurate when log_var is near 0.
    return 0.5 * (jnp.square(mean) + jnp.expm1(log_var) - log_var)


def kl_divergence(mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
    """KL(N(mean, exp(log_var)) || N(0, I)) in nats, summed over the last axis: shape (...)."""
    return jnp.sum(kl_terms(mean, log_var), axis=-1)


def _rounded_accuracy(targets: jax.Array, logits: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    # The chapter's metric, the share of pixels where round(target) == round(E[x | z]). Every
    # likelihood's E[x | z] exceeds 1/2 exactly when the logit is > 0 (round half to even sends 0.5
    # to 0), so no sigmoid is needed.
    agree = jnp.round(targets) == (logits > 0).astype(targets.dtype)
    return jnp.mean(agree, axis=axes)


def batch_metrics(
    model: Model,
    params: Params,
    x: ArrayLike,
    key: jax.Array,
    beta: float | jax.Array = 1.0,
    likelihood: str = "bernoulli",
    binarize: bool = False,
    objective: str = "elbo",
    samples: int = 1,
) -> Metrics:
    """Per-example metrics from `samples` latent draws each; every value has shape (B,).

    reconstruction = -log p(x | z) per pixel (nats; the BCE for "bernoulli") and kl (nats), each
    averaged over the draws; rounded_accuracy of the first draw. The loss, per pixel:
    - objective "elbo": reconstruction + beta * kl / num_pixels (the chapter's scale), with the KL
      term in closed form for the standard prior, else log q(z|x) - log p(z) at the draws;
    - objective "iwae": -log (1/S) sum_s exp(log p(x|z_s) + beta (log p(z_s) - log q(z_s|x))) /
      num_pixels (Burda et al. 2015; beta = 1 is the IWAE bound; one draw is the ELBO with a
      sampled KL term).
    `binarize` first replaces x by a Bernoulli draw of its grey levels from `fold_in(key, 1)`
    (dynamic binarization); the latent noise always comes from `key`.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    x = check_images(model, x)
    if binarize:
        x = likelihoods.binarize(jax.random.fold_in(key, 1), x)
    mean, log_var = encode_top(model, params, x)
    shape = mean.shape[:-1] + (model.latent_dim,)
    if samples == 1:  # the chapter's draw, bit for bit
        eps = jax.random.normal(key, shape, mean.dtype)[None]
    else:
        eps = jax.random.normal(key, (samples,) + shape, mean.dtype)
    z, draw_log_var = posterior_draw(model, params, x, mean, log_var, eps)  # (S, B, L)
    logits = decode_logits(model, params, z.reshape((-1, model.latent_dim)))
    logits = logits.reshape(z.shape[:2] + logits.shape[1:])
    axes = image_axes(model)
    log_px = likelihoods.log_prob(likelihood, logits, x)
    reconstruction = -jnp.mean(log_px, axis=axes)  # (S, B)
    sampled_kl = objective == "iwae" or not priors.has_standard_prior(model)
    if sampled_kl:
        kl = log_posterior(draw_log_var, eps) - priors.log_density(model, params, z)  # (S, B)
    else:
        kl = kl_divergence(mean, log_var)[None]
    if objective == "iwae":
        log_w = jnp.sum(log_px, axis=axes) - beta * kl
        loss = -(jax.nn.logsumexp(log_w, axis=0) - math.log(samples)) / num_pixels(model)
    else:
        loss = _draw_mean(reconstruction) + beta * _draw_mean(kl) / num_pixels(model)
    return {
        "loss": loss,
        "reconstruction": _draw_mean(reconstruction),
        "kl": _draw_mean(kl),
        "rounded_accuracy": _rounded_accuracy(x, logits[0], axes),
    }


def _draw_mean(values: jax.Array) -> jax.Array:
    return values[0] if values.shape[0] == 1 else jnp.mean(values, axis=0)


def loss(
    model: Model,
    params: Params,
    x: ArrayLike,
    key: jax.Array,
    beta: float | jax.Array = 1.0,
    weights: jax.Array | None = None,
    likelihood: str = "bernoulli",
    binarize: bool = False,
    objective: str = "elbo",
    samples: int = 1,
) -> jax.Array:
    """The training loss, a scalar: the batch mean of `batch_metrics`' loss (the chapter's by default:
    reconstruction + beta * KL / num_pixels; loss * num_pixels ≈ -ELBO). `weights` (B,) of 0/1
    restrict the mean to the rows marked 1."""
    if isinstance(beta, (int, float)) and not 0 <= beta < float("inf"):
        raise ValueError(f"beta must be a finite number >= 0 (beta = 1 is the chapter's VAE), got {beta!r}")
    metrics = batch_metrics(model, params, x, key, beta, likelihood, binarize, objective, samples)
    return weighted_mean(metrics["loss"], weights)


@functools.partial(jax.jit, static_argnames=("model", "n", "likelihood"))
def generate(model: Model, params: Params, key: jax.Array, n: int, likelihood: str = "bernoulli") -> jax.Array:
    """n images (n, *image_shape) in [0, 1]: E[x | z] for codings z drawn from the model's prior."""
    return decode(model, params, priors.sample(model, params, key, n), likelihood)


def interpolate_codings(
    codings: ArrayLike, grid: tuple[int, int] = (3, 4), size: tuple[int, int] = (5, 7)
) -> jax.Array:
    """The chapter's semantic interpolation grid.

    Codings (grid_h * grid_w, L) are laid out on a grid_h x grid_w grid and resized bilinearly to
    `size`, with half-pixel centres and edge clamping exactly as TF2's `tf.image.resize`.
    Returns: (size_h * size_w, L), row-major.
    """
    codings = jnp.asarray(codings)
    if codings.ndim != 2 or codings.shape[0] != grid[0] * grid[1]:
        raise ValueError(
            f"codings must have shape ({grid[0] * grid[1]}, latent_dim) for grid={grid}, got {codings.shape}"
        )
    if min(size) < 1:
        raise ValueError(f"size must be two positive integers, got {size}")
    if size[0] < grid[0] or size[1] < grid[1]:
        # jax.image.resize antialiases when shrinking; TF's default does not. Only enlarging is identical.
        raise ValueError(f"size must be at least grid={grid} in each dimension, got {size}")
    latent = codings.shape[1]
    grid_codings = codings.reshape(grid + (latent,))
    resized = jax.image.resize(grid_codings, tuple(size) + (latent,), method="linear")
    return resized.reshape(size[0] * size[1], latent)


@functools.partial(jax.jit, static_argnames=("model", "batch_size", "likelihood", "objective", "samples"))
def evaluate(
    model: Model,
    params: Params,
    images: jax.Array,
    key: jax.Array,
    batch_size: int = 1000,
    beta: float | jax.Array = 1.0,
    likelihood: str = "bernoulli",
    objective: str = "elbo",
    samples: int = 1,
) -> Metrics:
    """Mean loss, reconstruction, kl and rounded_accuracy (`batch_metrics`) over images
    (N, *image_shape), scored as given (a model trained with binarization: pass images binarized
    once, `likelihoods.binarize_for_evaluation`)."""
    return mean_over_batches(
        lambda batch, batch_key: batch_metrics(
            model, params, batch, batch_key, beta, likelihood, objective=objective, samples=samples
        ),
        images,
        key,
        batch_size,
    )
