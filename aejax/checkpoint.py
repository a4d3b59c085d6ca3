"""Per-epoch training checkpoints: atomic, checksummed, the last few kept, corrupt ones skipped.

A checkpoint is `<dir>/epoch_<NNNN>.msgpack`: flax-serialised {"state": the TrainState's
step/params/opt_state, "epoch": epochs completed, "extra": JSON-able metadata (e.g. history)}
followed by its SHA-256, written atomically (`aejax.files.write_bytes`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from aejax.files import write_bytes
from aejax.parallel import to_host

_NAME = re.compile(r"^epoch_(\d{4,})\.msgpack$")
# A write cut short (e.g. by SIGKILL) leaves `aejax.files.write_bytes`'s temporary file behind.
_PARTIAL = re.compile(r"^\.epoch_\d{4,}-.*\.msgpack$")
_DIGEST_BYTES = 32


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read and an older one was used instead."""


def _state_dict(state: Any) -> dict:
    return {"step": state.step, "params": state.params, "opt_state": state.opt_state}


def save(directory: str | os.PathLike, epoch: int, state: Any, extra: dict, keep: int = 3) -> Path:
    """Writes the checkpoint after `epoch` epochs; deletes all but the newest `keep` and any partial
    write left by an earlier, killed run (one process writes checkpoints, one at a time)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = flax.serialization.msgpack_serialize({
        "state": flax.serialization.to_state_dict(to_host(_state_dict(state))),
        "epoch": epoch, "extra": json.dumps(extra),
    })
    path = write_bytes(directory / f"epoch_{epoch:04d}.msgpack", payload + hashlib.sha256(payload).digest())
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    for partial in directory.iterdir():
        if _PARTIAL.match(partial.name):
            partial.unlink(missing_ok=True)
    return path


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Checkpoint files in `directory`, oldest first (by epoch number)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load(path: str | os.PathLike, template_state: Any) -> tuple[Any, int, dict]:
    """Reads one checkpoint into the structure of `template_state`; returns (state, epoch, extra).

    Raises ValueError naming the file if it is truncated, corrupt or of another model/optimiser.
    """
    path = Path(path)
    raw = path.read_bytes()
    payload, digest = raw[:-_DIGEST_BYTES], raw[-_DIGEST_BYTES:]
    if len(raw) <= _DIGEST_BYTES or hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"checkpoint {path} is truncated or corrupt (SHA-256 mismatch)")
    template = _state_dict(template_state)
    try:
        contents = flax.serialization.msgpack_restore(payload)
        restored = flax.serialization.from_state_dict(template, contents["state"])
        epoch, extra = int(contents["epoch"]), json.loads(contents["extra"])
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"checkpoint {path} does not match this model/optimiser: {err}") from err
    for name, expected in template.items():
        _check_shapes(path, name, expected, restored[name])
    return template_state.replace(**restored), epoch, extra


def _check_shapes(path: Path, name: str, expected: Any, found: Any) -> None:
    want = [np.shape(x) for x in jax.tree.leaves(expected)]
    got = [np.shape(x) for x in jax.tree.leaves(found)]
    if want != got:
        raise ValueError(f"checkpoint {path}: {name} shapes {got} differ from this model's {want}")


def restore_latest(directory: str | os.PathLike, template_state: Any) -> tuple[Any, int, dict] | None:
    """The newest readable checkpoint as (state, epoch, extra), or None if there is none.

    An unreadable newer checkpoint is skipped with a `CheckpointWarning` naming it.
    """
    for path in reversed(list_checkpoints(directory)):
        try:
            return load(path, template_state)
        except (OSError, ValueError) as err:
            warnings.warn(f"{err}; falling back to the previous checkpoint", CheckpointWarning, stacklevel=2)
    return None
