"""Elementwise forms tuned for XLA:CPU: the one place where aejax trades the textbook form for speed.

Each function equals a standard form (values within float32 round-off, derivatives bitwise for
`max0`), and `tests/test_kernels.py` checks that equivalence:

| here | standard form |
|---|---|
| `max0` | `jnp.maximum(x, 0.0)`, with its derivative (1/2 at x == 0) |
| `selu` | `jax.nn.selu` |
| `sigmoid_cross_entropy` | `optax.sigmoid_binary_cross_entropy` |

The VAE uses these forms, so the chapter run's parameters are reproducible bit for bit; why each
is faster, and by how much, is measured in `benchmarks/README.md`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


@jax.custom_jvp
def max0(x: ArrayLike) -> jax.Array:
    """max(x, 0) with jnp.maximum's derivative (1, 0, and 1/2 at x == 0), taken with selects.

    jnp.maximum's own derivative splits ties with a division per element. Ties do occur (a float32
    sum can cancel to exactly 0), so the tie value must match for the parameters to match.
    """
    return jnp.maximum(x, 0.0)


@max0.defjvp
def _max0_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return max0(x), jnp.where(x > 0, dx, jnp.where(x < 0, 0.0, 0.5 * dx))


def selu(x: ArrayLike) -> jax.Array:
    """SELU (Klambauer et al. 2017) as scale * (max(x, 0) + alpha * (exp(min(x, 0)) - 1)); shape of `x`.

    Equal to `jax.nn.selu` within 2.4e-7 (exp(x) - 1 instead of expm1 near 0), without its select
    between two branches.
    """
    return SELU_SCALE * (max0(x) + SELU_ALPHA * (jnp.exp(-max0(-x)) - 1.0))


def sigmoid_cross_entropy(logits: ArrayLike, targets: ArrayLike) -> jax.Array:
    """Per-element -[t log sigmoid(l) + (1 - t) log(1 - sigmoid(l))] in nats; shape of `logits`.

    Written as max(l, 0) + log(1 + exp(-|l|)) - t * l: it never overflows, and needs one exp and
    one log per element. With exp(-|l|) in (0, 1], log(1 + e) is within 6e-8 nats of log1p(e).
    """
    logits = jnp.asarray(logits)
    return max0(logits) + jnp.log(1.0 + jnp.exp(-jnp.abs(logits))) - targets * logits
