"""The chapter-17 VAE: a multilayer perceptron on flattened images (`aejax.models.vae.Model`).

Encoder: flatten -> Dense 150 selu -> Dense 100 selu -> mean, log_var (Dense 10 each).
Decoder: Dense 100 selu -> Dense 150 selu -> Dense (pixels) logits, reshaped to the image.
Params: `{"encoder": {"hidden_0", ..., "mean", "log_var"}, "decoder": {"hidden_0", ..., "logits"}}`,
each layer `{"kernel": (in, out), "bias": (out,)}` float32 (with "gated": a `gate_i` beside each
`hidden_i`). The defaults are the chapter's, on 28 x 28 grey images.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
from flax import linen as nn

from aejax.config import fail
from aejax.models.kernels import selu
from aejax.models.vae import FlaxModel, FlaxVAE

ACTIVATIONS = ("selu", "gated")


def check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        fail("activation", f"must be one of {ACTIVATIONS}, got {activation!r}")


def dense(features: int, name: str) -> nn.Dense:
    # Keras' Dense defaults, as in the chapter: Glorot-uniform kernel, zero bias.
    return nn.Dense(features, kernel_init=nn.initializers.glorot_uniform(), name=name)


def hidden_layer(h: jax.Array, features: int, index: int | str, activation: str) -> jax.Array:
    """A hidden layer named `hidden_{index}` (and `gate_{index}`): selu, or gated units."""
    if activation == "gated":  # Dauphin et al. 2017; Tomczak & Welling 2018's MLP VAEs
        return dense(features, f"hidden_{index}")(h) * jax.nn.sigmoid(dense(features, f"gate_{index}")(h))
    return selu(dense(features, f"hidden_{index}")(h))


def flatten(x: jax.Array, image_shape: Sequence[int]) -> jax.Array:
    """Images (..., *image_shape) -> (..., pixels)."""
    return x.reshape(x.shape[: x.ndim - len(image_shape)] + (math.prod(image_shape),))


class Encoder(nn.Module):
    """(..., *image_shape) in [0, 1] -> mean, log_var, each (..., latent_dim)."""

    hidden_sizes: Sequence[int]
    latent_dim: int
    image_shape: Sequence[int]
    activation: str = "selu"

    @nn.compact
    def __call__(self, x):
        h = flatten(x, self.image_shape)
        for i, features in enumerate(self.hidden_sizes):
            h = hidden_layer(h, features, i, self.activation)
        return dense(self.latent_dim, "mean")(h), dense(self.latent_dim, "log_var")(h)


class Decoder(nn.Module):
    """(..., latent_dim) codings -> (..., *image_shape) logits of p(x | z)."""

    hidden_sizes: Sequence[int]
    image_shape: Sequence[int]
    activation: str = "selu"

    @nn.compact
    def __call__(self, z):
        h = z
        for i, features in enumerate(self.hidden_sizes):
            h = hidden_layer(h, features, i, self.activation)
        return dense(math.prod(self.image_shape), "logits")(h).reshape(z.shape[:-1] + tuple(self.image_shape))


@dataclasses.dataclass(frozen=True)
class MLP(FlaxModel):
    """The MLP VAE's settings (their help: `aejax.training.fit.Config`); the decoder mirrors the encoder."""

    NAME = "mlp"

    hidden_sizes: tuple[int, ...] = (150, 100)
    latent_dim: int = 10
    activation: str = "selu"  # or "gated": (W x + b) * sigmoid(V x + c)
    image_shape: tuple[int, ...] = (28, 28)  # (H, W) or (H, W, C)

    def __post_init__(self):
        self.check_settings("hidden_sizes")
        check_activation(self.activation)

    def modules(self) -> FlaxVAE:
        return FlaxVAE(
            Encoder(self.hidden_sizes, self.latent_dim, self.image_shape, self.activation),
            Decoder(tuple(reversed(self.hidden_sizes)), self.image_shape, self.activation),
            self.latent_dim,
            self.image_shape,
        )
