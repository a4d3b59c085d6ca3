"""The prior p(z) of a VAE: N(0, I) by default, or the VampPrior (`--prior standard|vamp`), on the
top layer of a hierarchical model.

A one-layer model's prior is over all of z. A *hierarchical* model (`aejax.models.hvae`) orders its
codings top layer first, z = (z_top, z_below) with `top_dim` top codings, and defines
`conditional_prior(params, z_top)`: the (mean, log_var) of the diagonal Gaussian p(z_below | z_top);
then p(z) = p(z_top) p(z_below | z_top); and `encode_top(params, x)`, the (mean, log_var) of
q(z_top | x) alone. The top layer's prior is N(0, I) unless the model defines
`prior_components(params)`, the (mean, log_var) (K, top_dim) of a uniform mixture of Gaussians:
`VampPrior` gives any model the VampPrior of Tomczak & Welling (2018), the mixture
(1/K) sum_k q(z_top | u_k) of the model's own posteriors at K learned pseudo-inputs u_k (images in
[0, 1], initialised near 0.05 as theirs; params `prior/pseudo_inputs` beside the model's own, which
must be a dict). Only the standard prior of a one-layer model has a closed-form KL term.

>>> model = priors.VampPrior(mlp.MLP(), num_pseudo_inputs=500)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from aejax.config import fail

NAMES = ("standard", "vamp")
_LOG_2PI = math.log(2 * math.pi)


def top_dim(model: Any) -> int:
    """How many of the codings (the first ones) the top layer's prior is over: all of a one-layer model's."""
    return getattr(model, "top_dim", model.latent_dim)


def is_hierarchical(model: Any) -> bool:
    """True when the model has layers below the top one (`conditional_prior`)."""
    return hasattr(model, "conditional_prior")


def has_standard_prior(model: Any) -> bool:
    """True when p(z) is N(0, I) over all of z (its KL term then has a closed form)."""
    return not hasattr(model, "prior_components") and not is_hierarchical(model)


def standard_log_density(z: ArrayLike) -> jax.Array:
    """log N(z; 0, I) summed over the last axis; shape (...)."""
    return -0.5 * jnp.sum(jnp.square(z) + _LOG_2PI, axis=-1)


def gaussian_log_densities(z: ArrayLike, mean: ArrayLike, log_var: ArrayLike) -> jax.Array:
    """log N(z_l; mean_l, exp(log_var_l)) of each coordinate; the broadcast shape."""
    return -0.5 * (jnp.square(z - mean) * jnp.exp(-log_var) + log_var + _LOG_2PI)


def top_posterior(model: Any, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, log_var) of q(z_top | x): a hierarchical model's `encode_top`, all of a one-layer model's `encode`."""
    return model.encode_top(params, x) if hasattr(model, "encode_top") else model.encode(params, x)


