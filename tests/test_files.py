import pytest

from aejax import files


def test_write_is_all_or_nothing(tmp_path):
    path = files.write_json(tmp_path / "m.json", {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    with pytest.raises(TypeError):
        files.write_bytes(path, "not bytes")  # fails mid-write
    assert path.read_text() == '{\n  "a": 1\n}\n' and [p.name for p in tmp_path.iterdir()] == ["m.json"]
