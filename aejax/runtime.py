"""Process-level XLA settings, applied explicitly by entry points before JAX's backend starts."""

from __future__ import annotations

import os

# Measured on a 2-core AVX-512 Xeon with jaxlib 0.10 (benchmarks/throughput.py, VAE batch 128):
# routing dots through XLA's default YNNPACK fusions is ~10% slower than its Eigen dots, and
# 512-bit vectors speed up the elementwise fusions a further ~4%, and region-based copy
# insertion drops parameter copies in the scanned train step (~5%, identical results).
# Results agree to float round-off (summation order only). The flags are ignored by non-CPU backends.
CPU_XLA_FLAGS = (
    "--xla_cpu_experimental_ynn_fusion_type=",
    "--xla_cpu_prefer_vector_width=512",
    "--xla_cpu_copy_insertion_use_region_analysis=true",
)


def use_fast_cpu_flags(environ: dict | None = None) -> str:
    """Appends `CPU_XLA_FLAGS` to XLA_FLAGS, keeping any flag of the same name the user set.

    Takes effect only if called before the first JAX computation in the process (XLA reads
    XLA_FLAGS once, when the backend starts). Returns the resulting XLA_FLAGS.
    """
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "").split()
    names = {flag.split("=")[0] for flag in current}
    added = [flag for flag in CPU_XLA_FLAGS if flag.split("=")[0] not in names]
    environ["XLA_FLAGS"] = " ".join(current + added)
    return environ["XLA_FLAGS"]
