"""Process-level XLA settings, applied by the entry points before JAX's backend starts.

XLA aborts the whole process on an XLA_FLAGS entry its jaxlib does not know, so every flag here is
applied only if this jaxlib's library contains its name, and the CPU tuning flags only when the
CPU is the backend JAX will use (JAX_PLATFORMS=cpu, or no accelerator plugin installed).
"""

from __future__ import annotations

import datetime
import functools
import importlib.metadata
import importlib.util
import mmap
import os
import platform
import socket
import subprocess
from pathlib import Path

# Measured on a 2-core AVX-512 Xeon with jaxlib 0.10 (benchmarks/README.md): routing dots through
# XLA's default YNNPACK fusions is ~10% slower than its Eigen dots, 512-bit vectors speed up the
# elementwise fusions a further ~4%, and region-based copy insertion drops parameter copies in the
# scanned train step (~5%, identical results).
CPU_XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=",
    "--xla_cpu_prefer_vector_width=512",
    "--xla_cpu_copy_insertion_use_region_analysis=true",
)
# Bitwise-reproducible GPU runs (scatter-adds and reductions in a fixed order).
DETERMINISTIC_XLA_FLAGS = ("--xla_gpu_deterministic_ops=true",)
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")
_LIBRARY_BYTES = 20 * 2**20  # jaxlib's XLA library is hundreds of MB; its small wrappers are not it


def flag_name(flag: str) -> str:
    return flag.split("=")[0].lstrip("-")


def _xla_libraries() -> list[Path]:
    """The shared libraries of jaxlib and installed PJRT plugins that parse XLA_FLAGS themselves:
    those that hold the string "XLA_FLAGS" (jaxlib's MLIR library, say, does not)."""
    found = []
    for package in ("jaxlib", "jax_plugins"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for library in Path(folder).rglob("*.so"):
                if library.stat().st_size > _LIBRARY_BYTES and _present(library, [b"XLA_FLAGS"])[0]:
                    found.append(library)
    return found


def _present(library: Path, names: list[bytes]) -> list[bool]:
    """Whether each of `names` occurs in the file `library`."""
    with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as contents:
        return [contents.find(name) >= 0 for name in names]


def known_flags(flags: tuple[str, ...] | list[str], libraries: list[Path] | None = None) -> list[str]:
    """The flags whose names every XLA library of this installation holds (XLA registers each flag by
    its name, and aborts on an XLA_FLAGS entry it does not know).

    If no library is found, no flag counts as known: an unapplied flag costs speed, an unknown one
    aborts the process.
    """
    libraries = _xla_libraries() if libraries is None else libraries
    known = set(flags) if libraries else set()
    for library in libraries:
        present = _present(library, [flag_name(flag).encode() for flag in flags])
        known &= {flag for flag, here in zip(flags, present) if here}
    return [flag for flag in flags if flag in known]


def cpu_is_the_backend(environ: dict | None = None) -> bool:
    """Whether JAX will run on the CPU: JAX_PLATFORMS names cpu first, or none is named and no
    accelerator plugin (CUDA, ROCm, TPU) is installed."""
    environ = os.environ if environ is None else environ
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms[0] == "cpu"
    return not any(importlib.util.find_spec(name) is not None for name in ACCELERATOR_PLUGINS)


def configure(
    *, deterministic: bool = False, environ: dict | None = None, libraries: list[Path] | None = None
) -> dict[str, list[str]]:
    """Appends to XLA_FLAGS the CPU tuning flags (CPU backend only) and, with `deterministic`, XLA's
    deterministic-ops flag; a flag the user already set keeps the user's value, and a flag this
    jaxlib lacks is skipped. Returns {"applied": [...], "skipped": [...]}.

    Takes effect only before the first JAX computation in the process (XLA reads XLA_FLAGS once).
    """
    environ = os.environ if environ is None else environ
    wanted = (list(CPU_XLA_FLAGS) if cpu_is_the_backend(environ) else []) + (
        list(DETERMINISTIC_XLA_FLAGS) if deterministic else []
    )
    current = environ.get("XLA_FLAGS", "").split()
    names = {flag_name(flag) for flag in current}
    candidates = [flag for flag in wanted if flag_name(flag) not in names]
    applied = known_flags(candidates, libraries) if candidates else []
    environ["XLA_FLAGS"] = " ".join(current + applied)
    return {"applied": applied, "skipped": [flag for flag in candidates if flag not in applied]}


LIBRARIES = ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "scipy", "matplotlib", "tensorflow-datasets", "tqdm")


def source_revision() -> dict:
    """aejax's version, and its git commit (and whether the checkout had uncommitted changes) when it
    runs from a checkout; {"commit": None} otherwise."""
    root = Path(__file__).resolve().parents[1]
    revision = {"version": importlib.metadata.version("aejax"), "commit": None, "dirty": None}
    if not (root / ".git").exists():
        return revision
    try:
        run = functools.partial(subprocess.run, cwd=root, capture_output=True, text=True, timeout=10, check=True)
        revision["commit"] = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        revision["dirty"] = bool(run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # no git on this machine: the version alone
    return revision


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe(matmul_precision: str = "default", deterministic: bool = False) -> dict:
    """What a result was measured on, for metrics.json and run.json (starts JAX's backend): aejax's
    version and commit, every library's version, the date, host and devices, and the XLA settings."""
    import jax

    devices = jax.devices()
    return {
        "aejax": source_revision(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "jax_version": jax.__version__,
        "jaxlib_version": importlib.metadata.version("jaxlib"),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "matmul_precision": matmul_precision,
        "deterministic": deterministic,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
