"""Training-loop pieces shared by the models: one whole epoch inside a single `lax.scan`.

Randomness is derived from (root key, epoch, step) only, so an epoch can be re-run exactly:
`epoch_key = fold_in(root, epoch)`; the shuffle uses `fold_in(epoch_key, 0)` and step `s`
uses `fold_in(fold_in(epoch_key, 1), s)`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax.training.train_state import TrainState

Metrics = dict[str, jax.Array]
# (state, batch (B, ...), key) -> (state, per-batch mean metrics)
TrainStep = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]

__all__ = ["TrainState", "Metrics", "TrainStep", "check_positive_int", "check_finite", "epoch_key", "run_epoch", "mean_over_batches"]


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


def epoch_key(root: jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The key of one epoch: a pure function of (root key, epoch)."""
    return jax.random.fold_in(root, epoch)


def run_epoch(
    train_step: TrainStep, state: TrainState, data: jax.Array, key: jax.Array, batch_size: int
) -> tuple[TrainState, Metrics]:
    """One shuffled pass over `data` (N, ...) in minibatches, like Keras' `fit` for one epoch.

    Full batches run inside one `lax.scan`; a final partial batch (N mod batch_size rows) is
    one more step on fewer rows, as in Keras. Call it inside `jax.jit` with `batch_size` static.
    Returns: the new state and each metric averaged over the epoch's examples.
    """
    num_examples = data.shape[0]
    num_full, remainder = divmod(num_examples, batch_size)
    order = jax.random.permutation(jax.random.fold_in(key, 0), num_examples)
    step_root = jax.random.fold_in(key, 1)

    def body(state, inputs):
        step, indices = inputs
        return train_step(state, data[indices], jax.random.fold_in(step_root, step))

    full_batches = order[: num_full * batch_size].reshape(num_full, batch_size)
    state, per_batch = jax.lax.scan(body, state, (jnp.arange(num_full), full_batches))
    totals = jax.tree.map(lambda m: jnp.sum(m) * batch_size, per_batch)
    if remainder:
        state, last = train_step(
            state, data[order[num_full * batch_size :]], jax.random.fold_in(step_root, num_full)
        )
        totals = jax.tree.map(lambda t, m: t + m * remainder, totals, last)
    return state, jax.tree.map(lambda t: t / num_examples, totals)


def mean_over_batches(
    metric_fn: Callable[[jax.Array, jax.Array], Metrics], data: jax.Array, key: jax.Array, batch_size: int
) -> Metrics:
    """Averages per-example metrics over all N rows of `data`, `batch_size` rows at a time.

    `metric_fn(batch, key)` returns a dict of (B,) arrays; batch `i` gets `fold_in(key, i)`.
    The last batch is zero-padded and the padding masked out, so one compiled body serves all.
    Call it inside `jax.jit` with `batch_size` static. Returns: dict of scalars.
    """
    num_examples = data.shape[0]
    num_batches = -(-num_examples // batch_size)
    padding = num_batches * batch_size - num_examples
    padded = jnp.pad(data, [(0, padding)] + [(0, 0)] * (data.ndim - 1))
    batches = padded.reshape((num_batches, batch_size) + data.shape[1:])
    masks = (jnp.arange(num_batches * batch_size) < num_examples).reshape(num_batches, batch_size)

    def body(totals, inputs):
        index, batch, mask = inputs
        metrics = metric_fn(batch, jax.random.fold_in(key, index))
        return {name: totals[name] + jnp.sum(jnp.where(mask, value, 0.0)) for name, value in metrics.items()}, None

    shapes = jax.eval_shape(metric_fn, batches[0], key)
    zeros = {name: jnp.zeros((), shape.dtype) for name, shape in shapes.items()}
    totals, _ = jax.lax.scan(body, zeros, (jnp.arange(num_batches), batches, masks))
    return {name: total / num_examples for name, total in totals.items()}
