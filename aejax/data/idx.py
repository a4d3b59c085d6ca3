"""The IDX file format of MNIST and Fashion-MNIST (gzipped unsigned bytes)."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from aejax.errors import DataError, DataNotFoundError

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), then the number of dimensions.
_IDX_UBYTE = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one gzipped IDX file of unsigned bytes (the MNIST format).

    Returns: uint8 array whose shape is the file's declared dimensions.
    Raises: DataNotFoundError (a FileNotFoundError), or DataError naming the file for any corrupt content.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file not found: {path}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip file ({err}); re-download or reinstall it") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise DataError(
            f"{path}: wrong IDX magic number: expected 0x0000 0x08 <ndim> (unsigned-byte IDX), "
            f"found {raw[:4].hex(' ') or 'an empty file'}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: IDX header declares {ndim} dimensions but the file is {len(raw)} bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header} bytes: truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
