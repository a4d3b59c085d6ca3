"""Summaries of results: a population's mean with a Student-t 95% confidence interval; a mean over
test examples with its standard error; two models compared example by example.

The interval is mean ± t(0.975, n - 1) · s / sqrt(n), with s the sample standard deviation
(ddof 1): exact coverage for normally distributed results, and what papers usually report.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import scipy.stats


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict[str, float | int | None]:
    """{mean, std, ci95_low, ci95_high, n} of the finite `values` (NaN entries are left out).

    With n = 1 the spread is unknown: std and the interval are None (strict JSON has no NaN).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return {"mean": None, "std": None, "ci95_low": None, "ci95_high": None, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": None, "ci95_low": None, "ci95_high": None, "n": 1}
    std = float(x.std(ddof=1))
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def mean_and_standard_error(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error of the mean = s / sqrt(n)) of per-example values, e.g. test-set bounds."""
    x = np.asarray(values, np.float64)
    if x.size < 2:
        raise ValueError(f"a standard error needs at least 2 values, got {x.size}")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def paired_difference(first: Sequence[float], second: Sequence[float]) -> dict[str, float]:
    """How much lower `second` is than `first`, example by example (the same test examples, in the
    same order): {"nats": mean of first - second, "standard_error": its standard error,
    "share_lower": the share of examples on which second is lower}. The examples' own spread, which
    dominates each mean's standard error, cancels in the differences.
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"needs two (N,) arrays over the same examples, got {first.shape} and {second.shape}")
    differences = first - second
    mean, error = mean_and_standard_error(differences)
    return {"nats": mean, "standard_error": error, "share_lower": float(np.mean(differences > 0))}
