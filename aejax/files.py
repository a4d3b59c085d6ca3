"""Atomic file output: a temporary file in the target folder, fsynced, then renamed into place."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Writes `payload` to `path` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Writes `payload` as indented JSON, atomically (see `write_bytes`)."""
    return write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())
