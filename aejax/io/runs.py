"""One run owns its output folder: a lock while it runs, and a record of what defines it.

`claim(out, kind, definition)` is entered before a script writes anything into `out`:

- it takes an exclusive lock (`.aejax.lock`, released even if the process is killed), so a second
  run into the same folder is refused at once instead of racing the first;
- it reads `run.json`, the record the folder's earlier run left: a folder of another kind of run
  (say, evaluation output pointed at a training folder) is always refused; a folder of the same
  kind is refused unless `resume` (the definitions must then agree: settings and a fingerprint of
  the data) or `overwrite` (which first deletes that run's outputs);
- it writes the new record (status "running", then "finished", "failed", "interrupted" (Ctrl-C)
  or "stopped" (SIGTERM, SIGHUP; `stopped_by` names the signal)) and removes temporary files an
  earlier, killed run left behind. A record that still says "running" while nobody holds the lock
  belongs to a process that was killed (say, by SIGKILL or a node failure): refusals say so.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from aejax.config import fail
from aejax.errors import RunDirError
from aejax.io.files import remove_temporaries, write_json

RECORD = "run.json"
LOCK = ".aejax.lock"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_record(out: str | os.PathLike) -> dict | None:
    """The run record in `out`, or None if there is none. RunDirError if it is unreadable."""
    path = Path(out) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "kind" not in record:
            raise ValueError("not a run record")
    except (OSError, ValueError) as err:
        raise RunDirError(
            f"{path} is not a readable run record ({err}); move the folder aside or choose another --out"
        ) from err
    return record


def check_reuse_flags(resume: bool, auto_resume: bool, overwrite: bool) -> None:
    """--resume and --auto-resume continue the run in --out; --overwrite replaces it: never both."""
    if (resume or auto_resume) and overwrite:
        fail("overwrite", f"and {'--resume' if resume else '--auto-resume'} contradict each other: pass one")


def resuming(out: str | os.PathLike, kind: str, resume: bool, auto_resume: bool) -> bool:
    """Whether a run of `kind` continues the one in `out`: --resume, or --auto-resume and `out` holds a
    run of that kind (else it starts one; one command line for a job a scheduler may requeue)."""
    if resume:
        return True
    record = read_record(out) if auto_resume and Path(out).is_dir() else None
    return record is not None and record.get("kind") == kind


def _differences(old: dict, new: dict) -> str:
    def shown(record, name):
        return repr(record[name]) if name in record else "(not set)"

    names = sorted(set(old) | set(new))
    return ", ".join(
        f"{name} {shown(old, name)} (now {shown(new, name)})"
        for name in names
        if old.get(name, ...) != new.get(name, ...)
    )


def _held_by(out: Path) -> str | None:
    """Who holds `out`'s lock (its "pid … on … since …" line), or None when nobody does."""
    try:
        fd = os.open(out / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)  # also releases the shared lock
    return None


def _in_use(out: Path, holder: str) -> RunDirError:
    return RunDirError(
        f"--out {str(out)!r} is in use by another run ({holder}); wait for it to finish or choose another --out"
    )


def describe_status(record: dict) -> str:
    """How the run recorded in `record` ended, in words, for a folder nobody holds now."""
    status = record.get("status")
    if status == "running":  # the lock is free: its process is gone without a word
        return (
            f"was running as pid {record.get('pid')} on {record.get('host')}, which no longer exists "
            f"(killed?); started {record.get('started')}"
        )
    if status == "stopped":
        return f"stopped by {record.get('stopped_by', 'a signal')} at {record.get('ended')}"
    return f"status {status!r}, started {record.get('started')}"


def state(out: str | os.PathLike, record: dict) -> str:
    """Where the run in `out` (recorded in `record`) stands, in words: in progress, with the process
    that holds the folder now, or how it ended."""
    holder = _held_by(Path(out))
    return f"in progress ({holder})" if holder is not None else describe_status(record)


def _lock(out: Path):
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise _in_use(out, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}".encode(), 0)
    return fd


