"""Per-epoch training checkpoints: atomic, checksummed, the last few kept, corrupt ones set aside.

A checkpoint is `<dir>/epoch_<NNNN>.msgpack`: flax-serialised {"tree": any pytree of arrays (the
training state), "epoch": epochs completed, "extra": strict JSON metadata (history, the settings
that define the run)} followed by its SHA-256, written atomically (`aejax.io.files.write_bytes`).
Restoring gives back the exact bits, so a resumed run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np

from aejax.errors import ParamsFileError
from aejax.io.files import remove_temporaries, write_bytes
from aejax.parallel import to_host

_NAME = re.compile(r"^epoch_(\d{4,})\.msgpack$")
_DIGEST_BYTES = 32
CORRUPT_SUFFIX = ".corrupt"


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read and was set aside; an older one was used instead."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file is truncated or damaged (its SHA-256 does not match)."""


def save(directory: str | os.PathLike, epoch: int, tree: Any, extra: dict, keep: int = 3) -> Path:
    """Writes the checkpoint after `epoch` epochs; then deletes all but the newest `keep` and any
    temporary file a killed write left behind (one process writes checkpoints, one at a time)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = flax.serialization.msgpack_serialize(
        {
            "tree": flax.serialization.to_state_dict(to_host(tree)),
            "epoch": epoch,
            "extra": json.dumps(extra, allow_nan=False),
        }
    )
    path = write_bytes(directory / f"epoch_{epoch:04d}.msgpack", payload + hashlib.sha256(payload).digest())
    for old in list_checkpoints(directory)[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    remove_temporaries(directory)
    return path


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint files in `directory`, oldest first (by epoch number)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load(
    path: str | os.PathLike, template: Any, check: Callable[[dict, Path], None] | None = None
) -> tuple[Any, int, dict]:
    """Reads one checkpoint into the structure of `template`; returns (tree, epoch, extra).

    `check(extra, path)` runs before the arrays are restored, e.g. to refuse another run's
    checkpoint with a better message than a structure mismatch.
    Raises CorruptCheckpointError if the file is truncated or damaged, and ValueError naming the
    file if it holds another model's or optimiser's state.
    """
    path = Path(path)
    raw = path.read_bytes()
    payload, digest = raw[:-_DIGEST_BYTES], raw[-_DIGEST_BYTES:]
    if len(raw) <= _DIGEST_BYTES or hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpointError(f"checkpoint {path} is truncated or corrupt (SHA-256 mismatch)")
    try:
        contents = flax.serialization.msgpack_restore(payload)
        epoch, extra = int(contents["epoch"]), json.loads(contents["extra"])
    except (KeyError, ValueError, TypeError) as err:
        raise CorruptCheckpointError(f"checkpoint {path} is not a readable checkpoint ({err})") from err
    if check is not None:
        check(extra, path)
    try:
        restored = flax.serialization.from_state_dict(template, contents["tree"])
    except (KeyError, ValueError, TypeError) as err:
        raise ParamsFileError(f"checkpoint {path} does not match this model/optimiser: {err}") from err
    want = [np.shape(x) for x in jax.tree.leaves(template)]
    got = [np.shape(x) for x in jax.tree.leaves(restored)]
    if want != got:
        raise ParamsFileError(f"checkpoint {path}: shapes {got} differ from this model's {want}")
    return restored, epoch, extra


def restore_latest(
    directory: str | os.PathLike, template: Any, check: Callable[[dict, Path], None] | None = None
) -> tuple[Any, int, dict, Path] | None:
    """The newest readable checkpoint as (tree, epoch, extra, path), or None if there is none.

    Each corrupt newer checkpoint is renamed `*.corrupt` (kept for inspection, out of the way of
    the epoch count that `save` prunes by) with a `CheckpointWarning` naming it. A checkpoint of
    another model, optimiser or run (`check`) raises ValueError: it is not skipped silently.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            return (*load(path, template, check), path)
        except (OSError, CorruptCheckpointError) as err:
            aside = path.with_name(path.name + CORRUPT_SUFFIX)
            with contextlib.suppress(FileNotFoundError):  # another process of the run set it aside first
                os.replace(path, aside)
            warnings.warn(
                f"{err}; set it aside as {aside.name} and fell back to the previous checkpoint",
                CheckpointWarning,
                stacklevel=2,
            )
    return None
