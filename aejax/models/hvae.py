"""A VAE with two stochastic layers, z2 -> z1 -> x (the HVAE of Tomczak & Welling 2018), as a
hierarchical model of the interface (`aejax.models.vae.Model`, `aejax.models.priors`).

Generation: p(z2) (N(0, I), or the VampPrior with `priors.VampPrior`), p(z1 | z2) a diagonal
Gaussian from an MLP of z2, and p(x | z1, z2): z1 and z2 each through a hidden layer, joined by a
third, then to the logits. Inference: q(z2 | x) from an MLP of the image, then q(z1 | x, z2): the
image and z2 each through a hidden layer, joined by a third. The MLPs have `hidden_sizes`; the
joining blocks are `hidden_sizes[-1]` wide (the reference's: 300, 300 and gated units).
`ConvHVAE` is the same model with convolutional networks where the image goes in or comes out.

The codings are z = (z2, z1), `layer_dim` each (`latent_dim` = 2 * layer_dim, `top_dim` = layer_dim).
`encode` gives q(z2 | x) and q(z1 | x, z2) at z2's mean (the posterior's location, for figures and
diagnostics); a draw starts from q(z2 | x) alone (`encode_top`), takes z2, and q(z1 | x, z2) at it
(`draw_posterior`).
Params: `{"encoder": {"top", "lower"}, "conditional_prior", "decoder"}`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from aejax.models import conv, mlp
from aejax.models.vae import FlaxModel, Params, reparameterize


def _joined(a: jax.Array, b: jax.Array, width: int, activation: str) -> jax.Array:
    """a and b each through a hidden layer, broadcast against each other, joined by a third."""
    ha, hb = mlp.hidden_layer(a, width, "a", activation), mlp.hidden_layer(b, width, "b", activation)
    shape = jnp.broadcast_shapes(ha.shape, hb.shape)
    h = jnp.concatenate([jnp.broadcast_to(ha, shape), jnp.broadcast_to(hb, shape)], axis=-1)
    return mlp.hidden_layer(h, width, "joint", activation)


class LowerEncoder(nn.Module):
    """Images (B, *image_shape) and top codings (..., B, layer_dim) -> mean, log_var of q(z1 | x, z2).
    The image enters flattened, or (`channels`) through stride-2 convolutions (`conv.features`)."""

    width: int
    layer_dim: int
    image_shape: Sequence[int]
    activation: str
    channels: Sequence[int] = ()

    @nn.compact
    def __call__(self, x, z2):
        if self.channels:
            x = conv.features(x, self.channels, self.image_shape, self.activation)
        else:
            x = mlp.flatten(x, self.image_shape)
        h = _joined(x, z2, self.width, self.activation)
        return mlp.dense(self.layer_dim, "mean")(h), mlp.dense(self.layer_dim, "log_var")(h)


class Decoder(nn.Module):
    """Codings (..., 2 * layer_dim) = (z2, z1) -> (..., *image_shape) logits of p(x | z1, z2): the
    joined hidden layer to the logits by a Dense layer, or (`channels`) by transposed convolutions
    (`conv.upsample`)."""

    width: int
    layer_dim: int
    image_shape: Sequence[int]
    activation: str
    channels: Sequence[int] = ()

    @nn.compact
    def __call__(self, z):
        h = _joined(z[..., self.layer_dim :], z[..., : self.layer_dim], self.width, self.activation)
        if self.channels:
            return conv.upsample(h, self.channels, self.image_shape, self.activation)
        return mlp.dense(math.prod(self.image_shape), "logits")(h).reshape(z.shape[:-1] + tuple(self.image_shape))


@dataclasses.dataclass(frozen=True)
class HVAE(FlaxModel):
    """The two-level VAE's settings (their help: `aejax.training.settings.ModelSettings`)."""

    NAME = "hvae"

    hidden_sizes: tuple[int, ...] = (300, 300)
    layer_dim: int = 40
    activation: str = "gated"
    image_shape: tuple[int, ...] = (28, 28)
    channels = ()  # the image networks are MLPs (`ConvHVAE`: convolutions)

    def __post_init__(self):
        self.check_settings("hidden_sizes")
        mlp.check_activation(self.activation)

    @property
    def latent_dim(self) -> int:
        return 2 * self.layer_dim

    @property
    def top_dim(self) -> int:
        return self.layer_dim

    def _modules(self) -> dict[str, nn.Module]:
        width, d, shape, act = self.hidden_sizes[-1], self.layer_dim, self.image_shape, self.activation
        if self.channels:
            top = conv.Encoder(self.channels, d, shape, act)
        else:
            top = mlp.Encoder(self.hidden_sizes, d, shape, act)
        return {
            "top": top,
            "lower": LowerEncoder(width, d, shape, act, self.channels),
            "conditional_prior": mlp.Encoder(self.hidden_sizes, d, (d,), act),
            "decoder": Decoder(width, d, shape, act, self.channels),
        }

    @functools.partial(jax.jit, static_argnums=0)  # one compilation, not one per layer's operations
    def init(self, key: jax.Array) -> Params:
        keys = dict(zip(("top", "lower", "conditional_prior", "decoder"), jax.random.split(key, 4)))
        modules, x, z2 = self._modules(), jnp.zeros((1,) + tuple(self.image_shape)), jnp.zeros((1, self.layer_dim))

        def init(name, *args):
            return modules[name].init(keys[name], *args)["params"]

        return {
            "encoder": {"top": init("top", x), "lower": init("lower", x, z2)},
            "conditional_prior": init("conditional_prior", z2),
            "decoder": init("decoder", jnp.zeros((1, self.latent_dim))),
        }

    def _lower(self, params: Params, x: jax.Array, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._modules()["lower"].apply({"params": params["encoder"]["lower"]}, x, z2)

    def encode_top(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, log_var) of q(z2 | x), each (..., layer_dim)."""
        return self._modules()["top"].apply({"params": params["encoder"]["top"]}, x)

    def encode(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean2, log_var2 = self.encode_top(params, x)
        mean1, log_var1 = self._lower(params, x, mean2)
        return jnp.concatenate([mean2, mean1], -1), jnp.concatenate([log_var2, log_var1], -1)

    def draw_posterior(
        self, params: Params, x: jax.Array, mean: jax.Array, log_var: jax.Array, eps: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """z = (z2, z1) from noise eps (..., latent_dim); (mean, log_var) are q(z2 | x)'s (`encode_top`),
        or `encode`'s, of which only the top layer's part is read."""
        d = self.layer_dim
        z2 = reparameterize(mean[..., :d], log_var[..., :d], eps[..., :d])
        mean1, log_var1 = self._lower(params, x, z2)
        z1 = reparameterize(mean1, log_var1, eps[..., d:])
        return jnp.concatenate([z2, z1], -1), jnp.concatenate(
            [jnp.broadcast_to(log_var[..., :d], z2.shape), log_var1], -1
        )

    def conditional_prior(self, params: Params, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._modules()["conditional_prior"].apply({"params": params["conditional_prior"]}, z2)

    def decode_logits(self, params: Params, z: jax.Array) -> jax.Array:
        return self._modules()["decoder"].apply({"params": params["decoder"]}, z)


@dataclasses.dataclass(frozen=True)
class ConvHVAE(HVAE):
    """The two-level VAE with convolutional image networks (the role of Tomczak & Welling 2018's
    ConvHVAE): q(z2 | x) is the conv VAE's encoder (stride-2 3 x 3 convolutions with `channels`,
    then the Gaussian's Dense layers), q(z1 | x, z2) joins the same convolutions' features of the
    image with z2, and p(x | z1, z2) takes the joined hidden layer to the image by the conv VAE's
    decoder (a Dense layer to the smallest feature map, then transposed convolutions). p(z1 | z2)
    and the joining layers are the HVAE's MLPs (`hidden_sizes`); every unit is `activation`'s.
    The reference's 7 x 7 and 5 x 5 kernels and its decoder's full-resolution gated convolutions
    are not used (docs/ladder.md counts what they cost)."""

    NAME = "conv_hvae"

    channels: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self):
        super().__post_init__()
        self.check_settings("channels")
