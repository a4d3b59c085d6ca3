"""Argument checks shared by the library and the scripts: clear errors naming the argument.

Shapes and dtypes are checked when a function is traced, which costs nothing after compilation.
Values (pixels in [0, 1], finite parameters, a NaN produced anywhere) can only be checked while
the program runs: `checked(fn)` runs `fn` with those checks on (`jax.experimental.checkify`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
from jax.experimental import checkify


def check_positive_int(name: str, value: Any) -> int:
    """Returns `value` as int, or raises ValueError naming `name` when it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_finite(name: str, x: np.ndarray, error: type[ValueError] = ValueError) -> None:
    """Raises `error` naming `name` and the count of non-finite entries, if any."""
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise error(f"{name} must be finite, found {bad} NaN/inf value(s) among {np.size(x)}")


def checked(fn: Callable) -> Callable:
    """`fn` with its value checks on: aejax's own (images in [0, 1], finite parameters) and a NaN
    produced by any operation. A failed check raises `checkify.JaxRuntimeError` naming it.

    Pass static arguments (the model, k, num_samples, likelihood, …) with functools.partial first. The checks
    cost a little time, so the normal entry points do not use them.

    >>> loss = checked(functools.partial(vae.loss, model))
    >>> loss(params, images_0_to_255_as_float, key)   # raises: images must lie in [0, 1]
    """
    checkified = checkify.checkify(fn, errors=checkify.user_checks | checkify.nan_checks)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        error, out = checkified(*args, **kwargs)
        error.throw()
        return out

    return run
