"""Linear undercomplete autoencoder (chapter 17): Dense(code_dim) -> Dense(in_dim), MSE, SGD.

With linear activations and MSE its optimum reconstructs onto the top principal subspace,
i.e. it performs PCA. Parameters are a plain pytree:
`{"encoder": {"kernel": (d, k), "bias": (k,)}, "decoder": {"kernel": (k, d), "bias": (d,)}}`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.typing import ArrayLike

from aejax.checks import check_finite, check_positive_int
from aejax.training.train import Metrics, TrainState, epoch_key, run_epoch, weighted_mean

Params = dict


def _dense(features: int) -> nn.Dense:
    # Keras' Dense defaults (the chapter's model): Glorot-uniform kernel, zero bias.
    return nn.Dense(features, kernel_init=nn.initializers.glorot_uniform())


def init(key: jax.Array, in_dim: int, code_dim: int) -> Params:
    """Glorot-uniform kernels and zero biases, as Keras' Dense; encoder and decoder keys split."""
    in_dim = check_positive_int("in_dim", in_dim)
    code_dim = check_positive_int("code_dim", code_dim)
    if code_dim >= in_dim:
        raise ValueError(f"code_dim must be smaller than in_dim={in_dim} (undercomplete), got {code_dim}")
    encoder_key, decoder_key = jax.random.split(key)
    return {
        "encoder": _dense(code_dim).init(encoder_key, jnp.zeros((1, in_dim)))["params"],
        "decoder": _dense(in_dim).init(decoder_key, jnp.zeros((1, code_dim)))["params"],
    }


def _apply(layer_params: Params, x: ArrayLike) -> jax.Array:
    return _dense(layer_params["kernel"].shape[1]).apply({"params": layer_params}, x)


def encode(params: Params, x: ArrayLike) -> jax.Array:
    """(n, d) inputs -> (n, k) codings."""
    return _apply(params["encoder"], x)


def decode(params: Params, z: ArrayLike) -> jax.Array:
    """(n, k) codings -> (n, d) reconstructions."""
    return _apply(params["decoder"], z)


def loss(params: Params, x: ArrayLike, weights: jax.Array | None = None) -> jax.Array:
    """Mean squared reconstruction error over all n*d entries (Keras' "mse"); scalar.

    `weights` (n,) of 0/1 restrict the mean to the rows marked 1 (a padded last batch).
    """
    per_example = jnp.mean((decode(params, encode(params, x)) - x) ** 2, axis=-1)
    return weighted_mean(per_example, weights)


def decoder_subspace(params: Params) -> np.ndarray:
    """(d, k) basis of the space the reconstructions (minus the bias) live in."""
    return np.asarray(params["decoder"]["kernel"]).T


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size", "learning_rate"))
def _fit(params, x, key, *, epochs, batch_size, learning_rate):
    tx = optax.sgd(learning_rate)

    def train_step(
        state: TrainState, batch: jax.Array, key: jax.Array, weights: jax.Array
    ) -> tuple[TrainState, Metrics]:
        del key  # The linear autoencoder draws nothing per step.
        value, grads = jax.value_and_grad(loss)(state.params, batch, weights)
        return state.apply_gradients(grads, tx), {"loss": value}

    def one_epoch(state, epoch):
        state, metrics = run_epoch(train_step, state, x, epoch_key(key, epoch), batch_size)
        return state, metrics["loss"]

    state, history = jax.lax.scan(one_epoch, TrainState.create(params, tx), jnp.arange(epochs))
    return state.params, history


def train(
    x: ArrayLike,
    code_dim: int = 2,
    *,
    key: jax.Array,
    epochs: int = 20,
    learning_rate: float = 1.5,
    batch_size: int = 32,
) -> tuple[Params, dict[str, np.ndarray]]:
    """Trains a linear autoencoder with minibatch SGD, reshuffling each epoch from `key`.

    Args:
      x: (n, d) float training data (the chapter's data is already centred).
      code_dim: size k of the codings, 1 <= k < d.
      key: PRNG key for initialisation and shuffling.
    Returns: (params, {"loss": (epochs,) mean training MSE of each epoch, as Keras reports it}).
    """
    params, history = train_many(
        x, code_dim, keys=jnp.stack([key]), epochs=epochs, learning_rate=learning_rate, batch_size=batch_size
    )
    return jax.tree.map(lambda leaf: leaf[0], params), {"loss": history["loss"][0]}


def train_many(
    x: ArrayLike,
    code_dim: int = 2,
    *,
    keys: jax.Array,
    epochs: int = 20,
    learning_rate: float = 1.5,
    batch_size: int = 32,
) -> tuple[Params, dict[str, np.ndarray]]:
    """`train` for each key of `keys` (M,), all in one compiled program (`vmap`); member i equals
    `train(..., key=keys[i])`. Returns stacked params (M, ...) and {"loss": (M, epochs)}.

    Raises FloatingPointError naming the members whose loss became non-finite.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D array (n, d), got shape {x.shape}")
    check_finite("x", x)
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size must be at most the number of examples {x.shape[0]}, got {batch_size}")
    if not 0 < learning_rate < float("inf"):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    init(jax.random.key(0), x.shape[1], code_dim)  # checks the sizes before tracing
    init_keys, shuffle_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    params = jax.vmap(lambda k: init(k, x.shape[1], code_dim))(init_keys)
    fit_one = functools.partial(_fit, epochs=epochs, batch_size=batch_size, learning_rate=float(learning_rate))
    params, history = jax.vmap(fit_one, in_axes=(0, None, 0))(params, jnp.asarray(x), shuffle_keys)
    history = np.asarray(history)
    bad = [i for i, row in enumerate(history) if not np.all(np.isfinite(row))]
    if bad:
        first = int(np.argmin(np.isfinite(history[bad[0]])))
        raise FloatingPointError(
            f"training diverged: the loss became non-finite at epoch {first + 1}"
            + (f" for {len(bad)} of {len(history)} keys" if len(history) > 1 else "")
            + f" (learning rate {learning_rate:g}); lower the learning rate"
        )
    return params, {"loss": history}
