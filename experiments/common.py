"""What the experiment CLIs share: flags from typed configs, runtime set-up, and exit codes.

Exit codes: 0 done; 1 the work failed (divergence, a full disk, a cluster that cannot form), or a
bug (any error that is not one of aejax.errors' bad-input types: one line, and the traceback kept
in the run folder as traceback.txt); 2 bad input (flags, data, output folder, params file: an
aejax.errors.UsageError), with one line naming the flag, before any output;
130 interrupted (Ctrl-C), 143 stopped by SIGTERM (a scheduler's preemption or time limit) and
129 by SIGHUP (a closed terminal): one line naming the checkpoint that --resume continues from.

A closed or broken stdout or stderr (`| head`, a terminal that went away) never stops the work:
what cannot be shown is dropped, and the results are written as usual.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import traceback
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Callable

import matplotlib

from aejax import config as config_lib
from aejax import runtime
from aejax.errors import ConfigError, UsageError
from aejax.io.streams import tolerant_output

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: the run ends as after Ctrl-C, with exit code 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas (e.g. 300,300), got {text!r}"
        ) from None


def _sweep_item(text: str) -> tuple[str, tuple[float, ...]]:
    name, _, values = text.partition("=")
    try:
        parsed = tuple(float(v) for v in values.split(","))
    except ValueError:
        parsed = ()
    if not name or not parsed:
        raise argparse.ArgumentTypeError(f"expected NAME=v1,v2,… (e.g. beta=0.5,1,2), got {text!r}")
    return name.replace("-", "_"), parsed


def _argument(leaf: config_lib.Leaf) -> dict[str, Any]:
    field, annotation = leaf.field, leaf.annotation
    help_text = field.metadata.get("help", "")
    kwargs: dict[str, Any] = {"default": field.default, "help": f"{help_text} (default: %(default)s)"}
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kind = [a for a in typing.get_args(annotation) if a is not type(None)][0] if union else annotation
    if kind is bool:
        return {"action": "store_true", "help": help_text}
    if field.name == "sweep":
        return {"action": "append", "type": _sweep_item, "default": None, "help": help_text}
    if typing.get_origin(kind) is tuple:
        kwargs["type"] = _int_tuple
        kwargs["help"] = f"{help_text} (default: {','.join(map(str, field.default))})"
    elif kind in (int, float):
        kwargs["type"] = kind
    if field.metadata.get("choices"):
        kwargs["choices"] = field.metadata["choices"]
    return kwargs


def config_parser(config_cls: type, description: str) -> argparse.ArgumentParser:
    """An experiment's parser: one `--flag-name` per field of `config_cls`, with the field's help.

    A config class with PRESETS ({name: {field: value}}) also gets `--preset NAME`, which sets
    those fields' defaults; flags given explicitly still win.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    presets = getattr(config_cls, "PRESETS", None)
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help="set the defaults of several flags at once: "
            + "; ".join(
                f"{name}: " + (", ".join(f"{flag(k)} {_shown(v)}" for k, v in values.items()) or "the defaults")
                for name, values in presets.items()
            ),
        )
    groups = {}  # a config's sections become the help's groups, titled by the section's docstring
    for leaf in config_lib.leaves(config_cls):
        section = leaf.path[0] if leaf.path else None
        if section is not None and section not in groups:
            doc = (config_lib.section_class(config_cls, section).__doc__ or "").strip().splitlines()
            groups[section] = parser.add_argument_group(section, doc[0] if doc else None)
        target = groups.get(section, parser)
        target.add_argument(flag(leaf.name), dest=leaf.name, **_argument(leaf))
    return parser


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def parse_args(parser: argparse.ArgumentParser, config_cls: type, argv: list[str] | None) -> argparse.Namespace:
    """Parses `argv`, applying `--preset`'s defaults first when the config class has presets."""
    presets = getattr(config_cls, "PRESETS", None)
    if presets:
        known, _ = parser.parse_known_args(argv)
        if known.preset:
            parser.set_defaults(**presets[known.preset])
    return parser.parse_args(argv)


def config_from_args(config_cls: type, args: argparse.Namespace) -> Any:
    values = {leaf.name: getattr(args, leaf.name) for leaf in config_lib.leaves(config_cls)}
    if "sweep" in values:
        values["sweep"] = tuple(values["sweep"] or ())
    return config_lib.build(config_cls, values)


TRACEBACK = "traceback.txt"


def report_bug(err: BaseException, out: str | None) -> int:
    """Reports `err` as a bug, never as the user's mistake: one line on stderr, and the traceback kept
    in the run folder `out` (as traceback.txt) when it exists, else in a temporary file. Exit 1."""
    text = traceback.format_exc()
    try:
        if out and Path(out).is_dir():
            path = Path(out) / TRACEBACK
            path.write_text(text)
        else:
            fd, name = tempfile.mkstemp(prefix="aejax-traceback-", suffix=".txt")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            path = Path(name)
        where = f"the traceback is in {path}"
    except OSError:
        print(text, file=sys.stderr, end="")
        where = "the traceback is above"
    version = runtime.source_revision()
    print(
        f"bug: {type(err).__name__}: {err} (aejax {version['version']}, commit {version['commit']}); {where}; "
        "please report it with that traceback",
        file=sys.stderr,
    )
    return EXIT_FAILURE


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(
    config_cls: type,
    description: str,
    run: Callable[[Any], int],
    argv: list[str] | None = None,
    on_interrupt: Callable[[Any], str] | None = None,
    prepare: Callable[[Any], None] | None = None,
) -> int:
    """Parses flags into `config_cls`, sets up XLA, calls `run(config)` and maps failures to exit codes.

    `prepare(config)` runs first (checks that need no data, cluster set-up); `on_interrupt(config)`
    says what Ctrl-C leaves behind. Usage errors exit through `parser.error` (SystemExit 2).
    """
    matplotlib.use("Agg")  # the scripts write figures to files, with or without a display
    streams = sys.stdout, sys.stderr
    tolerant_output()
    try:
        return _main(config_cls, description, run, argv, on_interrupt, prepare)
    finally:
        sys.stdout, sys.stderr = streams


def _main(config_cls, description, run, argv, on_interrupt, prepare) -> int:
    parser = config_parser(config_cls, description)
    args = parse_args(parser, config_cls, argv)
    config = None
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS} if main_thread else {}
    try:
        config = config_from_args(config_cls, args)
        runtime.configure(deterministic=bool(config_lib.flatten(config).get("deterministic", False)))
        if prepare is not None:
            prepare(config)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.showwarning = _warn_to_stderr
            return run(config)
    except ConfigError as err:
        parser.error(f"{flag(err.field)} {err.message}")
    except UsageError as err:
        parser.error(str(err))
    except (FloatingPointError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as err:
        where = f" {err.filename!r}" if err.filename else ""
        print(f"error: could not write or read{where}: {err.strerror or err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt as err:
        hint = on_interrupt(config) if (on_interrupt is not None and config is not None) else ""
        how = f"stopped by {err}" if isinstance(err, Stopped) else "interrupted"
        print(f"{how}{'; ' + hint if hint else ''}", file=sys.stderr)
        return 128 + err.signum if isinstance(err, Stopped) else EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - anything else is a bug, in aejax or below it
        return report_bug(err, None if config is None else config_lib.flatten(config).get("out"))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
