"""The chapter-17 variational autoencoder as pure functions over a Flax params pytree.

Encoder: flatten -> Dense 150 selu -> Dense 100 selu -> mean, log_var (Dense 10 each).
Decoder: Dense 100 selu -> Dense 150 selu -> Dense 784 logits of p(x | z) (`aejax.models.likelihoods`).
Params: `{"encoder": {"hidden_0", ..., "mean", "log_var"}, "decoder": {"hidden_0", ..., "logits"}}`,
each layer `{"kernel": (in, out), "bias": (out,)}` float32; `architecture(params)` checks the whole
tree and reads the sizes back, so `encode`/`decode` need no config.

Inputs are checked where it costs nothing after compilation (dtype and shape, at trace time);
value checks (pixels in [0, 1], finite parameters) run under `aejax.checks.checked`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.experimental import checkify
from jax.typing import ArrayLike

from aejax.config import check_types, fail, option
from aejax.models import likelihoods
from aejax.models.kernels import selu
from aejax.training.train import Metrics, mean_over_batches, weighted_mean

Params = dict
IMAGE_SHAPE = (28, 28)
IMAGE_PIXELS = 784
ACTIVATIONS = ("selu", "gated")


class Architecture(NamedTuple):
    """What a params tree encodes: hidden layer sizes, latent size and the hidden units' kind."""

    hidden_sizes: tuple[int, ...]
    latent_dim: int
    activation: str


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture and observation model; the defaults are the chapter's VAE."""

    hidden_sizes: tuple[int, ...] = option((150, 100), "encoder hidden layer sizes; the decoder mirrors them")
    latent_dim: int = option(10, "size of the latent codings z")
    likelihood: str = option("bernoulli", "observation model p(x|z): see aejax/models/likelihoods.py",
                             choices=likelihoods.SETTINGS)
    activation: str = option("selu", "hidden units: 'selu' (the chapter's) or 'gated' ((W x + b) * sigmoid(V x + c), "
                             "the gated dense layers of the literature's MLP VAEs)", choices=ACTIVATIONS)

    def __post_init__(self):
        check_types(self)
        if self.activation not in ACTIVATIONS:
            fail("activation", f"must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not self.hidden_sizes or min(self.hidden_sizes) <= 0:
            fail("hidden_sizes", f"must be one or more positive integers, got {self.hidden_sizes!r}")
        if self.latent_dim <= 0:
            fail("latent_dim", f"must be a positive integer, got {self.latent_dim!r}")
        if self.likelihood not in likelihoods.SETTINGS:
            fail("likelihood", f"must be one of {likelihoods.SETTINGS}, got {self.likelihood!r}")


def _dense(features: int, name: str) -> nn.Dense:
    # Keras' Dense defaults, as in the chapter: Glorot-uniform kernel, zero bias.
    return nn.Dense(features, kernel_init=nn.initializers.glorot_uniform(), name=name)


def _hidden(h: jax.Array, features: int, index: int, activation: str) -> jax.Array:
    if activation == "gated":  # Dauphin et al. 2017; Tomczak & Welling 2018's MLP VAEs
        return _dense(features, f"hidden_{index}")(h) * jax.nn.sigmoid(_dense(features, f"gate_{index}")(h))
    return selu(_dense(features, f"hidden_{index}")(h))


class Encoder(nn.Module):
    """(..., 28, 28) in [0, 1] -> mean, log_var, each (..., latent_dim)."""

    hidden_sizes: Sequence[int]
    latent_dim: int
    activation: str = "selu"

    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[:-2] + (IMAGE_PIXELS,))
        for i, features in enumerate(self.hidden_sizes):
            h = _hidden(h, features, i, self.activation)
        return _dense(self.latent_dim, "mean")(h), _dense(self.latent_dim, "log_var")(h)


