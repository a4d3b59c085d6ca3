"""The trained-parameters file: the members' parameters with a manifest that says what they are.

`params.msgpack` (flax msgpack) holds {"format": FORMAT, "manifest": JSON text, "params": tree}:
the tree always has a leading member axis (1 for a single run), and the manifest names the model
(its settings and observation model), whether its images were binarized, its data set, and each
member's seed and hyperparameters. So
the file says on its own how to read it, wherever it is copied. The manifest holds nothing that
differs between two runs of the same program (no dates, paths or hosts): same run, same bytes.

`load` gives the model it describes, ready to use in a notebook:

>>> trained = params_file.load("runs/vae/params.msgpack")  # doctest: +SKIP
>>> vae.generate(trained.model, trained.members[0], jax.random.key(0), 12, trained.likelihood)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from aejax.config import fail
from aejax.errors import ParamsFileError
from aejax.io.files import to_json, write_bytes
from aejax.models import likelihoods, registry, vae

FORMAT = "aejax.params/2"
_FIRST_FORMAT = "aejax.params/1"  # the chapter's MLP on Fashion-MNIST only: read as that model


def member_digest(params: Any) -> str:
    """SHA-256 of one member's params as flax bytes: equal digests mean bitwise-equal params."""
    return hashlib.sha256(flax.serialization.to_bytes(params)).hexdigest()


def write(path: str | os.PathLike, stacked: Any, manifest: dict) -> Path:
    """Writes the stacked params (M, ...) and `manifest` (strict JSON) to `path`, atomically."""
    payload = {"format": FORMAT, "manifest": to_json(manifest), "params": jax.tree.map(np.asarray, stacked)}
    return write_bytes(path, flax.serialization.msgpack_serialize(payload))


def read(path: str | os.PathLike, flag: str = "--params") -> tuple[list[Any], dict, bytes]:
    """(each member's params, the manifest, the file's bytes).

    Raises ParamsFileError naming `flag` for a missing, unreadable or damaged file, or one of
    another format.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsFileError(f"{flag} {str(path)!r} does not exist; train first with experiments.vae_fashion_mnist")
    raw = path.read_bytes()
    try:
        tree = flax.serialization.msgpack_restore(raw)
    except Exception as err:  # noqa: BLE001 - msgpack raises several unrelated types for damaged bytes
        raise ParamsFileError(
            f"{flag} {str(path)!r} is not a flax msgpack file ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(tree, dict) or tree.get("format") not in (FORMAT, _FIRST_FORMAT):
        raise ParamsFileError(
            f"{flag} {str(path)!r} is not an {FORMAT} file (no manifest: written by an older aejax "
            "or by hand); train the model again with experiments.vae_fashion_mnist"
        )
    try:
        manifest = json.loads(tree["manifest"])
        stacked = tree["params"]
        count = len(manifest["members"])
        if tree["format"] == _FIRST_FORMAT:
            old = manifest["model"]
            binarized = old["likelihood"] == "binarized"  # format 1 named the binarization as a likelihood
            manifest["model"] = {
                "name": "mlp",
                "hidden_sizes": old["hidden_sizes"],
                "latent_dim": old["latent_dim"],
                "activation": old["activation"],
                "image_shape": [28, 28],
                "likelihood": "bernoulli" if binarized else old["likelihood"],
            }
            manifest["binarize"] = binarized
            manifest["data"] = {"dataset": "fashion_mnist"}
    except (KeyError, TypeError, ValueError) as err:
        raise ParamsFileError(f"{flag} {str(path)!r} has a damaged manifest ({err})") from None
    leaves = jax.tree.leaves(stacked)
    if not leaves or any(np.ndim(x) < 1 or np.shape(x)[0] != count for x in leaves):
        raise ParamsFileError(
            f"{flag} {str(path)!r}: the manifest lists {count} members, but the params do not "
            "all have a member axis of that length"
        )
    return [jax.tree.map(lambda x, i=i: np.asarray(x)[i], stacked) for i in range(count)], manifest, raw


@dataclasses.dataclass(frozen=True)
class Trained:
    """A params file's contents: the model it describes, its observation model (`likelihood`, one of
    `aejax.models.likelihoods.KINDS`), each member's params, the manifest, and the file's SHA-256.
    `binarize`: whether the model was trained on binarized images, so that its bounds are
    likelihoods only of binarized test images (`aejax.models.likelihoods.binarize_for_evaluation`)."""

    model: vae.Model
    likelihood: str
    members: list[vae.Params]
    manifest: dict
    sha256: str

    @property
    def binarize(self) -> bool:
        return bool(self.manifest.get("binarize", False))


def load(path: str | os.PathLike, checked: Sequence[int] | None = None, flag: str = "--params") -> Trained:
    """The model, likelihood and members a params file records (`read`), with the members in
    `checked` (default: all) checked against the model: names, shapes, dtypes, finiteness.

    Raises ParamsFileError naming `flag` where the file cannot be read or its model or members do
    not fit this aejax; ConfigError (`member`) where `checked` names a member it does not hold.
    """
    members, manifest, raw = read(path, flag)
    description = dict(manifest.get("model", {}))
    likelihood = description.pop("likelihood", None)
    try:
        model = registry.from_dict(description)
    except (ValueError, TypeError) as err:
        raise ParamsFileError(f"{flag} {str(path)!r} cannot be used here: {err}") from None
    if likelihood not in likelihoods.KINDS:
        raise ParamsFileError(
            f"{flag} {str(path)!r} records the likelihood {likelihood!r}, not one of {likelihoods.KINDS}"
        )
    if checked and max(checked) >= len(members):
        fail("member", f"must be below the population's {len(members)} members, got {max(checked)}")
    for index in range(len(members)) if checked is None else checked:
        try:
            vae.check_params(model, members[index])
        except ValueError as err:
            where = f" (member {index})" if len(members) > 1 else ""
            raise ParamsFileError(f"{flag} {str(path)!r}{where}: {err}") from None
    return Trained(model, likelihood, members, manifest, hashlib.sha256(raw).hexdigest())
