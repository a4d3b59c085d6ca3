"""The models aejax can name (`--model`), and their descriptions in run records and params files."""

from __future__ import annotations

import dataclasses
from typing import Any

from aejax.models import conv, hvae, mlp, priors
from aejax.models.vae import Model

MODELS = {"mlp": mlp.MLP, "conv": conv.Conv, "hvae": hvae.HVAE, "conv_hvae": hvae.ConvHVAE}
NAMES = tuple(MODELS)


def to_dict(model: Model) -> dict[str, Any]:
    """{"name": …, and every setting} of a model `MODELS` holds, with "prior" and
    "num_pseudo_inputs" for a VampPrior (none: the standard prior); {"name": "custom", "repr": …,
    "latent_dim", "image_shape"} of any other (a user's model: recorded, but not rebuilt from it)."""
    if isinstance(model, priors.VampPrior):
        return {**to_dict(model.base), "prior": "vamp", "num_pseudo_inputs": model.num_pseudo_inputs}
    name = getattr(model, "NAME", None)
    if MODELS.get(name) is type(model):
        settings = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
        return {"name": name, **{k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}}
    return {
        "name": "custom",
        "repr": repr(model),
        "latent_dim": model.latent_dim,
        "image_shape": list(model.image_shape),
    }


def from_dict(description: dict[str, Any]) -> Model:
    """The model `to_dict` described; ValueError for a custom model or unknown settings."""
    description = dict(description)
    prior = description.pop("prior", "standard")
    num_pseudo_inputs = description.pop("num_pseudo_inputs", 500)
    if prior not in priors.NAMES:
        raise ValueError(f"its prior {prior!r} is not one of {priors.NAMES}")
    name = description.get("name")
    if name == "custom":
        raise ValueError(
            f"it holds a user-defined model ({description.get('repr', '?')[:80]}); build that model in "
            "Python and evaluate it with aejax.evaluation.metrics"
        )
    if name not in MODELS:
        raise ValueError(f"its model {name!r} is not one of {NAMES}")
    fields = {f.name for f in dataclasses.fields(MODELS[name])}
    unknown = sorted(set(description) - fields - {"name"})
    if unknown:
        raise ValueError(f"its {name} model has settings this aejax does not know: {unknown}")
    model = MODELS[name](**{k: tuple(v) if isinstance(v, list) else v for k, v in description.items() if k != "name"})
    return priors.with_prior(model, prior, num_pseudo_inputs)
