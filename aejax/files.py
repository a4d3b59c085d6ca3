"""File output: atomic writes (temporary file, fsync, rename), strict JSON, and JSON-lines logs.

Files are created with mode 0666 minus the process umask, like any other program's, so the other
users of a shared filesystem (multi-host runs) can read them. JSON is strict: a NaN or infinity
is an error, never written as the non-standard `NaN`.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Any

# `.<name>.<16 hex>.tmp`: what `write_bytes` writes before renaming, and leaves if killed mid-write.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Writes `payload` to `path` so readers see the old file or the whole new one, never a part.

    Raises OSError (e.g. a full disk) after removing its temporary file.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class NonFiniteJSONError(RuntimeError):
    """A NaN or infinity reached a JSON writer: a bug upstream, never written as `NaN`."""


def _nonfinite_paths(payload: Any, path: str = "") -> list[str]:
    if isinstance(payload, dict):
        return [p for k, v in payload.items() for p in _nonfinite_paths(v, f"{path}/{k}")]
    if isinstance(payload, (list, tuple)):
        return [p for i, v in enumerate(payload) for p in _nonfinite_paths(v, f"{path}[{i}]")]
    if isinstance(payload, float) and not math.isfinite(payload):
        return [f"{path or '/'} = {payload}"]
    return []


def _strict_dumps(payload: Any, **kwargs) -> str:
    try:
        return json.dumps(payload, allow_nan=False, **kwargs)
    except ValueError as err:
        found = _nonfinite_paths(payload)
        raise NonFiniteJSONError(f"refusing to write a non-finite number as JSON: {', '.join(found[:5]) or err}") from err


def to_json(payload: Any) -> str:
    """Strict, indented JSON; NonFiniteJSONError naming where a NaN/inf is (never written as `NaN`)."""
    return _strict_dumps(payload, indent=2) + "\n"


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Writes `payload` as strict, indented JSON, atomically (see `write_bytes`, `to_json`)."""
    return write_bytes(path, to_json(payload).encode())


def append_json_line(path: str | os.PathLike, record: dict) -> None:
    """Appends one strict JSON object as a line (a log that can be read while it grows)."""
    line = _strict_dumps(record) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    with os.fdopen(fd, "a") as f:
        f.write(line)
        f.flush()


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files a killed `write_bytes` left in `directory`; returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.is_file() and _TEMPORARY.match(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
