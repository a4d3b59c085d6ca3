"""Shared fixtures: paths to the real Fashion-MNIST subset in ../shared.

The tests run under the XLA settings every aejax entry point applies (`runtime.configure`), with
256-bit vectors and without LLVM's optimisations (below), set here before JAX's backend starts:
results that are bitwise under them (a population member equals its single run) are tested as such.

The session shares one persistent compilation cache with the scripts it starts in subprocesses,
which compile the same programs again (a cached program is the same executable: same results).
Only on JAX >= 0.10, the newest line the suite runs on: under the floor (jax 0.4.35,
requirements-floor.txt) a run resumed from a checkpoint in a new process that loaded its programs
from the cache gave NaN test metrics (tests/test_resilience.py: 3 of 3 runs of the test alone,
2 of 3 floor suites; without the cache 9 of 9 passed), so the floor suite compiles everything itself.
"""

import atexit
import importlib.metadata
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from aejax import runtime

# Compiling is most of the suite's time, so the suite compiles for compile time (children inherit
# these flags; `runtime.configure` keeps a flag that is set already; XLA_FLAGS that set one win):
# - without LLVM's optimisations (XLA's default is level 3): an end-to-end test of a conv population
#   spent 7.5 s compiling against 21.3 s, and the suite took 4 min 49 s against 8 min 26 s
#   (tests/test_sources.py's colour run; same idle 2-core machine, 2026-12-06);
# - with 256-bit vectors, as an AVX2 machine (most users' CPUs): aejax's CPU flags prefer 512-bit
#   ones on AVX-512 machines, ~1.6x the compilation time (an IWAE program: 2.4 s against 1.4 s).
# The suite's properties hold for any code generation: bitwise only within one program and
# set-up, tolerances from float32 rounding across programs. The code users run (level 3, their
# vector width) is what `make test-isa` and `make test-emulated-cpu` test for reproducibility.
for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_prefer_vector_width=256"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), _flag]).strip()
runtime.configure()
_CACHE_SETTINGS = {}
if tuple(int(part) for part in importlib.metadata.version("jax").split(".")[:2]) >= (0, 10):
    _CACHE = tempfile.mkdtemp(prefix="aejax-test-jax-cache-")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    _CACHE_SETTINGS = {
        "jax_compilation_cache_dir": _CACHE,
        "jax_persistent_cache_min_compile_time_secs": 0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    os.environ.update({name.upper(): str(value) for name, value in _CACHE_SETTINGS.items()})  # for subprocesses

import jax  # noqa: E402  (after the flags; importing JAX does not start its backend)

for name, value in _CACHE_SETTINGS.items():
    jax.config.update(name, value)

REPO = Path(__file__).resolve().parents[1]
# The Python that tests start in subprocesses: this one, under the same CPU emulator as the suite
# when AEJAX_TEST_EMULATOR is set (`make test-emulated-cpu`: qemu-x86_64 -cpu EPYC-Rome), so that
# the children run on the emulated CPU too (qemu-user does not follow exec).
PYTHON = [*shlex.split(os.environ.get("AEJAX_TEST_EMULATOR", "")), sys.executable]
SUBSET_DIR = REPO.parent / "shared" / "data" / "fashion-mnist-900"


def run_main(main, argv, capsys):
    """(exit code, stderr) of a script's main, run in this process."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="session")
def subset_dir() -> Path:
    if not (SUBSET_DIR / "train-images-idx3-ubyte.gz").is_file():
        raise FileNotFoundError(f"the 900-image Fashion-MNIST subset is expected at {SUBSET_DIR}")
    return SUBSET_DIR
