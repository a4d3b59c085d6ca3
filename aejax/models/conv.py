"""A convolutional VAE (`aejax.models.vae.Model`): the chapter's convolutional autoencoder shapes.

Encoder: 3 x 3 convolutions with 16, 32 and 64 channels (selu, or gated units), each with stride 2
where the chapter pools (28 -> 14 -> 7 -> 4), then Dense mean and log_var. Decoder: Dense to the
smallest feature map, then stride-2 transposed 3 x 3 convolutions back (64 -> 32 -> 16 -> C
channels, 4 -> 7 -> 14 -> 28: each output cropped to the encoder's size at that level), the last
one giving the logits of p(x | z). Any (H, W) or (H, W, C) image shape. `features` and `upsample`
are the two halves as layers of any module (`aejax.models.hvae.ConvHVAE` uses them).

Both kinds of convolution are one matmul and data movement (`Conv3x3`). Params: encoder `conv_i`,
`mean`, `log_var`; decoder `project`, `deconv_i`; each `{"kernel", "bias"}`, conv kernels
(9 * in_channels, out_channels); a gated layer has twice the out_channels (its gates).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from aejax.models.kernels import selu
from aejax.models.mlp import check_activation, dense
from aejax.models.vae import FlaxModel, FlaxVAE


class Conv3x3(nn.Module):
    """3 x 3 convolution, 'SAME' padding (as XLA's), of (N, H, W, C): stride 1 or 2, or (`transpose`)
    the stride-2 transposed convolution, output (N, 2H, 2W, features): the transpose of the stride-2
    'SAME' convolution of a (2H, 2W) input, i.e. `lax.conv` with lhs_dilation 2 and padding (1, 2).

    Kernel (9 * C, features), rows ordered (channel, kernel row, kernel column) as
    `lax.conv_general_dilated_patches`. A convolution is its input's 3 x 3 windows (nine strided
    slices) times the kernel; a transposed one computes its four output phases from 2 x 2 windows
    (`_transposed`). Both are one matmul and data movement, with no products of the zeros a dilated
    input would hold: on XLA:CPU several times faster than `lax.conv` and than
    `conv_general_dilated_patches` (itself a convolution, with a one-hot kernel)."""

    features: int
    stride: int = 1
    transpose: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (9 * channels, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        if self.transpose:
            return _transposed(x, kernel, self.features) + bias
        pads = (_same_padding(x.shape[1], self.stride), _same_padding(x.shape[2], self.stride))
        return _windows(jnp.pad(x, ((0, 0), *pads, (0, 0))), 3, self.stride) @ kernel + bias


def _same_padding(size: int, stride: int) -> tuple[int, int]:
    """XLA's 'SAME' padding of one axis for a 3-wide window: the extra one, if odd, after."""
    total = max((-(-size // stride) - 1) * stride + 3 - size, 0)
    return total // 2, total - total // 2


def _windows(x: jax.Array, size: int, stride: int) -> jax.Array:
    """(N, H, W, C), padded -> (N, H', W', size² C): every size x size window at `stride`, features
    ordered (channel, window row, window column) as `lax.conv_general_dilated_patches`."""
    n, height, width, channels = x.shape
    rows, cols = (height - size) // stride + 1, (width - size) // stride + 1
    shifted = [
        jax.lax.slice(
            x,
            (0, i, j, 0),
            (n, i + (rows - 1) * stride + 1, j + (cols - 1) * stride + 1, channels),
            (1, stride, stride, 1),
        )
        for i in range(size)
        for j in range(size)
    ]
    return jnp.stack(shifted, axis=-1).reshape(n, rows, cols, channels * size * size)


# Which tap of a 3-tap kernel axis feeds output phase p (row 2a + p) from input row a + s: the
# transposed convolution puts tap i of input row a on output row 2a + 1 - i (the equivalent
# `lax.conv`'s dilated, (1, 2)-padded input), so phase 0 takes tap 1 of row a, phase 1 taps 0 and 2
# of rows a and a + 1. _PHASE_TAPS[p, s, i] = 1 where tap i feeds phase p from shift s.
_PHASE_TAPS = np.zeros((2, 2, 3), np.float32)
_PHASE_TAPS[0, 0, 1] = _PHASE_TAPS[1, 0, 0] = _PHASE_TAPS[1, 1, 2] = 1.0


def _transposed(x: jax.Array, kernel: jax.Array, features: int) -> jax.Array:
    """The stride-2 transposed 3 x 3 convolution of (N, H, W, C) -> (N, 2H, 2W, features) by its
    four output phases: each input pixel's 2 x 2 window (itself and the next row and column) times
    one (4 C, 4 features) matrix holding each phase's taps, then the phases interleaved."""
    n, height, width, channels = x.shape
    windows = _windows(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))), 2, 1)  # (channel, shift row, shift column)
    taps = kernel.reshape(channels, 3, 3, features)
    phases = jnp.einsum("psi,qtj,cijf->cstpqf", _PHASE_TAPS, _PHASE_TAPS, taps).reshape(4 * channels, 4 * features)
    out = (windows @ phases).reshape(n, height, width, 2, 2, features)
    return out.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * height, 2 * width, features)


