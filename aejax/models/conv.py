"""A convolutional VAE (`aejax.models.vae.Model`): the chapter's convolutional autoencoder shapes.

Encoder: 3 x 3 convolutions with 16, 32 and 64 channels (selu), each with stride 2 where the
chapter pools (28 -> 14 -> 7 -> 4), then Dense mean and log_var. Decoder: Dense to the smallest
feature map (selu), then stride-2 transposed 3 x 3 convolutions back (64 -> 32 -> 16 -> C
channels, 4 -> 7 -> 14 -> 28: each output cropped to the encoder's size at that level), the last
one giving the logits of p(x | z). Any (H, W) or (H, W, C) image shape.

Both kinds of convolution are patches times a matrix (`lax.conv_general_dilated_patches`, then a
matmul): on XLA:CPU this is several times faster than `lax.conv` inside the training scan, and the
same on accelerators. Params: encoder `conv_i`, `mean`, `log_var`; decoder `project`, `deconv_i`;
each `{"kernel", "bias"}`, conv kernels (9 * in_channels, out_channels).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
from flax import linen as nn

from aejax.models.kernels import selu
from aejax.models.mlp import dense
from aejax.models.vae import FlaxModel, FlaxVAE

_LAYOUT = ("NHWC", "OIHW", "NHWC")


class PatchConv(nn.Module):
    """3 x 3 convolution, 'SAME' padding, of (N, H, W, C): stride 1 or 2, or (`transpose`) the
    stride-2 transposed convolution, output (N, 2H, 2W, features)."""

    features: int
    stride: int = 1
    transpose: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (9 * x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        if self.transpose:  # the input dilated by 2, padded so that the output is exactly twice as large
            patches = jax.lax.conv_general_dilated_patches(
                x, (3, 3), (1, 1), ((1, 2), (1, 2)), lhs_dilation=(2, 2), dimension_numbers=_LAYOUT
            )
        else:
            patches = jax.lax.conv_general_dilated_patches(
                x, (3, 3), (self.stride,) * 2, "SAME", dimension_numbers=_LAYOUT
            )
        return patches @ kernel + bias


def feature_sizes(image_shape: Sequence[int], levels: int) -> list[tuple[int, int]]:
    """(H, W) at the input and after each stride-2 convolution: ceil halving."""
    sizes = [tuple(image_shape[:2])]
    for _ in range(levels):
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
    return sizes


def _as_nhwc(x: jax.Array, image_shape: Sequence[int]) -> tuple[jax.Array, tuple[int, ...]]:
    batch = x.shape[: x.ndim - len(image_shape)]
    return x.reshape((math.prod(batch),) + tuple(image_shape[:2]) + (math.prod(image_shape[2:]),)), batch


class Encoder(nn.Module):
    channels: Sequence[int]
    latent_dim: int
    image_shape: Sequence[int]

    @nn.compact
    def __call__(self, x):
        h, batch = _as_nhwc(x, self.image_shape)
        for i, features in enumerate(self.channels):
            h = selu(PatchConv(features, stride=2, name=f"conv_{i}")(h))
        h = h.reshape(h.shape[0], -1)
        mean, log_var = dense(self.latent_dim, "mean")(h), dense(self.latent_dim, "log_var")(h)
        return mean.reshape(batch + (self.latent_dim,)), log_var.reshape(batch + (self.latent_dim,))


class Decoder(nn.Module):
    channels: Sequence[int]
    image_shape: Sequence[int]

    @nn.compact
    def __call__(self, z):
        batch = z.shape[:-1]
        sizes = feature_sizes(self.image_shape, len(self.channels))
        height, width = sizes[-1]
        h = selu(dense(height * width * self.channels[-1], "project")(z.reshape(-1, z.shape[-1])))
        h = h.reshape(-1, height, width, self.channels[-1])
        out_channels = (*reversed(self.channels[:-1]), math.prod(self.image_shape[2:]))
        for i, features in enumerate(out_channels):
            target = sizes[len(self.channels) - 1 - i]
            h = PatchConv(features, transpose=True, name=f"deconv_{i}")(h)[:, : target[0], : target[1]]
            if i < len(out_channels) - 1:
                h = selu(h)
        return h.reshape(batch + tuple(self.image_shape))


@dataclasses.dataclass(frozen=True)
class Conv(FlaxModel):
    """The conv VAE's settings (their help: `aejax.training.fit.Config`)."""

    NAME = "conv"

    channels: tuple[int, ...] = (16, 32, 64)
    latent_dim: int = 10
    image_shape: tuple[int, ...] = (28, 28)  # (H, W) or (H, W, C)

    def __post_init__(self):
        self.check_settings("channels")

    def modules(self) -> FlaxVAE:
        return FlaxVAE(
            Encoder(self.channels, self.latent_dim, self.image_shape),
            Decoder(self.channels, self.image_shape),
            self.latent_dim,
            self.image_shape,
        )
