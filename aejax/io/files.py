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
import warnings
from pathlib import Path
from typing import Any

from aejax.errors import RunDirError

# `.<name>.<16 hex>.tmp`: what `write_bytes` writes before renaming, and leaves if killed mid-write.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


def check_writable(path: str | os.PathLike) -> str | None:
    """Why a file could not be written at `path` later (None if it could): a check a long job runs
    first, so that it does not find out after hours of work. Creates no file and no folder."""
    path = Path(path)
    try:
        if path.is_dir():
            return "is a folder"
        parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
        if not parent.is_dir():
            return f"{str(parent)!r} is not a folder"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{str(parent)!r} is not writable"
        if path.exists() and not os.access(path, os.W_OK):
            return "exists and is not writable"
        if len(path.name.encode()) > 255 - 32:  # the temporary file's name adds 26 characters
            return "has a name too long for the filesystem"
    except OSError as err:
        return err.strerror or str(err)
    return None


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
        raise NonFiniteJSONError(
            f"refusing to write a non-finite number as JSON: {', '.join(found[:5]) or err}"
        ) from err


def to_json(payload: Any) -> str:
    """Strict, indented JSON; NonFiniteJSONError naming where a NaN/inf is (never written as `NaN`)."""
    return _strict_dumps(payload, indent=2) + "\n"


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Writes `payload` as strict, indented JSON, atomically (see `write_bytes`, `to_json`)."""
    return write_bytes(path, to_json(payload).encode())


def to_json_line(record: dict) -> str:
    """One strict JSON object on one line, with its newline."""
    return _strict_dumps(record) + "\n"


def append_json_line(path: str | os.PathLike, record: dict) -> None:
    """Appends one strict JSON object as a line (a log that can be read while it grows)."""
    line = to_json_line(record)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    with os.fdopen(fd, "a") as f:
        f.write(line)
        f.flush()


class TornLineWarning(UserWarning):
    """A JSON-lines file ended in a partial line (a kill or a full disk mid-append); it was dropped."""


def read_json_lines(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file (as `append_json_line` writes them).

    A partial last line (no newline at its end and not valid JSON: the writer was killed, or the disk
    filled up, mid-append) is dropped with a TornLineWarning naming the file. Any other line that is
    not a JSON object raises RunDirError naming the file and the line.
    """
    path = Path(path)
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            if number == len(lines):  # the last line, without its newline: torn
                warnings.warn(
                    f"{path}: dropped a partial last line ({len(line)} characters; an interrupted write)",
                    TornLineWarning,
                    stacklevel=2,
                )
                break
            raise RunDirError(f"{path} line {number} is not valid JSON ({err}); repair or remove that line") from None
        if not isinstance(record, dict):
            raise RunDirError(f"{path} line {number} is not a JSON object; repair or remove that line")
        records.append(record)
    return records


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Deletes the temporary files a killed `write_bytes` left in `directory`; returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.is_file() and _TEMPORARY.match(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
