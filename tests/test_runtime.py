import os
import pathlib
import subprocess
import sys

from aejax import runtime

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


CPU = {"JAX_PLATFORMS": "cpu"}


def test_cpu_flags_are_appended_on_the_cpu_backend():
    environ = {**CPU, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    report = runtime.configure(environ=environ)
    flags = environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=8"
    # Those this jaxlib knows: all three on jaxlib 0.10; jaxlib 0.4.35 lacks the YNNPACK flag.
    known = runtime.known_flags(runtime.CPU_XLA_FLAGS)
    assert "--xla_cpu_prefer_vector_width=512" in known
    assert flags[1:] == known == report["applied"] and report["skipped"] == [
        f for f in runtime.CPU_XLA_FLAGS if f not in known
    ]


def test_a_flag_the_user_set_wins_and_configure_is_idempotent():
    environ = {**CPU, "XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    runtime.configure(environ=environ)
    flags = environ["XLA_FLAGS"].split()
    assert "--xla_cpu_prefer_vector_width=256" in flags and "--xla_cpu_prefer_vector_width=512" not in flags
    runtime.configure(environ=environ)
    assert environ["XLA_FLAGS"].split() == flags


def test_cpu_flags_stay_off_when_another_backend_is_chosen():
    environ = {"JAX_PLATFORMS": "cuda"}
    assert runtime.configure(environ=environ) == {"applied": [], "skipped": []}
    assert environ["XLA_FLAGS"] == ""


def test_deterministic_adds_xlas_deterministic_ops_flag():
    environ = {"JAX_PLATFORMS": "cuda"}
    runtime.configure(deterministic=True, environ=environ)
    assert environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=true"


def test_a_flag_missing_from_the_library_is_skipped(tmp_path):
    library = tmp_path / "libfake_xla.so"
    library.write_bytes(b"\0xla_cpu_prefer_vector_width\0xla_cpu_copy_insertion_use_region_analysis\0")
    environ = dict(CPU)
    report = runtime.configure(environ=environ, libraries=[library])
    assert report["skipped"] == ["--xla_cpu_experimental_ynn_fusion_type="]
    assert "ynn" not in environ["XLA_FLAGS"] and "--xla_cpu_prefer_vector_width=512" in environ["XLA_FLAGS"]
    assert runtime.known_flags(runtime.CPU_XLA_FLAGS, libraries=[]) == []  # no library found: apply nothing


def test_an_unknown_flag_never_reaches_xla():
    # XLA aborts the process on an XLA_FLAGS entry it does not know (the check below shows it does):
    # a flag this jaxlib lacks must be skipped, and the process must run.
    unknown = "--xla_cpu_flag_that_no_jaxlib_has=1"
    code = (
        "from aejax import runtime\n"
        f"runtime.CPU_XLA_FLAGS += ({unknown!r},)\n"
        "report = runtime.configure()\n"
        "import jax.numpy as jnp\n"
        "print(float(jnp.ones(3).sum()), report['skipped'])\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.split()[0] == "3.0" and repr(unknown) in done.stdout
    aborted = subprocess.run(
        [sys.executable, "-c", "import jax.numpy as jnp; jnp.ones(1)"],
        env=dict(env, XLA_FLAGS=unknown),
        capture_output=True,
    )
    assert aborted.returncode != 0


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
    code = (
        "import importlib\nfor name in %r:\n    print(name, flush=True)\n    importlib.import_module(name)\n" % modules
    )
    env = dict(os.environ, XLA_FLAGS="--xla_flag_that_does_not_exist=1")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"importing {done.stdout.split()[-1:]} started the backend: {done.stderr[-500:]}"
    assert done.stdout.split() == modules
