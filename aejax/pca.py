"""Closed-form PCA (via SVD) and principal angles between subspaces; float64 NumPy references."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def principal_components(x: ArrayLike, k: int) -> np.ndarray:
    """Top-k principal directions of the rows of `x` (centred internally).

    Args:
      x: (n, d) data.
      k: number of components, 1 <= k <= d.
    Returns: (d, k) float64 with orthonormal columns, by decreasing variance.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n, d), got shape {x.shape}")
    if not 1 <= k <= x.shape[1]:
        raise ValueError(f"k must be in 1..{x.shape[1]}, got {k}")
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    return vt[:k].T


def pca_reconstruction_mse(x: ArrayLike, k: int) -> float:
    """Lowest mean squared error (over all n*d entries) of any affine rank-k reconstruction of `x`.

    Eckart–Young: the sum of the discarded squared singular values of the centred data, over n*d.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n, d), got shape {x.shape}")
    if not 0 <= k <= x.shape[1]:
        raise ValueError(f"k must be in 0..{x.shape[1]}, got {k}")
    singular_values = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    return float(np.sum(singular_values[k:] ** 2) / x.size)


def _orthonormal_basis(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (d, k) with the basis in its columns, got shape {a.shape}")
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    rank = int(np.sum(s > s.max(initial=0.0) * max(a.shape) * np.finfo(np.float64).eps))
    if rank < a.shape[1]:
        raise ValueError(f"{name} must have full column rank {a.shape[1]}, got rank {rank}")
    return u


def principal_angles(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Principal angles between the column spaces of `a` (d, ka) and `b` (d, kb), in radians.

    Small angles come from sines and large ones from cosines (Björck & Golub 1973), so
    angles near 0 are accurate to ~1e-15 rather than the ~1e-8 of arccos alone.
    Returns: (min(ka, kb),) float64, ascending, in [0, pi/2].
    """
    qa = _orthonormal_basis(np.asarray(a, np.float64), "a")
    qb = _orthonormal_basis(np.asarray(b, np.float64), "b")
    if qa.shape[0] != qb.shape[0]:
        raise ValueError(f"a and b must have the same number of rows, got {qa.shape[0]} and {qb.shape[0]}")
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)  # descending
    sines = np.clip(np.sort(np.linalg.svd(qb - qa @ (qa.T @ qb), compute_uv=False)), 0.0, 1.0)
    return np.where(cosines**2 < 0.5, np.arccos(cosines), np.arcsin(sines))
