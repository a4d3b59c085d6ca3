import os
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
    # The flags only apply if no module starts JAX's backend at import (e.g. a module-level jnp
    # constant). With an unknown flag in XLA_FLAGS, starting the backend aborts the process, and
    # the last module printed is the one that started it.
    modules = sorted(
        f"{package}.{path.stem}"
        for package in ("aejax", "experiments", "benchmarks")
        for path in (REPO_ROOT / package).glob("*.py")
        if path.stem != "__init__"
    )
    code = "import importlib\nfor name in %r:\n    print(name, flush=True)\n    importlib.import_module(name)\n" % modules
    env = dict(os.environ, XLA_FLAGS="--xla_flag_that_does_not_exist=1")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"importing {done.stdout.split()[-1:]} started the backend: {done.stderr[-500:]}"
    assert done.stdout.split() == modules


def test_the_import_check_can_fail():
    env = dict(os.environ, XLA_FLAGS="--xla_flag_that_does_not_exist=1")
    code = "import jax.numpy as jnp\njnp.zeros(1)"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True).returncode != 0
