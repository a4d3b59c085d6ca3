"""The chapter's synthetic 3-D data set (`generate_3d_data`)."""

from __future__ import annotations

import numpy as np


def synthetic_3d(m: int = 60, *, seed: int = 4, w1: float = 0.1, w2: float = 0.3, noise: float = 0.1) -> np.ndarray:
    """The chapter's `generate_3d_data(m)` after `np.random.seed(seed)`, centred.

    Uses the legacy NumPy RNG (`RandomState`) so values equal the chapter's exactly.
    Returns: (m, 3) float32 with zero column means.
    """
    if m < 2:
        raise ValueError(f"m must be an integer >= 2, got {m!r}")
    rng = np.random.RandomState(seed)
    angles = rng.rand(m) * 3 * np.pi / 2 - 0.5
    data = np.empty((m, 3))
    data[:, 0] = np.cos(angles) + np.sin(angles) / 2 + noise * rng.randn(m) / 2
    data[:, 1] = np.sin(angles) * 0.7 + noise * rng.randn(m) / 2
    data[:, 2] = data[:, 0] * w1 + data[:, 1] * w2 + noise * rng.randn(m)
    return (data - data.mean(axis=0)).astype(np.float32)