class Decoder(nn.Module):
    """(..., latent_dim) codings -> (..., 28, 28) logits of p(x | z)."""

    hidden_sizes: Sequence[int]
    activation: str = "selu"

    @nn.compact
    def __call__(self, z):
        h = z
        for i, features in enumerate(self.hidden_sizes):
            h = _hidden(h, features, i, self.activation)
        return _dense(IMAGE_PIXELS, "logits")(h).reshape(z.shape[:-1] + IMAGE_SHAPE)


def init(key: jax.Array, config: VAEConfig = VAEConfig()) -> Params:
    """Params pytree `{"encoder": …, "decoder": …}`; decoder hidden sizes mirror the encoder's."""
    encoder_key, decoder_key = jax.random.split(key)
    encoder = Encoder(config.hidden_sizes, config.latent_dim, config.activation)
    decoder = Decoder(tuple(reversed(config.hidden_sizes)), config.activation)
    return {
        "encoder": encoder.init(encoder_key, jnp.zeros((1,) + IMAGE_SHAPE))["params"],
        "decoder": decoder.init(decoder_key, jnp.zeros((1, config.latent_dim)))["params"],
    }


def parameter_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter of a VAE, by path ("encoder/hidden_0/kernel": (784, 150), …)."""
    shapes = {}
    layers = ("hidden", "gate") if config.activation == "gated" else ("hidden",)
    latent_dim = config.latent_dim
    for half, sizes, inputs in (("encoder", config.hidden_sizes, IMAGE_PIXELS),
                                ("decoder", tuple(reversed(config.hidden_sizes)), latent_dim)):
        for i, size in enumerate(sizes):
            for layer in layers:
                shapes[f"{half}/{layer}_{i}/kernel"], shapes[f"{half}/{layer}_{i}/bias"] = (inputs, size), (size,)
            inputs = size
        heads = (("mean", latent_dim), ("log_var", latent_dim)) if half == "encoder" else (("logits", IMAGE_PIXELS),)
        for name, size in heads:
            shapes[f"{half}/{name}/kernel"], shapes[f"{half}/{name}/bias"] = (inputs, size), (size,)
    return shapes


def _leaves(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        return {k: v for name, sub in tree.items() for k, v in _leaves(sub, f"{prefix}{name}/").items()}
    return {prefix.rstrip("/"): tree}


def architecture(params: Params) -> Architecture:
    """(hidden_sizes, latent_dim, activation) of VAE params, after checking the whole tree's names, shapes,
    dtypes and consistency (decoder mirrors encoder, one latent size). Raises ValueError naming
    every difference from the VAE that the encoder's biases imply."""
    if not isinstance(params, dict) or set(params) != {"encoder", "decoder"}:
        found = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be a dict with exactly 'encoder' and 'decoder' (a VAE's), got {found}")
    leaves = _leaves(params)
    encoder = params["encoder"] if isinstance(params["encoder"], dict) else {}
    num_hidden = sum(isinstance(name, str) and name.startswith("hidden_") for name in encoder)
    try:  # sizes from the biases, so that a wrongly shaped kernel is the one named
        hidden = tuple(int(np.shape(encoder[f"hidden_{i}"]["bias"])[0]) for i in range(num_hidden))
        latent = int(np.shape(encoder["mean"]["bias"])[0])
    except (KeyError, IndexError, TypeError):
        raise ValueError(
            "params are not a VAE's: the encoder needs hidden_0 … hidden_<n> and mean/log_var Dense layers "
            f"(kernel, bias), found {sorted(leaves)[:8]}{' …' if len(leaves) > 8 else ''}"
        ) from None
    activation = "gated" if "gate_0" in encoder else "selu"
    try:
        expected = parameter_shapes(VAEConfig(hidden, latent, activation=activation))
    except ValueError as err:  # e.g. a zero-sized layer
        raise ValueError(f"params do not form a VAE: {err}") from None
    problems = [f"{name} is missing" for name in expected if name not in leaves]
    problems += [f"{name} is unexpected" for name in leaves if name not in expected]
    for name, value in leaves.items():
        if name in expected:
            shape = tuple(np.shape(value))
            dtype = value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype
            if shape != expected[name]:
                problems.append(f"{name} has shape {shape}, expected {expected[name]}")
            if not jnp.issubdtype(dtype, jnp.floating):
                problems.append(f"{name} has dtype {dtype}, expected floating point")
    if problems:
        raise ValueError(
            f"params do not form one VAE (hidden sizes {hidden}, latent size {latent} from the encoder): "
            + "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        )
    return Architecture(hidden, latent, activation)


def check_params(params: Params) -> Architecture:
    """`architecture(params)` plus a check that every value is finite (needs concrete arrays)."""
    shape = architecture(params)
    for name, value in _leaves(params).items():
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(np.asarray(value))))
        if bad:
            raise ValueError(f"params {name} holds {bad} NaN/inf value(s) of {np.size(value)}: "
                             "the model diverged or the file is damaged")
    return shape


