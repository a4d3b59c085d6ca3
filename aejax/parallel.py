"""Devices and hosts: a 2-D mesh ("members" x "data") for populations of models, and cluster set-up.

A population's members are spread over the "members" axis (each device trains whole members);
the "data" axis splits every batch of every member (data parallelism; XLA's SPMD partitioner
inserts the gradient all-reduce). One device: no mesh at all. Random draws use partitionable
threefry (JAX's default), so a batch's noise does not depend on the device count.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from aejax.errors import ClusterSettingsError, ConfigError
from aejax.training.train import TrainStep

MEMBERS, DATA = "members", "data"
ENVIRONMENT = {
    "coordinator_address": "AEJAX_COORDINATOR_ADDRESS",
    "num_processes": "AEJAX_NUM_PROCESSES",
    "process_id": "AEJAX_PROCESS_ID",
}
_ADDRESS = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d{1,5})$")


class ClusterError(RuntimeError):
    """Joining the cluster failed or timed out."""


def check_address(address: str) -> str:
    """Returns `address` if it is HOST:PORT (or [IPv6]:PORT) with a port in 1..65535."""
    match = _ADDRESS.match(address)
    if not match or not 1 <= int(match.group("port")) <= 65535:
        raise ClusterSettingsError(
            f"--coordinator-address must be HOST:PORT with a port in 1..65535 (e.g. 10.0.0.1:1234 or "
            f"[::1]:1234), got {address!r}"
        )
    return address


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process sits among the training processes (None/1/0: a single process)."""

    coordinator_address: str | None = None
    num_processes: int = 1
    process_id: int = 0
    timeout_seconds: int = 300

    def __post_init__(self):
        if isinstance(self.num_processes, bool) or not isinstance(self.num_processes, int) or self.num_processes < 1:
            raise ClusterSettingsError(f"--num-processes must be an integer >= 1, got {self.num_processes!r}")
        if (
            isinstance(self.process_id, bool)
            or not isinstance(self.process_id, int)
            or not 0 <= self.process_id < self.num_processes
        ):
            raise ClusterSettingsError(f"--process-id must be in 0..{self.num_processes - 1}, got {self.process_id!r}")
        if not isinstance(self.timeout_seconds, int) or self.timeout_seconds < 1:
            raise ClusterSettingsError(
                f"--cluster-timeout must be a positive number of seconds, got {self.timeout_seconds!r}"
            )
        if self.num_processes > 1 and not self.coordinator_address:
            raise ClusterSettingsError(
                f"--coordinator-address HOST:PORT is required for --num-processes {self.num_processes}"
            )
        if self.coordinator_address is not None:
            check_address(self.coordinator_address)
            if self.num_processes == 1:
                raise ClusterSettingsError(
                    f"--coordinator-address {self.coordinator_address} was given but --num-processes is 1: "
                    "pass --num-processes N (and --process-id) on every host, or drop the address"
                )

    @classmethod
    def resolve(cls, flags: dict[str, Any], environ: dict | None = None, timeout_seconds: int = 300) -> "Cluster":
        """Flags win; a flag left as None falls back to its AEJAX_* variable, then to the default.

        A variable is read (and must be valid) only when its flag was not given.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, variable in ENVIRONMENT.items():
            if flags.get(name) is not None:
                values[name] = flags[name]
            elif environ.get(variable):
                raw = environ[variable]
                if name == "coordinator_address":
                    values[name] = raw
                else:
                    try:
                        values[name] = int(raw)
                    except ValueError:
                        raise ClusterSettingsError(
                            f"{variable} must be an integer, got {raw!r} (or pass --{name.replace('_', '-')})"
                        ) from None
        return cls(**values, timeout_seconds=timeout_seconds)


def _split_address(address: str) -> tuple[str, int]:
    match = _ADDRESS.match(address)
    return match.group("ipv6") or match.group("host"), int(match.group("port"))


def rendezvous(cluster: Cluster) -> None:
    """Checks, before JAX's own set-up (which aborts the process on a timeout), that all processes
    are there: process 0 listens on the coordinator's port until processes 1 … N-1 have each said
    hello once; the others connect to it. Raises ClusterError naming what is wrong, after at most
    `cluster.timeout_seconds`: no coordinator, a port in use, a duplicate or missing process id, or
    a different --num-processes. The port is free again when it returns.
    """
    host, port = _split_address(cluster.coordinator_address)
    deadline = time.monotonic() + cluster.timeout_seconds
    hello = f"aejax {cluster.num_processes} {cluster.process_id}\n".encode()
    if cluster.process_id == 0:
        _serve_rendezvous(host, port, cluster, deadline)
        return
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())) as link:
                link.sendall(hello)
                link.settimeout(max(0.1, deadline - time.monotonic()))
                reply = link.makefile("rb").readline().decode().strip()
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"no coordinator answered at {cluster.coordinator_address} within {cluster.timeout_seconds} s: "
                    "start process 0 (--process-id 0) on that host, and check the address, the port and any firewall"
                ) from None
            time.sleep(0.2)
    if reply != "ok":
        raise ClusterError(
            f"the coordinator at {cluster.coordinator_address} refused process {cluster.process_id}: "
            f"{reply or 'it gave up waiting for the other processes'}"
        )


def _serve_rendezvous(host: str, port: int, cluster: Cluster, deadline: float) -> None:
    num_processes = cluster.num_processes
    try:
        server = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        raise ClusterError(
            f"process 0 cannot listen on {host}:{port} ({err.strerror or err}): is another process 0 "
            "running, or the port taken? Pick another --coordinator-address port"
        ) from None
    joined: dict[int, socket.socket] = {}
    try:
        while len(joined) < num_processes - 1:
            server.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                link, _ = server.accept()
            except socket.timeout:
                missing = sorted(set(range(1, num_processes)) - set(joined))
                raise ClusterError(
                    f"process 0 waited {cluster.timeout_seconds} s (--cluster-timeout) for processes "
                    f"{missing} of 1..{num_processes - 1}, which never joined: start them with distinct "
                    "--process-id values and the same --coordinator-address"
                ) from None
            link.settimeout(5)
            try:
                words = link.makefile("rb").readline().decode().split()
            except OSError:
                link.close()
                continue
            if len(words) != 3 or words[0] != "aejax" or words[1] != str(num_processes):
                link.sendall(
                    f"it expects --num-processes {num_processes}, got {' '.join(words[1:2]) or '?'}\n".encode()
                )
                link.close()
            elif int(words[2]) in joined:
                link.sendall(f"another process already joined as --process-id {words[2]}\n".encode())
                link.close()
            else:
                joined[int(words[2])] = link
        for link in joined.values():
            link.sendall(b"ok\n")
    finally:
        for link in joined.values():
            link.close()
        server.close()


def initialize(cluster: Cluster) -> None:
    """Joins the cluster: `rendezvous`, then `jax.distributed.initialize` (CPU collectives: gloo);
    no-op for 1 process. Call before the first JAX computation.

    Raises ClusterError naming the likely causes when joining fails or times out.
    """
    if cluster.num_processes == 1:
        return
    rendezvous(cluster)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives; ignored by GPU/TPU
    kwargs = {}
    parameters = inspect.signature(jax.distributed.initialize).parameters
    if "initialization_timeout" in parameters:
        kwargs["initialization_timeout"] = cluster.timeout_seconds
    try:
        jax.distributed.initialize(cluster.coordinator_address, cluster.num_processes, cluster.process_id, **kwargs)
    except Exception as err:  # noqa: BLE001 - jaxlib raises its own runtime error types; re-raised with context
        raise ClusterError(
            f"process {cluster.process_id} of {cluster.num_processes} could not join the cluster at "
            f"{cluster.coordinator_address} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err


def training_mesh(num_members: int, devices: list | None = None) -> Mesh | None:
    """A ("members", "data") mesh over `devices` (default: all devices of all processes), or None for one.

    gcd(num_members, devices) devices take whole members; the rest split each batch.
    """
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 1:
        return None
    members = math.gcd(num_members, len(devices))
    return Mesh(np.asarray(devices).reshape(members, len(devices) // members), (MEMBERS, DATA))


def check_batch_size(batch_size: int, mesh: Mesh | None) -> None:
    """Raises ValueError unless the batch splits evenly over the mesh's "data" axis."""
    if mesh is None:
        return
    ways = mesh.shape[DATA]
    if batch_size % ways:
        raise ConfigError(
            "batch_size",
            f"{batch_size} is not divisible by the {ways} devices that split each batch: choose a "
            f"multiple of {ways} (e.g. {max(ways, batch_size // ways * ways)})",
        )


