"""The tolerances of the reproducibility contract (docs/reproducibility.md), for comparing two
*different* programs that compute the same training: a population member and the single run with
its seed, 8 devices and 1, the scanned epoch and the same steps called one by one, another CPU.

Only the order of float32 operations differs between them, so they are compared a few steps after
the same state, where rounding is still rounding; after many steps training amplifies it (chaos,
not a bug), and no bound that holds there could still catch a bug.

- Losses and metrics: relative 2**-16 (512 ulps of float32, eps = 2**-23). A mean over N examples
  of sums over D pixels is a float32 sum of N * D <= 2**20 terms here, whose relative rounding
  error is at most ~log2(N * D) = 20 ulps in a pairwise order (XLA's reductions); the losses of a
  few steps also see the parameters' own rounding differences (below, ~1e-6 relative). Measured:
  <= 3 ulps (0.7 ± 3.5e-7) on three CPUs.
- Parameters: 1% of one optimiser step. Keras' RMSprop moves a weight by lr * g / (sqrt(v) + eps)
  with v >= (1 - rho) g^2, so by at most lr / sqrt(1 - rho) = 3.16 lr per step whatever the
  gradient; a rounding-level gradient difference changes that step far less, except for
  gradients near zero, where the update lr * g / eps turns a difference of 1e-10 into 1e-6.
  Measured after 10 steps: at most 3.4e-6 at lr 3e-3 (3.6e-4 of a step) on an AVX2 CPU, 0 to
  1.6e-6 elsewhere. A real bug moves weights by whole steps: a dropped batch by ~1 step, a wrong
  seed or a swapped member by the initialisation's scale (~0.1); tests/test_fit.py checks that
  each of the three fails this bound.
"""

from __future__ import annotations

import math

import jax
import numpy as np

LOSS_RTOL = 2.0**-16
RMSPROP_MAX_STEP = 1 / math.sqrt(1 - 0.9)  # the chapter recipe's largest move per step, in units of lr


def param_tolerance(learning_rate: float) -> float:
    """1% of the largest RMSprop step at `learning_rate`: the bound on |params - params'|."""
    return 0.01 * RMSPROP_MAX_STEP * learning_rate


def max_difference(a, b) -> float:
    """max |a - b| over every leaf of two pytrees of the same structure."""
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def same_training(params, other_params, losses, other_losses, learning_rate: float) -> bool:
    """Whether two programs trained the same model: parameters within `param_tolerance` and every
    loss within LOSS_RTOL."""
    return (max_difference(params, other_params) <= param_tolerance(learning_rate)
            and np.allclose(losses, other_losses, rtol=LOSS_RTOL, atol=0))


def assert_same_training(params, other_params, losses, other_losses, learning_rate: float) -> None:
    difference = max_difference(params, other_params)
    assert difference <= param_tolerance(learning_rate), (
        f"params differ by {difference:.3g} > {param_tolerance(learning_rate):.3g} (1% of one step)")
    np.testing.assert_allclose(losses, other_losses, rtol=LOSS_RTOL, atol=0)
