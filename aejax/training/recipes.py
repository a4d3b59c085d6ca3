"""Optimiser recipes: an optax transformation and a learning-rate schedule per name.

The learning rate is an argument, not a constant baked into the transformation, so one compiled
training program serves members of a population that sweep it (`aejax.training.fit`): each step builds
`optimizer(recipe, learning_rate(recipe, peak, step, ...))` from its own (traced) peak rate.

| recipe | optimiser | learning rate |
|---|---|---|
| ``"chapter"`` | Keras RMSprop: rho 0.9, eps 1e-7 *outside* the square root | constant, default 1e-3 |
| ``"improved"`` | Adam (optax defaults) | one epoch of linear warm-up to the peak (default 4e-3), then cosine decay to peak / 100 |
| ``"adam"`` | Adam (optax defaults: b1 0.9, b2 0.999, eps 1e-8) | constant, default 1e-3 |

Warning: Keras' and TensorFlow's RMSprop add eps outside the square root (g / (sqrt(v) + eps)),
PyTorch's too; optax's default adds it inside. `chapter_optimizer` follows Keras, as the book.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    default_learning_rate: float
    schedule_uses_epochs: bool  # the schedule's shape depends on the total number of epochs
    description: str


RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            "chapter", 1e-3, False, "Keras RMSprop (rho 0.9, eps 1e-7 outside the sqrt), constant rate, as the book"
        ),
        Recipe("improved", 4e-3, True, "Adam, 1 epoch of linear warm-up to the peak rate, cosine decay to peak/100"),
        Recipe("adam", 1e-3, False, "Adam (b1 0.9, b2 0.999, eps 1e-8), constant rate"),
    )
}


def get(name: str) -> Recipe:
    """The recipe called `name`; ValueError naming the choices otherwise."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {name!r}")
    return RECIPES[name]


def chapter_optimizer(learning_rate: float | ArrayLike = 1e-3) -> optax.GradientTransformation:
    """Keras' RMSprop defaults (lr 1e-3, rho 0.9, eps 1e-7 added outside the square root)."""
    return optax.rmsprop(learning_rate, decay=0.9, eps=1e-7, eps_in_sqrt=False)


def optimizer(name: str, learning_rate: float | ArrayLike) -> optax.GradientTransformation:
    """The recipe's transformation at one (possibly traced) learning rate."""
    get(name)
    if name == "chapter":
        return chapter_optimizer(learning_rate)
    return optax.adam(learning_rate)


def learning_rate(name: str, peak: ArrayLike, step: ArrayLike, steps_per_epoch: int, epochs: int) -> jax.Array:
    """The recipe's learning rate at optimiser step `step` (0-based) for peak rate `peak`."""
    get(name)
    if name != "improved":
        return jnp.asarray(peak)  # constant: the peak itself, so results match a fixed-rate optimiser bit for bit
    unit = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=1.0,
        warmup_steps=steps_per_epoch,
        decay_steps=steps_per_epoch * epochs,
        end_value=0.01,
    )
    return peak * unit(step)
