import errno
import json
import os
import stat

import numpy as np
import pytest

from aejax.io import files


def test_write_is_all_or_nothing(tmp_path):
    path = files.write_json(tmp_path / "m.json", {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    with pytest.raises(TypeError):
        files.write_bytes(path, "not bytes")  # fails mid-write
    assert path.read_text() == '{\n  "a": 1\n}\n' and [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = files.write_json(tmp_path / "m.json", {"a": 1})

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left on device"):
        files.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["m.json"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        written = files.write_bytes(tmp_path / "a.bin", b"x")
        files.append_json_line(tmp_path / "log.jsonl", {"epoch": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "log.jsonl").stat().st_mode) == mode


def test_json_is_strict(tmp_path):
    for bad in (float("nan"), float("inf"), np.float32("nan")):
        with pytest.raises(files.NonFiniteJSONError, match=r"non-finite number as JSON: /test\[1\]/loss = (nan|inf)"):
            files.write_json(tmp_path / "m.json", {"test": [{"loss": 0.5}, {"loss": float(bad)}]})
    assert not (tmp_path / "m.json").exists()
    files.append_json_line(tmp_path / "h.jsonl", {"epoch": 1, "loss": 0.5})
    with pytest.raises(files.NonFiniteJSONError, match="/loss = nan"):
        files.append_json_line(tmp_path / "h.jsonl", {"epoch": 2, "loss": float("nan")})
    assert (tmp_path / "h.jsonl").read_text() == '{"epoch": 1, "loss": 0.5}\n'


def test_stale_temporaries_are_found_and_nothing_else(tmp_path):
    stale = tmp_path / ".params.msgpack.0123456789abcdef.tmp"
    stale.write_bytes(b"cut short")
    keep = [tmp_path / ".hidden", tmp_path / "notes.tmp", tmp_path / ".x.nothex0123456789.tmp"]
    for path in keep:
        path.write_text("kept")
    assert files.remove_temporaries(tmp_path) == [stale]
    assert all(path.exists() for path in keep)
