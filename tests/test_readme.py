"""The README's notebook cell runs as printed (on the 900-image subset instead of the full data)."""

import re
from pathlib import Path

import matplotlib

README = Path(__file__).resolve().parents[1] / "README.md"


def _notebook_cell() -> str:
    text = README.read_text()
    match = re.search(r"<!-- notebook cell -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its notebook cell (marked <!-- notebook cell -->)"
    return match.group(1)


def test_the_notebook_cell_runs(subset_dir, monkeypatch, tmp_path):
    cell = _notebook_cell()
    assert len(cell.strip().splitlines()) <= 10  # the promise: a cell of at most 10 lines
    swapped = cell.replace('data.load_fashion_mnist("train")', f'data.load_fashion_mnist("train", {str(subset_dir)!r})')
    swapped = swapped.replace("fit.Config(", "fit.Config(num_validation=120, ")
    assert swapped.count(str(subset_dir)) == 1 and swapped.count("num_validation=120") >= 2
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(swapped, "README.md notebook cell", "exec"), namespace)  # noqa: S102 - the README's own code
    assert namespace["population"].params["encoder"]["mean"]["kernel"].shape[0] == 4
