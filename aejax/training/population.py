"""The compiled population program: M models train in one `vmap`ped, jit-compiled epoch.

What `aejax.training.fit` drives and `benchmarks/` times. A member's state, hyperparameters
{"beta", "learning_rate"} and keys are stacked on a leading axis M; the images are shared. The
static part of the program (model, likelihood, recipe, batch size, schedule, mesh) is one hashable
`Program`. Keys of a member with seed s: root = key(s); (train, test, figures) = split(root, 3);
(init, shuffle+noise, validation) = split(train, 3); epoch e uses fold_in(shuffle+noise, e)
(`aejax.training.train.run_epoch`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify
from jax.sharding import Mesh

from aejax import data, parallel
from aejax.config import fail
from aejax.models import likelihoods, mlp, vae
from aejax.training import recipes
from aejax.training.train import Metrics, TrainState, epoch_key, run_epoch


def member_keys(seeds: Sequence[int]) -> dict[str, jax.Array]:
    """Per-member keys (M,) named init / train / validation / test / figures (see the module docstring)."""

    def derive(seed):
        train, test, figures = jax.random.split(jax.random.key(seed), 3)
        init, shuffle, validation = jax.random.split(train, 3)
        return {"init": init, "train": shuffle, "validation": validation, "test": test, "figures": figures}

    return jax.vmap(derive)(jnp.asarray(seeds, jnp.uint32))


@dataclasses.dataclass(frozen=True)
class Program:
    """The static part of the compiled training program (hashable: a jit static argument)."""

    model: vae.Model = mlp.MLP()
    likelihood: str = "bernoulli"
    binarize: bool = False
    objective: str = "elbo"
    samples: int = 1  # latent draws per image, in training and validation
    recipe: str = "chapter"
    batch_size: int = 128
    steps_per_epoch: int = 1  # with `epochs`, what the recipe's schedule needs
    epochs: int = 1
    num_examples: int | None = None  # real rows of a padded, row-sharded dataset (None: all rows)
    mesh: Mesh | None = None


def _vmap(fn, mesh: Mesh | None):
    return jax.vmap(fn, spmd_axis_name=parallel.MEMBERS if mesh is not None else None)


@functools.partial(jax.jit, static_argnames=("model", "recipe"))
def init_states(keys: jax.Array, model: vae.Model = mlp.MLP(), recipe: str = "chapter") -> TrainState:
    """Stacked initial states (M, ...) of M models, one per initialisation key (M,)."""
    # The optimiser's state does not depend on the learning rate; 1.0 stands in for it.
    return jax.vmap(lambda key: TrainState.create(model.init(key), recipes.optimizer(recipe, 1.0)))(keys)


def _step(
    state: TrainState, batch: jax.Array, key: jax.Array, weights: jax.Array | None, hyper: dict, program: Program
) -> tuple[TrainState, Metrics]:
    # Value checks for `checks.checked` (a notebook's own hyperparameters); they compile away otherwise.
    checkify.debug_check(jnp.isfinite(hyper["beta"]) & (hyper["beta"] >= 0), "hyper beta must be finite and >= 0")
    checkify.debug_check(
        jnp.isfinite(hyper["learning_rate"]) & (hyper["learning_rate"] > 0),
        "hyper learning_rate must be finite and > 0",
    )
    rate = recipes.learning_rate(
        program.recipe, hyper["learning_rate"], state.step, program.steps_per_epoch, program.epochs
    )
    value, grads = jax.value_and_grad(vae.loss, argnums=1)(
        program.model,
        state.params,
        batch,
        key,
        hyper["beta"],
        weights,
        program.likelihood,
        program.binarize,
        program.objective,
        program.samples,
    )
    return state.apply_gradients(grads, recipes.optimizer(program.recipe, rate)), {"loss": value}


@functools.partial(jax.jit, static_argnames=("program",), donate_argnums=(0,))
def train_step(
    state: TrainState,
    batch: jax.Array,
    key: jax.Array,
    hyper: dict,
    weights: jax.Array | None = None,
    program: Program = Program(),
) -> tuple[TrainState, Metrics]:
    """One optimiser step of one model on a batch (B, *image_shape) in [0, 1]; metrics {"loss": batch mean}.

    hyper: {"beta": scalar, "learning_rate": the recipe's peak rate}. `weights` (B,) of 0/1 mark
    the real rows of a padded batch.
    """
    return _step(state, batch, key, weights, hyper, program)


@functools.partial(jax.jit, static_argnames=("program",), donate_argnums=(0,))
def train_epoch(
    states: TrainState, hyper: dict, images: jax.Array, keys: jax.Array, program: Program
) -> tuple[TrainState, Metrics]:
    """One shuffled epoch of every member, in one compiled program: `vmap` over the stacked states,
    hyperparameters {"beta", "learning_rate"} (M,) and epoch keys (M,); `images` (N, *image_shape) shared.

    Returns the new states and each member's epoch metrics (M,): the example-weighted mean loss and
    "first_nonfinite_step" (`aejax.training.train.run_epoch`).
    """

    def member_epoch(state, hyper, key):
        def step(state, batch, step_key, weights):
            return _step(state, batch, step_key, weights, hyper, program)

        if program.mesh is not None:
            step = parallel.data_parallel(step, program.mesh)
        rows = images if program.num_examples is None else images[: program.num_examples]
        return run_epoch(step, state, rows, key, program.batch_size)

    return _vmap(member_epoch, program.mesh)(states, hyper, keys)


@functools.partial(jax.jit, static_argnames=("model", "likelihood", "mesh", "objective", "samples"))
def evaluate(
    params,
    images,
    keys,
    beta,
    model: vae.Model,
    likelihood: str,
    mesh: Mesh | None = None,
    objective: str = "elbo",
    samples: int = 1,
) -> Metrics:
    """Mean loss, reconstruction, kl and rounded_accuracy (each (M,)) of stacked params on `images`
    (scored as given, with the training objective), member i with keys[i] and beta[i]."""

    def member(p, k, b):
        return vae.evaluate(model, p, images, k, beta=b, likelihood=likelihood, objective=objective, samples=samples)

    return _vmap(member, mesh)(params, keys, beta)


def evaluate_members(
    model: vae.Model,
    params: Any,
    images: np.ndarray,
    members: Sequence[Any],
    likelihood: str,
    binarize: bool = False,
    key_name: str = "test",
    objective: str = "elbo",
    samples: int = 1,
) -> dict[str, np.ndarray]:
    """Mean loss, reconstruction, kl, rounded_accuracy (each (M,)) of stacked params on `images`.

    Each member uses its own `key_name` key and beta; with `binarize` the images are binarized once
    with the split's fixed key (`likelihoods.binarize_for_evaluation`); the loss is `objective`'s
    with `samples` draws (`aejax.models.vae.batch_metrics`).
    """
    x = jnp.asarray(data.unit_float_images("images", images))
    if binarize:
        x = likelihoods.binarize_for_evaluation(x, "test" if key_name == "test" else "validation")
    keys = member_keys([m.seed for m in members])[key_name]
    beta = jnp.asarray([m.beta for m in members], jnp.float32)
    values = evaluate(params, x, keys, beta, model=model, likelihood=likelihood, objective=objective, samples=samples)
    return {k: np.asarray(v) for k, v in values.items()}


@jax.jit
def keep_improved(best, params, improved):
    """Each member's params where improved (M,) is True, else its best so far."""
    return jax.tree.map(lambda b, p: jnp.where(improved.reshape((-1,) + (1,) * (p.ndim - 1)), p, b), best, params)


def tree_bytes(tree) -> int:
    """Bytes of every array (or shape-dtype struct) of a pytree."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _needed_bytes(compiled) -> int | None:
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    return (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes
    )


def compile_programs(
    program: Program, seeds: Sequence[int], fit_images: np.ndarray, val_images: np.ndarray
) -> tuple[Any, Any]:
    """The compiled epoch and validation programs, refused (ConfigError) before any work when XLA's
    memory analysis of either asks for more than the device has available (the validation program
    also holds the optimiser state while it runs; the test evaluation runs it at the same batch size).
    One device: these compiled programs run; on a mesh, the jitted functions compile for the placed
    arrays (the check of the whole program is then a bound)."""
    keys = member_keys(seeds)
    size = len(seeds)
    states = jax.eval_shape(functools.partial(init_states, model=program.model, recipe=program.recipe), keys["init"])
    shaped = functools.partial(jax.tree.map, lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype))
    vector = jax.ShapeDtypeStruct((size,), np.float32)
    epoch_keys = jax.eval_shape(jax.vmap(epoch_key, (0, None)), keys["train"], 0)
    epoch = train_epoch.lower(
        states, {"beta": vector, "learning_rate": vector}, shaped(fit_images), epoch_keys, program
    ).compile()
    scoring = {"model": program.model, "likelihood": program.likelihood}
    scoring.update(objective=program.objective, samples=program.samples)
    validate = evaluate.lower(
        states.params, shaped(val_images), shaped(keys["validation"]), vector, **scoring
    ).compile()
    available = parallel.available_memory()
    needed = [_needed_bytes(epoch), _needed_bytes(validate)]
    if available is not None and None not in needed:
        needed[1] += tree_bytes(states) - tree_bytes(states.params)
        if max(needed) > available:
            which = "one epoch's" if needed[0] >= needed[1] else "the validation's"
            fail(
                "latent_dim",
                f"with the model ({vae.describe(program.model)}), {size} model(s) and "
                f"--batch-size {program.batch_size}: {which} compiled program needs {max(needed) / 2**30:.1f} GiB, "
                f"and this machine has {available / 2**30:.1f} GiB available; choose a smaller model or population",
            )
    if program.mesh is None:
        return epoch, validate
    return (
        functools.partial(train_epoch, program=program),
        functools.partial(evaluate, mesh=program.mesh, **scoring),
    )
