"""The trained-parameters file: the members' parameters with a manifest that says what they are.

`params.msgpack` (flax msgpack) holds {"format": FORMAT, "manifest": JSON text, "params": tree}:
the tree always has a leading member axis (1 for a single run), and the manifest names the model
(its settings, the observation model among them) and each member's seed and hyperparameters. So
the file says on its own how to read it, wherever it is copied. The manifest holds nothing that
differs between two runs of the same program (no dates, paths or hosts): same run, same bytes.

Files without the manifest (aejax before this format, or a tree a user wrote) are read as one
model, or as a population when every leaf shares a leading axis and the first kernel is stacked;
readers then say what they had to assume.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from aejax.errors import ParamsFileError
from aejax.io.files import to_json, write_bytes

FORMAT = "aejax.params/1"


def member_digest(params: Any) -> str:
    """SHA-256 of one member's params as flax bytes: equal digests mean bitwise-equal params."""
    return hashlib.sha256(flax.serialization.to_bytes(params)).hexdigest()


def write(path: str | os.PathLike, stacked: Any, manifest: dict) -> Path:
    """Writes the stacked params (M, ...) and `manifest` (strict JSON) to `path`, atomically."""
    payload = {"format": FORMAT, "manifest": to_json(manifest), "params": jax.tree.map(np.asarray, stacked)}
    return write_bytes(path, flax.serialization.msgpack_serialize(payload))


def read(path: str | os.PathLike, flag: str = "--params") -> tuple[list[Any], dict | None, bytes]:
    """(each member's params, the manifest or None for a file without one, the file's bytes).

    Raises ParamsFileError naming `flag` for a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsFileError(f"{flag} {str(path)!r} does not exist; train first with experiments.vae_fashion_mnist")
    raw = path.read_bytes()
    try:
        tree = flax.serialization.msgpack_restore(raw)
    except Exception as err:  # noqa: BLE001 - msgpack raises several unrelated types for damaged bytes
        raise ParamsFileError(f"{flag} {str(path)!r} is not a flax msgpack file ({type(err).__name__}: {err})") from None
    if isinstance(tree, dict) and tree.get("format") == FORMAT:
        try:
            manifest = json.loads(tree["manifest"])
            stacked = tree["params"]
            count = len(manifest["members"])
        except (KeyError, TypeError, ValueError) as err:
            raise ParamsFileError(f"{flag} {str(path)!r} has a damaged manifest ({err})") from None
        leaves = jax.tree.leaves(stacked)
        if not leaves or any(np.ndim(x) < 1 or np.shape(x)[0] != count for x in leaves):
            raise ParamsFileError(f"{flag} {str(path)!r}: the manifest lists {count} members, but the params do not "
                             "all have a member axis of that length")
        return [jax.tree.map(lambda x, i=i: np.asarray(x)[i], stacked) for i in range(count)], manifest, raw
    return _legacy_members(tree), None, raw


def _legacy_members(tree: Any) -> list[Any]:
    leaves = jax.tree.leaves(tree)
    encoder = tree.get("encoder") if isinstance(tree, dict) else None
    kernel = encoder.get("hidden_0", {}).get("kernel") if isinstance(encoder, dict) else None
    if (kernel is not None and np.ndim(kernel) == 3 and all(np.ndim(x) >= 1 for x in leaves)
            and len({np.shape(x)[0] for x in leaves}) == 1):
        return [jax.tree.map(lambda x, i=i: np.asarray(x)[i], tree) for i in range(np.shape(kernel)[0])]
    return [tree]