@contextlib.contextmanager
def claim(
    out: str | os.PathLike,
    kind: str,
    definition: dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    outputs: Sequence[str] = (),
    enabled: bool = True,
    resumable: bool = True,
    details: dict[str, Any] | None = None,
) -> Iterator[dict]:
    """Owns `out` for one run of `kind` (a script's name); yields its record (a dict to add results to).

    Args:
      definition: JSON-able settings that define the run (compared on `resume`).
      outputs: the files and folders this kind of run writes into `out`; `overwrite` deletes them.
      enabled: False on the processes of a multi-host run that do not write (only process 0 claims).
      resumable: whether the script has --resume (the advice in refusals names only real flags).
      details: more of what the record holds from the start, e.g. {"environment": runtime.describe()}.
    Raises RunDirError (before writing anything) when the folder cannot be used.
    """
    if not enabled:
        yield {}
        return
    out = Path(out)
    check_folder(out, kind, resume=resume, overwrite=overwrite, outputs=outputs, resumable=resumable)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = _lock(out)
    except OSError as err:
        raise RunDirError(f"--out {str(out)!r} is not a writable folder ({err.strerror or err})") from None
    status, ours, stopped_by = "failed", False, None
    try:
        try:
            record = read_record(out)
            _check_reuse(out, record, kind, definition, resume, overwrite, outputs, resumable)
        except RunDirError:
            if created:
                os.close(fd)
                fd = None
                shutil.rmtree(out, ignore_errors=True)  # only the lock file is in it
            raise
        if overwrite:
            for name in list(outputs) + [RECORD]:
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        remove_temporaries(out)
        started = dict(record or {}) if resume and record else {}
        current = {
            **started,
            "kind": kind,
            "definition": definition,
            "status": "running",
            "started": started.get("started", _now()),
            "last_started": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "argv": sys.argv,
            **(details or {}),
        }
        write_json(out / RECORD, current)
        ours = True
        yield current
        status = "finished"
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", None)  # experiments.common.Stopped: SIGTERM or SIGHUP
        status, stopped_by = ("stopped", str(err)) if signum else ("interrupted", None)
        raise
    finally:
        if ours:
            ended = {"status": status, "ended": _now()}
            if status == "stopped":
                ended["stopped_by"] = stopped_by
            with contextlib.suppress(OSError, ValueError):  # the record is best effort once the work is done
                write_json(out / RECORD, {**current, **ended})
        if fd is not None:
            os.close(fd)


def check_folder(
    out: str | os.PathLike,
    kind: str,
    *,
    resume: bool = False,
    overwrite: bool = False,
    outputs: Sequence[str] = (),
    resumable: bool = True,
) -> None:
    """The refusals of `claim` that need only the folder, read-only: a script calls it before any
    other work, so that a folder it must not touch is refused whatever else is wrong. (The settings
    a resumed run must share are compared by `claim`.)"""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise RunDirError(f"--out {str(out)!r} exists and is not a folder")
        is_dir = out.is_dir()
        holder = _held_by(out) if is_dir else None
    except OSError as err:  # e.g. a name longer than the filesystem allows
        raise RunDirError(f"--out {str(out)[:80]!r}… cannot be used as a folder ({err.strerror or err})") from None
    if holder is not None:
        raise _in_use(out, holder)
    if is_dir:
        _check_reuse(out, read_record(out), kind, None, resume, overwrite, outputs, resumable)


def _check_reuse(
    out: Path,
    record: dict | None,
    kind: str,
    definition: dict | None,
    resume: bool,
    overwrite: bool,
    outputs: Sequence[str],
    resumable: bool = True,
) -> None:
    if record is None:
        leftovers = [name for name in outputs if (out / name).exists()]
        if leftovers and not overwrite:
            raise RunDirError(
                f"--out {str(out)!r} already holds {', '.join(leftovers)} of an unrecorded run; pass "
                "--overwrite to replace them or choose another --out"
            )
        return
    if record["kind"] != kind:
        raise RunDirError(
            f"--out {str(out)!r} holds the outputs of a {record['kind']} run, which this {kind} run "
            "must not touch; choose another --out"
        )
    if resume:
        if definition is not None and record.get("definition") != definition:
            raise RunDirError(
                f"--resume: {out / RECORD} records a run with different settings: "
                f"{_differences(record.get('definition') or {}, definition)}; pass the same settings "
                "to continue it, or choose another --out"
            )
        return
    if not overwrite:
        advice = (
            "pass --resume to continue it, --overwrite to replace it" if resumable else "pass --overwrite to replace it"
        )
        raise RunDirError(
            f"--out {str(out)!r} already holds a {kind} run ({describe_status(record)}); {advice}, or "
            "choose another --out"
        )
