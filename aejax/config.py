"""Typed, frozen configs: each setting carries its help text, and values are checked against its type.

A setting is declared once, with `option(default, "help text")`. A config may group its settings
in sections, each a config of its own declared with `section(Cls)`, e.g. `Config(model=…,
schedule=…)`; a setting's *name* (`leaves`) is its field name, unique across the sections, or the
`flag=` its option gives. The experiment CLIs turn every setting into a `--flag-name` with its help
(experiments/common.py); `flatten` and `build` go between a config and its {name: value} settings,
and `replace(config, epochs=3)` changes settings by name, wherever they sit.

`check_types(config)` checks each value against the field's annotation: `int` (not bool), `float`
(finite unless the field allows otherwise), `str`, `bool`, `tuple[int, ...]`, `X | None`, and a
section's class.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import numpy as np

from aejax.errors import ConfigError, UsageError


def fail(field: str, message: str) -> None:
    """Raises ConfigError: `message` says what `field` must be and what it got."""
    raise ConfigError(field, message)


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its help text (and e.g. `choices=...`) stored in its metadata."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def section(cls: type) -> Any:
    """A dataclass field holding a section of settings: a config of class `cls`, by default `cls()`."""
    return dataclasses.field(default_factory=cls, metadata={"section": True})


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One setting of a (possibly sectioned) config class: its name, where it sits, and its field."""

    name: str  # the flag's name (`--name` with dashes), unique in its config
    path: tuple[str, ...]  # the sections' attribute names, outermost first; () at the top
    field: dataclasses.Field
    annotation: Any


def leaves(cls: type) -> list[Leaf]:
    """Every setting of config class `cls`, sections expanded in their order of declaration."""
    found: list[Leaf] = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("section"):
            found += [dataclasses.replace(leaf, path=(field.name, *leaf.path)) for leaf in leaves(hints[field.name])]
        else:
            found.append(Leaf(field.metadata.get("flag", field.name), (), field, hints[field.name]))
    names = [leaf.name for leaf in found]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise TypeError(f"{cls.__name__} declares the settings {duplicated} more than once")
    return found


def section_class(cls: type, name: str) -> type:
    """The class of config class `cls`'s section `name`."""
    return typing.get_type_hints(cls)[name]


def flatten(config: Any) -> dict[str, Any]:
    """{name: value} of every setting of `config`, sections expanded."""
    values = {}
    for leaf in leaves(type(config)):
        node = config
        for attribute in leaf.path:
            node = getattr(node, attribute)
        values[leaf.name] = getattr(node, leaf.field.name)
    return values


def build(cls: type, values: dict[str, Any]) -> Any:
    """The config of class `cls` with settings `values` ({name: value}) and defaults for the rest;
    each section checks its own settings, then the config checks how they combine. UsageError for
    a name that is not one of `cls`'s settings."""
    known = {leaf.name for leaf in leaves(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UsageError(f"{cls.__name__} has no setting {unknown[0]!r}; its settings are {sorted(known)}")
    return _build(cls, values)


def _build(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        name = field.metadata.get("flag", field.name)
        if field.metadata.get("section"):
            kwargs[field.name] = _build(hints[field.name], values)
        elif name in values:
            kwargs[field.name] = values[name]
    return cls(**kwargs)


def replace(config: Any, **values: Any) -> Any:
    """`config` with the named settings changed (e.g. `replace(config, epochs=3, latent_dim=2)`)."""
    return build(type(config), {**flatten(config), **values})


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
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, annotation)
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
        name = field.metadata.get("flag", field.name)
        if isinstance(value, list) and _accepts_tuples(annotation):  # a notebook's [300, 300] is (300, 300)
            value = _as_tuples(value)
            object.__setattr__(config, field.name, value)
        if not _matches(value, annotation):
            fail(name, f"must be of type {_type_name(annotation)}, got {value!r}")
        if (
            isinstance(value, (float, np.floating))
            and not math.isfinite(value)
            and not field.metadata.get("allow_nonfinite")
        ):
            fail(name, f"must be a finite number, got {value!r}")