def _split(model: Any, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    return z[..., : top_dim(model)], z[..., top_dim(model) :]


def log_density(model: Any, params: Any, z: ArrayLike) -> jax.Array:
    """log p(z) under the model's prior, codings (..., latent_dim) -> (...)."""
    top, below = _split(model, jnp.asarray(z))
    if hasattr(model, "prior_components"):
        log_p = mixture_log_density(top, *model.prior_components(params))
    else:
        log_p = standard_log_density(top)
    if is_hierarchical(model):
        log_p = log_p + jnp.sum(gaussian_log_densities(below, *model.conditional_prior(params, top)), axis=-1)
    return log_p


def marginal_log_densities(model: Any, params: Any, z: ArrayLike) -> jax.Array:
    """log p(z_l) of each top-layer dimension's marginal under the prior, and of each lower one's
    conditional p(z_l | z_top) at the given z_top; (..., latent_dim)."""
    top, below = _split(model, jnp.asarray(z))
    if hasattr(model, "prior_components"):
        log_p = mixture_marginal_log_densities(top, *model.prior_components(params))
    else:
        log_p = -0.5 * (jnp.square(top) + _LOG_2PI)
    if is_hierarchical(model):
        log_p = jnp.concatenate([log_p, gaussian_log_densities(below, *model.conditional_prior(params, top))], -1)
    return log_p


@functools.partial(jax.jit, static_argnames=("model", "n"))
def sample(model: Any, params: Any, key: jax.Array, n: int) -> jax.Array:
    """n codings (n, latent_dim) drawn from the model's prior (ancestrally: the top layer, then below)."""
    if not is_hierarchical(model):
        return _sample_top(model, params, key, n)
    top_key, below_key = jax.random.split(key)
    top = _sample_top(model, params, top_key, n)
    mean, log_var = model.conditional_prior(params, top)
    return jnp.concatenate([top, mean + jnp.exp(log_var / 2) * jax.random.normal(below_key, mean.shape)], -1)


def _sample_top(model: Any, params: Any, key: jax.Array, n: int) -> jax.Array:
    if hasattr(model, "prior_components"):
        return mixture_sample(key, *model.prior_components(params), n)
    return jax.random.normal(key, (n, top_dim(model)))


def log_gaussian(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """log N(z; mean_k, diag exp(log_var_k)) of codings z (..., L) under K Gaussians (K, L): (..., K).

    Expanded into matmuls (memory O(size of z * K), not times L), at full float32 precision on
    every backend: the expansion's terms cancel, and TF32 passes would lose them."""
    inverse_var = jnp.exp(-log_var)  # (K, L)
    highest = jax.lax.Precision.HIGHEST
    quadratic = (
        jnp.matmul(jnp.square(z), inverse_var.T, precision=highest)
        - 2.0 * jnp.matmul(z, (mean * inverse_var).T, precision=highest)
        + jnp.sum(jnp.square(mean) * inverse_var, axis=-1)
    )
    return -0.5 * (jnp.maximum(quadratic, 0.0) + jnp.sum(log_var, axis=-1) + z.shape[-1] * _LOG_2PI)


@dataclasses.dataclass(frozen=True)
class VampPrior:
    """`base` (any model with dict params) with the VampPrior over its (top layer's) codings;
    everything else is the base's."""

    base: Any
    num_pseudo_inputs: int = 500

    def __post_init__(self):
        if not isinstance(self.num_pseudo_inputs, int) or self.num_pseudo_inputs < 1:
            fail("num_pseudo_inputs", f"must be a positive integer, got {self.num_pseudo_inputs!r}")

    @property
    def NAME(self) -> str:
        return f"{getattr(self.base, 'NAME', type(self.base).__name__)}+vamp"

    @property
    def latent_dim(self) -> int:
        return self.base.latent_dim

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.base.image_shape)

    def init(self, key: jax.Array) -> dict:
        base_key, prior_key = jax.random.split(key)
        params = self.base.init(base_key)
        if not isinstance(params, dict) or "prior" in params:
            raise TypeError("the VampPrior needs a model whose params are a dict without a 'prior' entry")
        return {
            **params,
            "prior": {"pseudo_inputs": pseudo_inputs(prior_key, self.num_pseudo_inputs, self.image_shape)},
        }

    def _base_params(self, params: dict) -> dict:
        return {k: v for k, v in params.items() if k != "prior"}

    def encode(self, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.base.encode(self._base_params(params), x)

    def decode_logits(self, params: dict, z: jax.Array) -> jax.Array:
        return self.base.decode_logits(self._base_params(params), z)

    def prior_components(self, params: dict) -> tuple[jax.Array, jax.Array]:
        """The mixture's (mean, log_var), each (K, top_dim): the encoder's top layer at the
        pseudo-inputs, clipped to [0, 1] as the reference's hard tanh."""
        pseudo_inputs = jnp.clip(params["prior"]["pseudo_inputs"], 0.0, 1.0)
        return top_posterior(self.base, self._base_params(params), pseudo_inputs)

    def __getattr__(self, name: str) -> Any:
        # A hierarchical base's own hooks, on the base's part of the params.
        if name not in _HIERARCHY_HOOKS:
            raise AttributeError(name)
        hook = getattr(self.base, name)
        return hook if name == "top_dim" else lambda params, *args: hook(self._base_params(params), *args)


_HIERARCHY_HOOKS = ("top_dim", "encode_top", "conditional_prior", "draw_posterior")


def mixture_log_density(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """log (1/K) sum_k N(z; mean_k, diag exp(log_var_k)) of codings (..., L); components (K, L)."""
    flat = z.reshape(-1, z.shape[-1])
    log_p = jax.nn.logsumexp(log_gaussian(flat, mean, log_var), axis=-1) - math.log(mean.shape[0])
    return log_p.reshape(z.shape[:-1])


def mixture_marginal_log_densities(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """Each dimension's marginal log density under the mixture, (..., L)."""
    log_n = gaussian_log_densities(z[..., None, :], mean, log_var)  # (..., K, L)
    return jax.nn.logsumexp(log_n, axis=-2) - math.log(mean.shape[0])


def mixture_sample(key: jax.Array, mean: jax.Array, log_var: jax.Array, n: int) -> jax.Array:
    """n draws (n, L) from the mixture: a uniform component, then its Gaussian."""
    component_key, noise_key = jax.random.split(key)
    k = jax.random.randint(component_key, (n,), 0, mean.shape[0])
    return mean[k] + jnp.exp(log_var[k] / 2) * jax.random.normal(noise_key, (n, mean.shape[1]))


def pseudo_inputs(key: jax.Array, count: int, image_shape: tuple[int, ...]) -> jax.Array:
    """Initial pseudo-inputs (count, *image_shape): N(0.05, 0.01^2) pixels, as the reference's."""
    return 0.05 + 0.01 * jax.random.normal(key, (count,) + tuple(image_shape))


def with_prior(model: Any, prior: str, num_pseudo_inputs: int = 500) -> Any:
    """`model` with the prior named `prior` (one of NAMES)."""
    if prior not in NAMES:
        fail("prior", f"must be one of {NAMES}, got {prior!r}")
    return model if prior == "standard" else VampPrior(model, num_pseudo_inputs)
