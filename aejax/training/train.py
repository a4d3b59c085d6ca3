"""Training-loop pieces shared by the models: one whole epoch inside a single `lax.scan`.

Randomness is derived from (root key, epoch, step) only, so an epoch can be re-run exactly:
`epoch_key = fold_in(root, epoch)`; `epoch_schedule` derives the shuffle and every step's key.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
    """Optimiser step count, parameters and optimiser state: everything a step changes.

    The optimiser itself is not stored: `apply_gradients` takes it, so a step can build it from
    per-member (traced) hyperparameters such as the learning rate (`aejax.training.recipes`).
    """

    step: jax.Array
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> "TrainState":
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates), opt_state=opt_state)


# (state, batch (B, ...), key, weights (B,) of 1 for real rows and 0 for padding) -> (state, metrics)
TrainStep = Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, Metrics]]


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for positive integers: e.g. the number of batches of size b in a rows."""
    return -(-a // b)


def epoch_key(root: jax.Array, epoch: int | jax.Array) -> jax.Array:
    """The key of one epoch: a pure function of (root key, epoch)."""
    return jax.random.fold_in(root, epoch)


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean of per-example `values` (B,), counting only rows with weight 1 when `weights` is given."""
    if weights is None:
        return jnp.mean(values)
    return jnp.sum(values * weights) / jnp.sum(weights)


def epoch_schedule(key: jax.Array, num_examples: int, batch_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The batches of one shuffled epoch: row indices (S, B), weights (S, B) of 1 for real rows and
    0 for the padding of the last batch, and step keys (S,), S = ceil(N / B); a pure function of
    (key, N, B). The shuffle uses `fold_in(key, 0)`, step s the key `fold_in(fold_in(key, 1), s)`.
    """
    num_batches = ceil_div(num_examples, batch_size)
    padding = num_batches * batch_size - num_examples
    order = jax.random.permutation(jax.random.fold_in(key, 0), num_examples)
    order = jnp.concatenate([order, jnp.zeros(padding, order.dtype)]).reshape(num_batches, batch_size)
    weights = (jnp.arange(num_batches * batch_size) < num_examples).astype(jnp.float32)
    step_root = jax.random.fold_in(key, 1)
    step_keys = jax.vmap(lambda step: jax.random.fold_in(step_root, step))(jnp.arange(num_batches))
    return order, weights.reshape(num_batches, batch_size), step_keys


def run_epoch(
    train_step: TrainStep, state: TrainState, data: jax.Array, key: jax.Array, batch_size: int
) -> tuple[TrainState, Metrics]:
    """One shuffled pass over `data` (N, ...) in minibatches, like Keras' `fit` for one epoch.

    All ceil(N / batch_size) steps of `epoch_schedule` run inside one `lax.scan`. The last batch is
    padded to full size with weight-0 rows, so its gradient is the mean over its N mod batch_size
    real rows, as in Keras, while one compiled step body serves every batch. Call it inside
    `jax.jit` with `batch_size` static. Returns: the new state and each metric averaged over the N
    examples, plus "first_nonfinite_step": the 0-based step whose loss first was NaN/inf, or -1.
    """
    num_examples = data.shape[0]
    order, weights, step_keys = epoch_schedule(key, num_examples, batch_size)
    # Rows are gathered from a (N, features) view: XLA's gather then copies whole contiguous rows
    # (~2% faster VAE epochs on CPU than gathering (N, 28, 28) slices; identical values).
    rows = data.reshape(num_examples, -1)

    def body(state, inputs):
        indices, batch_weights, step_key = inputs
        batch = rows[indices].reshape((batch_size,) + data.shape[1:])
        state, metrics = train_step(state, batch, step_key, batch_weights)
        # Batch means weighted by their real-row counts give the epoch mean over examples.
        return state, jax.tree.map(lambda m: m * jnp.sum(batch_weights), metrics)

    state, totals = jax.lax.scan(body, state, (order, weights, step_keys))
    bad = ~jnp.isfinite(totals["loss"])
    means = jax.tree.map(lambda t: jnp.sum(t) / num_examples, totals)
    return state, {**means, "first_nonfinite_step": jnp.where(jnp.any(bad), jnp.argmax(bad), -1)}


def mean_over_batches(
    metric_fn: Callable[[jax.Array, jax.Array], Metrics], data: jax.Array, key: jax.Array, batch_size: int
) -> Metrics:
    """Averages per-example metrics over all N rows of `data`, `batch_size` rows at a time.

    `metric_fn(batch, key)` returns a dict of (B,) arrays; batch `i` gets `fold_in(key, i)`.
    The last batch is zero-padded and the padding masked out, so one compiled body serves all.
    Call it inside `jax.jit` with `batch_size` static. Returns: dict of scalars.
    """
    num_examples = data.shape[0]
    num_batches = ceil_div(num_examples, batch_size)
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