def latent_dim(params: Params) -> int:
    return architecture(params).latent_dim


def _check_images(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"images must be floating-point pixels in [0, 1], got dtype {x.dtype} "
            "(uint8 images: use aejax.data.to_unit_float or divide by 255)"
        )
    if x.ndim < 2 or x.shape[-2:] != IMAGE_SHAPE:
        raise ValueError(f"images must have shape (..., 28, 28), got {x.shape}")
    x = x.astype(jnp.float32)
    checkify.debug_check(jnp.all((x >= 0) & (x <= 1)), "images must lie in [0, 1] (and be finite)")
    return x


def _check_finite_params(params: Params, half: str) -> None:
    for name, value in _leaves(params[half], f"{half}/").items():
        checkify.debug_check(jnp.all(jnp.isfinite(value)), f"params {name} must be finite")


def encode(params: Params, x: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Images (..., 28, 28) float in [0, 1] -> (mean, log_var) of q(z | x), each (..., latent_dim)."""
    hidden, latent, activation = architecture(params)
    x = _check_images(x)
    _check_finite_params(params, "encoder")
    return Encoder(hidden, latent, activation).apply({"params": params["encoder"]}, x)


def decode_logits(params: Params, z: ArrayLike) -> jax.Array:
    """Codings (..., latent_dim) -> (..., 28, 28) logits of p(x | z)."""
    hidden, latent, activation = architecture(params)
    z = jnp.asarray(z)
    if z.ndim < 1 or z.shape[-1] != latent:
        raise ValueError(f"codings must have shape (..., {latent}) for these params, got {z.shape}")
    _check_finite_params(params, "decoder")
    return Decoder(tuple(reversed(hidden)), activation).apply({"params": params["decoder"]}, z)


def decode(params: Params, z: ArrayLike, likelihood: str = "bernoulli") -> jax.Array:
    """Codings (..., latent_dim) -> (..., 28, 28) images E[x | z] in [0, 1] (sigmoid(logits) for Bernoulli)."""
    return likelihoods.mean(likelihoods.pixel_kind(likelihood), decode_logits(params, z))


def reparameterize(mean: ArrayLike, log_var: ArrayLike, noise: ArrayLike) -> jax.Array:
    """z = mean + exp(log_var / 2) * noise (the chapter's Sampling layer); shape of `mean`."""
    return mean + jnp.exp(log_var / 2) * noise


def sample_latent(key: jax.Array, mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
    """Reparameterised draw z = mean + exp(log_var / 2) * eps, eps ~ N(0, I); shape of `mean`."""
    return reparameterize(mean, log_var, jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean)))


def kl_divergence(mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
    """KL(N(mean, exp(log_var)) || N(0, I)) in nats, summed over the last axis: shape (...)."""
    # expm1 keeps exp(log_var) - 1 - log_var accurate when log_var is near 0.
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.expm1(log_var) - log_var, axis=-1)


def rounded_accuracy(targets: ArrayLike, probabilities: ArrayLike) -> jax.Array:
    """The chapter's metric: share of pixels where round(target) == round(output); shape (B,)."""
    agree = jnp.round(targets) == jnp.round(probabilities)
    return jnp.mean(agree, axis=(-2, -1))


def _rounded_accuracy_from_logits(targets: jax.Array, logits: jax.Array) -> jax.Array:
    # Every likelihood's E[x | z] exceeds 1/2 exactly when the logit is > 0 (round half to even
    # sends 0.5 to 0), so no sigmoid is needed.
    agree = jnp.round(targets) == (logits > 0).astype(targets.dtype)
    return jnp.mean(agree, axis=(-2, -1))


def batch_metrics(
    params: Params, x: ArrayLike, key: jax.Array, beta: float | jax.Array = 1.0, likelihood: str = "bernoulli"
) -> Metrics:
    """Per-example metrics for one latent draw each; every value has shape (B,).

    loss = reconstruction + beta * kl / 784 (the chapter's per-pixel scale); reconstruction =
    -log p(x | z) per pixel (nats; the BCE for "bernoulli"); kl (nats); rounded_accuracy.
    "binarized" first replaces x by a Bernoulli draw from `fold_in(key, 1)`; the latent noise
    always comes from `key`.
    """
    x = _check_images(x)
    if likelihood == "binarized":
        x = likelihoods.binarize(jax.random.fold_in(key, 1), x)
    mean, log_var = encode(params, x)
    logits = decode_logits(params, sample_latent(key, mean, log_var))
    reconstruction = -jnp.mean(likelihoods.log_prob(likelihoods.pixel_kind(likelihood), logits, x), axis=(-2, -1))
    kl = kl_divergence(mean, log_var)
    return {
        "loss": reconstruction + beta * kl / IMAGE_PIXELS,
        "reconstruction": reconstruction,
        "kl": kl,
        "rounded_accuracy": _rounded_accuracy_from_logits(x, logits),
    }


def loss(
    params: Params, x: ArrayLike, key: jax.Array, beta: float | jax.Array = 1.0,
    weights: jax.Array | None = None, likelihood: str = "bernoulli",
) -> jax.Array:
    """The chapter's loss, a scalar: batch mean of reconstruction + beta * KL / 784 (loss * 784 ≈ -ELBO).

    `weights` (B,) of 0/1 restrict the mean to the rows marked 1 (a padded last batch).
    """
    if isinstance(beta, (int, float)) and not 0 <= beta < float("inf"):
        raise ValueError(f"beta must be a finite number >= 0 (beta = 1 is the chapter's VAE), got {beta!r}")
    return weighted_mean(batch_metrics(params, x, key, beta, likelihood)["loss"], weights)


@functools.partial(jax.jit, static_argnames=("n", "likelihood"))
def generate(params: Params, key: jax.Array, n: int, likelihood: str = "bernoulli") -> jax.Array:
    """n images (n, 28, 28) in [0, 1]: E[x | z] for codings z drawn from the prior N(0, I)."""
    return decode(params, jax.random.normal(key, (n, latent_dim(params))), likelihood)


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


@functools.partial(jax.jit, static_argnames=("batch_size", "likelihood"))
def evaluate(
    params: Params, images: jax.Array, key: jax.Array, batch_size: int = 1000,
    beta: float | jax.Array = 1.0, likelihood: str = "bernoulli",
) -> Metrics:
    """Mean loss, reconstruction, kl and rounded_accuracy over images (N, 28, 28), one latent draw each.

    For a "binarized" model pass images binarized once (`likelihoods.binarize_for_evaluation`):
    they are scored as given, as 0/1 pixels.
    """
    kind = likelihoods.pixel_kind(likelihood)
    return mean_over_batches(
        lambda batch, batch_key: batch_metrics(params, batch, batch_key, beta, kind), images, key, batch_size
    )
