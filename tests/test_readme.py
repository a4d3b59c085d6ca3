"""The README's notebook cell runs as printed (on the 900-image subset instead of the full data)."""

import re
from pathlib import Path

import matplotlib
import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _notebook_cell(marker: str = "notebook cell") -> str:
    text = README.read_text()
    match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README.md lost its notebook cell (marked <!-- {marker} -->)"
    return match.group(1)


def test_the_notebook_cells_run(subset_dir, monkeypatch, tmp_path):
    cell = _notebook_cell()
    assert len(cell.strip().splitlines()) <= 10  # the promise: a cell of at most 10 lines
    swapped = cell.replace('data.load_fashion_mnist("train")', f'data.load_fashion_mnist("train", {str(subset_dir)!r})')
    swapped = swapped.replace("fit.Config()", "fit.Config().replace(num_validation=120)")
    assert swapped.count(str(subset_dir)) == 1 and swapped.count("num_validation=120") >= 2
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(swapped, "README.md notebook cell", "exec"), namespace)  # noqa: S102 - the README's own code
    assert namespace["population"].params["encoder"]["mean"]["kernel"].shape[0] == 4
    # The second cell: a model defined in the notebook, trained as a population of 3.
    mine = _notebook_cell("notebook cell: your model").replace(
        "fit.Config()", "fit.Config().replace(num_validation=120)"
    )
    exec(compile(mine, "README.md notebook cell: your model", "exec"), namespace)  # noqa: S102
    result = namespace["mine"]
    assert result.params["encoder"]["Dense_1"]["kernel"].shape == (3, 256, 16)
    losses = result.history["val_loss"]
    # It learns: every member's validation loss falls over the 5 epochs (from ~0.69, a blank model's).
    assert np.all(np.isfinite(losses)) and np.all(losses[:, -1] < losses[:, 0] - 0.05)
