import pathlib
import subprocess
import sys

from aejax import runtime

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_fast_cpu_flags_are_appended():
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    flags = runtime.use_fast_cpu_flags(environ).split()
    assert flags[0] == "--xla_force_host_platform_device_count=8"
    assert set(runtime.CPU_XLA_FLAGS) <= set(flags) and environ["XLA_FLAGS"] == " ".join(flags)


def test_a_flag_the_user_set_wins():
    environ = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    flags = runtime.use_fast_cpu_flags(environ).split()
    assert "--xla_cpu_prefer_vector_width=256" in flags and "--xla_cpu_prefer_vector_width=512" not in flags
    assert runtime.use_fast_cpu_flags(environ).split() == flags  # idempotent


def test_importing_any_module_leaves_the_backend_unstarted():
    # The flags only apply if no module starts JAX's backend at import (e.g. a module-level
    # jnp constant), before the entry point calls use_fast_cpu_flags.
    modules = sorted(
        f"{package}.{path.stem}"
        for package in ("aejax", "experiments", "benchmarks")
        for path in (REPO_ROOT / package).glob("*.py")
        if path.stem != "__init__"
    )
    code = "import importlib, sys\nfrom jax._src import xla_bridge\n" + "".join(
        f"importlib.import_module({name!r})\nassert not xla_bridge._backends, {name!r}\n" for name in modules
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
