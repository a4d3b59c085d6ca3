"""Helpers the experiment CLIs share: output folders, dataclass <-> argparse."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

from aejax import runtime


def prepare_out_dir(out: str | os.PathLike) -> Path:
    """Creates `out` if needed and checks it is writable; raises SystemExit with a clear message if not."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise SystemExit(f"error: --out {str(out)!r} is not a writable directory ({err.strerror or err})") from err
    return out


def config_parser(config_cls: type, help_text: dict[str, str], description: str) -> argparse.ArgumentParser:
    """An experiment's parser: one `--flag-name` per dataclass field, defaulting to the field's default.

    Also applies the fast XLA CPU flags, which must happen before JAX's backend starts (aejax/runtime.py).
    """
    runtime.use_fast_cpu_flags()
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(config_cls):
        kwargs: dict[str, Any] = {"default": field.default, "help": f"{help_text[field.name]} (default: %(default)s)"}
        if field.type in ("bool", bool):
            kwargs = {"action": "store_true", "help": help_text[field.name]}
        elif field.type in ("int", int):
            kwargs["type"] = int
        elif field.type in ("float", float, "float | None"):
            kwargs["type"] = float
        choices = field.metadata.get("choices")
        if choices:
            kwargs["choices"] = choices
        parser.add_argument("--" + field.name.replace("_", "-"), dest=field.name, **kwargs)
    return parser


def config_from_args(config_cls: type, args: argparse.Namespace):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})
