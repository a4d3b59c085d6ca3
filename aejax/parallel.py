"""Data parallelism over a 1-D device mesh (axis "data"), on one host or many.

The same train step serves 1 or N devices: parameters and optimiser state are replicated, the
training set is sharded by rows across the mesh, and inside the step each batch is constrained to
be split along "data"; XLA's SPMD partitioner inserts the gradient all-reduce. Random draws use
partitionable threefry (JAX's default), so a batch's noise does not depend on the device count.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aejax.train import TrainStep

AXIS = "data"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process sits among the training processes (all None/1/0: a single process)."""

    coordinator_address: str | None = None
    num_processes: int = 1
    process_id: int = 0

    def __post_init__(self):
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"process_id must be in 0..{self.num_processes - 1}, got {self.process_id}")
        if self.num_processes > 1 and not self.coordinator_address:
            raise ValueError(f"coordinator_address (host:port) is required for {self.num_processes} processes")

    @classmethod
    def from_environment(cls, environ: dict | None = None) -> "Cluster":
        """Reads AEJAX_COORDINATOR_ADDRESS, AEJAX_NUM_PROCESSES and AEJAX_PROCESS_ID."""
        environ = os.environ if environ is None else environ
        try:
            return cls(environ.get("AEJAX_COORDINATOR_ADDRESS") or None,
                       int(environ.get("AEJAX_NUM_PROCESSES", 1)), int(environ.get("AEJAX_PROCESS_ID", 0)))
        except ValueError as err:
            raise ValueError(f"AEJAX_NUM_PROCESSES / AEJAX_PROCESS_ID must be integers: {err}") from err


def initialize(cluster: Cluster) -> None:
    """Joins the cluster with `jax.distributed.initialize` (CPU collectives: gloo); no-op for 1 process.

    Call before the first JAX computation.
    """
    if cluster.num_processes == 1:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives; ignored by GPU/TPU
    jax.distributed.initialize(cluster.coordinator_address, cluster.num_processes, cluster.process_id)


def data_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named "data" over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises ValueError unless the global batch splits evenly over the mesh."""
    if batch_size % mesh.size:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the {mesh.size} devices of the mesh: choose a multiple "
            f"of {mesh.size} (e.g. {max(mesh.size, batch_size // mesh.size * mesh.size)})"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def row_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a pytree of host values, identical on every process, on every device of `mesh`."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda _: np.asarray(x)), tree)


def process_rows(num_rows: int, mesh: Mesh) -> slice:
    """The contiguous rows of a dataset (padded to a multiple of the mesh size) this process holds."""
    per_device = -(-num_rows // mesh.size)
    local = [i for i, device in enumerate(mesh.devices.flat) if device.process_index == jax.process_index()]
    return slice(local[0] * per_device, (local[-1] + 1) * per_device)


def shard_rows(local_rows: np.ndarray, num_rows: int, mesh: Mesh) -> jax.Array:
    """The global (padded N, ...) array whose rows `process_rows(N, mesh)` this process passes in.

    Rows past N are zero padding so every device holds the same count; indices < N never reach them.
    """
    per_device = -(-num_rows // mesh.size)
    rows = process_rows(num_rows, mesh)
    want = rows.stop - rows.start
    local_rows = np.asarray(local_rows)
    if len(local_rows) < want:
        local_rows = np.concatenate([local_rows, np.zeros((want - len(local_rows),) + local_rows.shape[1:], local_rows.dtype)])
    global_shape = (per_device * mesh.size,) + local_rows.shape[1:]
    return jax.make_array_from_process_local_data(row_sharded(mesh), local_rows, global_shape)


def data_parallel(train_step: TrainStep, mesh: Mesh) -> TrainStep:
    """`train_step` with its batch and weights split along the mesh's "data" axis."""
    batch_sharding = row_sharded(mesh)

    @functools.wraps(train_step)
    def step(state, batch, key, weights):
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        weights = jax.lax.with_sharding_constraint(weights, batch_sharding)
        return train_step(state, batch, key, weights)

    return step


def to_host(tree: Any) -> Any:
    """NumPy copies of a pytree of replicated (or single-device) arrays, on any process."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)
