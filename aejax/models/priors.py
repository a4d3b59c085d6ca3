"""The prior p(z) of a VAE: N(0, I) by default, or the VampPrior (`--prior standard|vamp`).

A model may define `log_prior(params, z)`, `sample_prior(params, key, n)` and
`log_prior_marginals(params, z)` (each dimension's marginal log density); one that does not has
the standard normal prior, whose KL term has a closed form. `VampPrior` gives any model the
VampPrior of Tomczak & Welling (2018): the mixture (1/K) sum_k q(z | u_k) of the model's own
posteriors at K learned pseudo-inputs u_k (images in [0, 1], initialised near 0.05 as theirs;
params `prior/pseudo_inputs` beside the model's own, which must be a dict).

>>> model = priors.VampPrior(mlp.MLP(), num_pseudo_inputs=500)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from aejax.config import fail

NAMES = ("standard", "vamp")
_LOG_2PI = math.log(2 * math.pi)


def has_standard_prior(model: Any) -> bool:
    """True when the model's prior is N(0, I) (its KL term then has a closed form)."""
    return not hasattr(model, "log_prior")


def standard_log_density(z: ArrayLike) -> jax.Array:
    """log N(z; 0, I) summed over the last axis; shape (...)."""
    return -0.5 * jnp.sum(jnp.square(z) + _LOG_2PI, axis=-1)


def log_density(model: Any, params: Any, z: ArrayLike) -> jax.Array:
    """log p(z) under the model's prior, codings (..., latent_dim) -> (...)."""
    z = jnp.asarray(z)
    return standard_log_density(z) if has_standard_prior(model) else model.log_prior(params, z)


def marginal_log_densities(model: Any, params: Any, z: ArrayLike) -> jax.Array:
    """log p(z_l) of each dimension's marginal under the prior, (..., latent_dim)."""
    z = jnp.asarray(z)
    if has_standard_prior(model):
        return -0.5 * (jnp.square(z) + _LOG_2PI)
    return model.log_prior_marginals(params, z)


def sample(model: Any, params: Any, key: jax.Array, n: int) -> jax.Array:
    """n codings (n, latent_dim) drawn from the model's prior."""
    if has_standard_prior(model):
        return jax.random.normal(key, (n, model.latent_dim))
    return model.sample_prior(params, key, n)


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
    """`base` (any model with dict params) with the VampPrior over its codings; everything else is the base's."""

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

    def components(self, params: dict) -> tuple[jax.Array, jax.Array]:
        """The mixture's (mean, log_var), each (K, latent_dim): the encoder at the pseudo-inputs,
        clipped to [0, 1] as the reference's hard tanh."""
        return self.encode(params, jnp.clip(params["prior"]["pseudo_inputs"], 0.0, 1.0))

    def log_prior(self, params: dict, z: jax.Array) -> jax.Array:
        return mixture_log_density(z, *self.components(params))

    def log_prior_marginals(self, params: dict, z: jax.Array) -> jax.Array:
        return mixture_marginal_log_densities(z, *self.components(params))

    def sample_prior(self, params: dict, key: jax.Array, n: int) -> jax.Array:
        return mixture_sample(key, *self.components(params), n)


def mixture_log_density(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """log (1/K) sum_k N(z; mean_k, diag exp(log_var_k)) of codings (..., L); components (K, L)."""
    flat = z.reshape(-1, z.shape[-1])
    log_p = jax.nn.logsumexp(log_gaussian(flat, mean, log_var), axis=-1) - math.log(mean.shape[0])
    return log_p.reshape(z.shape[:-1])


def mixture_marginal_log_densities(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """Each dimension's marginal log density under the mixture, (..., L)."""
    log_n = -0.5 * (jnp.square(z[..., None, :] - mean) * jnp.exp(-log_var) + log_var + _LOG_2PI)
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
