"""Typed, frozen configs: each field carries its help text, and values are checked against its type.

A field is declared with `option(default, "help text")`; the experiment CLIs turn every field
into a `--flag-name` with that help (experiments/common.py). `check_types(config)` checks each
value against the field's annotation: `int` (not bool), `float` (finite unless the field allows
otherwise), `str`, `bool`, `tuple[int, ...]`, and `X | None`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import numpy as np

from aejax.errors import ConfigError


def fail(field: str, message: str) -> None:
    """Raises ConfigError: `message` says what `field` must be and what it got."""
    raise ConfigError(field, message)


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its help text (and e.g. `choices=...`) stored in its metadata."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _matches(value: Any, annotation: Any) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, (bool, np.bool_))
    if annotation is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if annotation is float:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if annotation is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(item, args[0]) for item in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
    return True  # other annotations are not checked here


def _accepts_tuples(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is tuple or any(typing.get_origin(a) is tuple for a in args)


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_types(config: Any) -> None:
    """Raises ConfigError naming the first field whose value does not match its annotation.

    Lists are accepted where tuples are expected (and stored as tuples, so the config stays
    hashable). Floats must also be finite unless the field's metadata says `allow_nonfinite=True`.
    """
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        annotation = hints[field.name]
        if isinstance(value, list) and _accepts_tuples(annotation):  # a notebook's [300, 300] is (300, 300)
            value = _as_tuples(value)
            object.__setattr__(config, field.name, value)
        if not _matches(value, annotation):
            fail(field.name, f"must be of type {_type_name(annotation)}, got {value!r}")
        if (
            isinstance(value, (float, np.floating))
            and not math.isfinite(value)
            and not field.metadata.get("allow_nonfinite")
        ):
            fail(field.name, f"must be a finite number, got {value!r}")
