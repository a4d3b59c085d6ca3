"""Standard streams that survive a reader that went away (`| head`, a closed terminal, `>&-`)."""

from __future__ import annotations

import io
import os
import sys


class _Tolerant(io.TextIOBase):
    """A text stream that drops what it cannot write once its reader is gone (EPIPE, a closed or
    missing stream), so that progress output never ends the work. The file descriptor is then
    pointed at /dev/null, so that nothing left in a buffer fails again at exit."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = stream is None

    def _drop(self) -> None:
        self.broken = True
        try:
            target = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, target)
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._drop()

    def isatty(self) -> bool:
        return not self.broken and self._stream.isatty()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"


def tolerant_output() -> None:
    """Replaces sys.stdout and sys.stderr by streams that survive a reader that went away."""
    if not isinstance(sys.stdout, _Tolerant):
        sys.stdout = _Tolerant(sys.stdout)
    if not isinstance(sys.stderr, _Tolerant):
        sys.stderr = _Tolerant(sys.stderr)