def sharding(mesh: Mesh, *axes: str | None) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(*axes))


def put(tree: Any, target: NamedSharding) -> Any:
    """Places a pytree of host values, identical on every process, as global arrays with `target`."""

    def place(leaf):
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])

    return jax.tree.map(place, tree)


def shard_rows(rows: np.ndarray, mesh: Mesh) -> jax.Array:
    """A dataset (N, ...) split by rows along "data" (zero-padded to a multiple of its size).

    Every process passes the same full array and keeps the rows its devices hold. Rows past N are
    padding; callers slice back to N inside the compiled program.
    """
    rows = np.asarray(rows)
    padded = math.ceil(len(rows) / mesh.shape[DATA]) * mesh.shape[DATA]
    if padded > len(rows):
        rows = np.concatenate([rows, np.zeros((padded - len(rows),) + rows.shape[1:], rows.dtype)])
    return put(rows, sharding(mesh, DATA))


def data_parallel(train_step: TrainStep, mesh: Mesh) -> TrainStep:
    """`train_step` with its batch and weights split along the mesh's "data" axis."""
    batch_sharding = sharding(mesh, DATA)

    @functools.wraps(train_step)
    def step(state, batch, key, weights):
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        weights = jax.lax.with_sharding_constraint(weights, batch_sharding)
        return train_step(state, batch, key, weights)

    return step


def to_host(tree: Any) -> Any:
    """NumPy copies of a pytree of (possibly sharded, possibly multi-process) arrays, on any process."""

    def fetch(x):
        if not isinstance(x, jax.Array):
            return x
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(fetch, tree)


def available_memory(device=None) -> int | None:
    """Bytes a new program may still use on `device` (default: the first), or None when unknown.

    An accelerator reports its own limit and use; the CPU's is the host's MemAvailable, capped by
    the process's cgroup limit (containers, Slurm jobs) where there is one.
    """
    device = jax.devices()[0] if device is None else device
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None
