"""Shared fixtures: paths to the real Fashion-MNIST subset in ../shared.

The tests run under the XLA settings every aejax entry point applies (`runtime.configure`), set
here before JAX's backend starts: results that are bitwise under them (a population member equals
its single run) are tested as such.
"""

from pathlib import Path

import pytest

from aejax import runtime

runtime.configure()

REPO = Path(__file__).resolve().parents[1]
SUBSET_DIR = REPO.parent / "shared" / "data" / "fashion-mnist-900"


@pytest.fixture(scope="session")
def subset_dir() -> Path:
    if not (SUBSET_DIR / "train-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(f"the 900-image Fashion-MNIST subset is expected at {SUBSET_DIR}")
    return SUBSET_DIR
