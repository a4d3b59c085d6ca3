"""Where `aejax.training.fit` sends each epoch's metrics as they happen: a JSON-lines log and TensorBoard.

A record is one member's epoch: {"epoch", "member", "seed", "beta", "learning_rate", "loss",
"val_loss", …}; members that stopped (early stopping) or diverged have no record. Both writers
start cleanly on a resumed run: the log keeps only epochs before the first one written again, and
TensorBoard purges later events.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aejax.errors import UsageError
from aejax.io.files import append_json_line, read_json_lines, to_json_line, write_bytes

METADATA = ("epoch", "member", "seed", "beta", "learning_rate")


def _live(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if any(v is not None for k, v in r.items() if k not in METADATA)]


class JsonLines:
    """Appends one line per member and epoch to `path` (e.g. <out>/history.jsonl), flushed each time:
    `pandas.read_json(path, lines=True)` can read it while training runs."""

    def __init__(self, path: str | os.PathLike, resume: bool = False):
        """With `resume`, first reads the lines the earlier run left in `path`: a torn last line is
        dropped with a warning, any other damage raises ValueError naming the line (before any work)."""
        self.path = Path(path)
        self._earlier = read_json_lines(self.path) if resume and self.path.exists() else []
        self._started = False

    def write(self, epoch: int, records: list[dict[str, Any]]) -> None:
        if not self._started:  # drop lines of epochs being run again (a resumed run)
            kept = [r for r in self._earlier if r.get("epoch", epoch) < epoch]
            write_bytes(self.path, "".join(to_json_line(r) for r in kept).encode())
            self._started = True
        for record in _live(records):
            append_json_line(self.path, record)

    def close(self) -> None:
        """Nothing to close: every line is written and flushed as it comes."""


class TensorBoard:
    """Writes the same scalars as event files under `logdir` (one run per member for populations).

    Needs the optional extra: `pip install 'aejax[tensorboard]'` (tensorboardX; no TensorFlow).
    """

    def __init__(self, logdir: str | os.PathLike, num_members: int):
        try:
            import tensorboardX  # noqa: F401
        except ImportError as err:
            raise UsageError("--tensorboard needs tensorboardX: pip install -e '.[tensorboard]'") from err
        self.logdir, self.num_members = Path(logdir), num_members
        self._writers: dict[int, Any] = {}

    def _writer(self, member: int, epoch: int):
        if member not in self._writers:
            import tensorboardX

            logdir = self.logdir / f"member_{member:03d}" if self.num_members > 1 else self.logdir
            self._writers[member] = tensorboardX.SummaryWriter(str(logdir), purge_step=epoch)
        return self._writers[member]

    def write(self, epoch: int, records: list[dict[str, Any]]) -> None:
        for record in _live(records):
            writer = self._writer(record["member"], epoch)
            for name, value in record.items():
                if name not in METADATA and value is not None:
                    writer.add_scalar(name, value, epoch)
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
