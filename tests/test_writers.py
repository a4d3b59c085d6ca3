"""Per-epoch metric writers: a JSON-lines log readable while it grows, and TensorBoard events."""

import json
import struct

import pytest

from aejax.io import files, writers


def _records(epoch, members=2, stopped=()):
    return [
        {
            "epoch": epoch,
            "member": m,
            "seed": 42 + m,
            "beta": 1.0,
            "learning_rate": 1e-3,
            "loss": None if m in stopped else 0.5 / epoch,
            "val_loss": None if m in stopped else 0.6 / epoch,
        }
        for m in range(members)
    ]


def test_json_lines_skip_stopped_members_and_restart_cleanly_on_resume(tmp_path):
    path = tmp_path / "history.jsonl"
    log = writers.JsonLines(path)
    for epoch in (1, 2, 3):
        log.write(epoch, _records(epoch, stopped=(1,) if epoch == 3 else ()))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["epoch"], r["member"]) for r in lines] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0)]
    # A run killed after its epoch-3 lines but before the epoch-3 checkpoint resumes at epoch 3:
    # the new writer drops those lines instead of duplicating them.
    resumed = writers.JsonLines(path, resume=True)
    resumed.write(3, _records(3))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["epoch"], r["member"]) for r in lines] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]


def _event_scalars(folder):
    """(tag, step, value) of every scalar in the TFRecord event files under `folder`."""
    from tensorboardX.proto import event_pb2

    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        raw = path.read_bytes()
        offset = 0
        while offset < len(raw):
            (length,) = struct.unpack("<Q", raw[offset : offset + 8])
            event = event_pb2.Event.FromString(raw[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4  # length, its CRC, the record, its CRC
            found += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
    return found


def test_tensorboard_writes_the_same_scalars_per_member(tmp_path):
    board = writers.TensorBoard(tmp_path / "tb", num_members=2)
    for epoch in (1, 2):
        board.write(epoch, _records(epoch))
    board.close()
    scalars = _event_scalars(tmp_path / "tb" / "member_001")
    assert sorted(scalars) == sorted(
        [("loss", 1, 0.5), ("val_loss", 1, pytest.approx(0.6)), ("loss", 2, 0.25), ("val_loss", 2, pytest.approx(0.3))]
    )
    single = writers.TensorBoard(tmp_path / "one", num_members=1)
    single.write(1, _records(1, members=1))
    single.close()
    assert ("loss", 1, 0.5) in _event_scalars(tmp_path / "one")


def test_a_torn_last_line_is_dropped_and_other_damage_is_named(tmp_path):
    """A kill or a full disk mid-append leaves a partial last line: a resume drops it with a warning
    naming the file; a damaged line before the end is named with its number, before any work."""
    path = tmp_path / "history.jsonl"
    log = writers.JsonLines(path)
    for epoch in (1, 2):
        log.write(epoch, _records(epoch))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"epoch": 3, "member": 0, "lo')
    with pytest.warns(files.TornLineWarning, match="history.jsonl: dropped a partial last line"):
        resumed = writers.JsonLines(path, resume=True)
    resumed.write(3, _records(3))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["epoch"], r["member"]) for r in lines] == [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1)]

    lines = whole.decode().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:10], *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match="history.jsonl line 2 is not valid JSON"):
        writers.JsonLines(path, resume=True)