def feature_sizes(image_shape: Sequence[int], levels: int) -> list[tuple[int, int]]:
    """(H, W) at the input and after each stride-2 convolution: ceil halving."""
    sizes = [tuple(image_shape[:2])]
    for _ in range(levels):
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
    return sizes


def _as_nhwc(x: jax.Array, image_shape: Sequence[int]) -> tuple[jax.Array, tuple[int, ...]]:
    batch = x.shape[: x.ndim - len(image_shape)]
    return x.reshape((math.prod(batch),) + tuple(image_shape[:2]) + (math.prod(image_shape[2:]),)), batch


def activate(h: jax.Array, activation: str) -> jax.Array:
    """selu, or gated units (`aejax.models.mlp.ACTIVATIONS`): a gated layer computes twice its
    features, the second half its gates g, and gives a * sigmoid(g)."""
    if activation == "gated":
        a, g = jnp.split(h, 2, axis=-1)
        return a * jax.nn.sigmoid(g)
    return selu(h)


def _width(features: int, activation: str) -> int:
    return 2 * features if activation == "gated" else features


def features(x: jax.Array, channels: Sequence[int], image_shape: Sequence[int], activation: str) -> jax.Array:
    """Images (..., *image_shape) -> (..., F): the stride-2 convolutions `conv_i` of the calling
    module, flattened (F = the smallest map's pixels * channels[-1])."""
    h, batch = _as_nhwc(x, image_shape)
    for i, width in enumerate(channels):
        h = activate(Conv3x3(_width(width, activation), stride=2, name=f"conv_{i}")(h), activation)
    return h.reshape(batch + (-1,))


def upsample(h: jax.Array, channels: Sequence[int], image_shape: Sequence[int], activation: str) -> jax.Array:
    """(..., D) -> (..., *image_shape) logits: Dense `project` to the smallest feature map, then the
    transposed convolutions `deconv_i` of the calling module back up (`channels` as the encoder's)."""
    batch = h.shape[:-1]
    sizes = feature_sizes(image_shape, len(channels))
    height, width = sizes[-1]
    project = dense(height * width * _width(channels[-1], activation), "project")
    h = activate(project(h.reshape(-1, h.shape[-1])), activation).reshape(-1, height, width, channels[-1])
    out_channels = (*reversed(channels[:-1]), math.prod(image_shape[2:]))
    for i, out in enumerate(out_channels):
        target = sizes[len(channels) - 1 - i]
        last = i == len(out_channels) - 1
        h = Conv3x3(out if last else _width(out, activation), transpose=True, name=f"deconv_{i}")(h)
        h = h[:, : target[0], : target[1]]
        if not last:
            h = activate(h, activation)
    return h.reshape(batch + tuple(image_shape))


class Encoder(nn.Module):
    channels: Sequence[int]
    latent_dim: int
    image_shape: Sequence[int]
    activation: str = "selu"

    @nn.compact
    def __call__(self, x):
        h = features(x, self.channels, self.image_shape, self.activation)
        return dense(self.latent_dim, "mean")(h), dense(self.latent_dim, "log_var")(h)


class Decoder(nn.Module):
    channels: Sequence[int]
    image_shape: Sequence[int]
    activation: str = "selu"

    @nn.compact
    def __call__(self, z):
        return upsample(z, self.channels, self.image_shape, self.activation)


@dataclasses.dataclass(frozen=True)
class Conv(FlaxModel):
    """The conv VAE's settings (their help: `aejax.training.fit.Config`)."""

    NAME = "conv"

    channels: tuple[int, ...] = (16, 32, 64)
    latent_dim: int = 10
    image_shape: tuple[int, ...] = (28, 28)  # (H, W) or (H, W, C)
    activation: str = "selu"  # or "gated" (`activate`)

    def __post_init__(self):
        self.check_settings("channels")
        check_activation(self.activation)

    def modules(self) -> FlaxVAE:
        return FlaxVAE(
            Encoder(self.channels, self.latent_dim, self.image_shape, self.activation),
            Decoder(self.channels, self.image_shape, self.activation),
            self.latent_dim,
            self.image_shape,
        )
