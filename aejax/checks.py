"""Argument checks shared by the library and the scripts: clear errors naming the argument."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_positive_int(name: str, value: Any) -> int:
    """Returns `value` as int, or raises ValueError naming `name` when it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_finite(name: str, x: np.ndarray) -> None:
    """Raises ValueError naming `name` and the count of non-finite entries, if any."""
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(f"{name} must be finite, found {bad} NaN/inf value(s) among {np.size(x)}")
