"""The tolerances of the reproducibility contract (docs/reproducibility.md), for comparing two
*different* programs that compute the same training: a population member and the single run with
its seed, 8 devices and 1, the scanned epoch and the same steps called one by one, another CPU.

Only the order of float32 operations differs between them, so they are compared a few steps after
the same initial state, where rounding is still rounding; after many steps training amplifies it
(chaos, not a bug), and no bound that holds there could still catch a bug.

- Losses and metrics: relative 2**-16 (512 ulps of float32, eps = 2**-23). A mean over N examples
  of sums over D pixels is a float32 sum of N * D <= 2**20 terms here, whose relative rounding
  error is at most ~log2(N * D) = 20 ulps in a pairwise order (XLA's reductions); the losses of a
  few steps also see the parameters' rounding differences. Measured: <= 3 ulps on three CPUs.
- Parameters: in the L2 norm over the whole tree, within 1e-3 of the distance training moved them
  from their initial values. Rounding changes an update by a relative ~1e-6, except where a
  gradient is within rounding noise of zero: there Keras' RMSprop, lr * g / (sqrt(v) + 1e-7), can
  turn the noise into a whole step of up to lr / sqrt(1 - rho) = 3.16 lr, so a max-abs bound
  would have to allow whole steps (measured on an AVX2 CPU after 10 steps: one weight 3.2e-4 off,
  1e-4 of the distance moved). A real bug moves every weight: a dropped batch by about one step of
  the ten (~0.1 of the distance), a wrong seed or a swapped member by more than the distance
  itself (measured 2.1 to 12); tests/test_fit.py checks that each of the three fails this bound.
"""

from __future__ import annotations

import jax
import numpy as np

LOSS_RTOL = 2.0**-16
PARAMS_RTOL = 1e-3


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])


def params_difference(params, other_params, initial_params) -> float:
    """||params - other|| / ||other - initial|| (L2 over every leaf): the difference as a share of
    how far training moved the parameters."""
    other = _flat(other_params)
    return float(np.linalg.norm(_flat(params) - other) / np.linalg.norm(other - _flat(initial_params)))


def same_training(params, other_params, losses, other_losses, initial_params) -> bool:
    """Whether two programs trained the same model from `initial_params`: parameters within
    PARAMS_RTOL of the distance moved, and every loss within LOSS_RTOL."""
    return params_difference(params, other_params, initial_params) <= PARAMS_RTOL and np.allclose(
        losses, other_losses, rtol=LOSS_RTOL, atol=0
    )


def assert_same_training(params, other_params, losses, other_losses, initial_params) -> None:
    difference = params_difference(params, other_params, initial_params)
    assert difference <= PARAMS_RTOL, f"params differ by {difference:.3g} of the distance moved (> {PARAMS_RTOL})"
    np.testing.assert_allclose(losses, other_losses, rtol=LOSS_RTOL, atol=0)
