"""Run in a subprocess with 8 CPU devices: 1 vs 8 devices for data parallelism and for populations."""

import json
import os
import sys

# Set before JAX starts its backend; this flag works on every jaxlib the requirements allow.
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aejax import parallel  # noqa: E402
from aejax.training import fit, population  # noqa: E402
from aejax.errors import ConfigError  # noqa: E402


def train(images, mesh, epochs, batch_size, seeds):
    keys = population.member_keys(seeds)
    states = population.init_states(keys["init"])
    hyper = {"beta": np.ones(len(seeds), np.float32), "learning_rate": np.full(len(seeds), 1e-3, np.float32)}
    program = population.Program(batch_size=batch_size, num_examples=len(images), mesh=mesh)
    if mesh is None:
        data = jnp.asarray(images)
    else:
        states = parallel.put(parallel.to_host(states), parallel.sharding(mesh, parallel.MEMBERS))
        data = parallel.shard_rows(images, mesh)
    losses = []
    for epoch in range(epochs):
        epoch_keys = jax.vmap(fit.epoch_key, (0, None))(keys["train"], epoch)
        states, metrics = population.train_epoch(states, hyper, data, epoch_keys, program)
        losses.append(parallel.to_host(metrics["loss"]))
    return parallel.to_host(states.params), np.asarray(losses), data.sharding, states


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])


def compare(params_1, params_8, seeds):
    """max |difference| and the L2 difference as a share of the distance training moved (tests/tolerances.py)."""
    initial = flat(population.init_states(population.member_keys(seeds)["init"]).params)
    one, eight = flat(params_1), flat(params_8)
    return {
        "params_max_abs": float(np.max(np.abs(one - eight))),
        "params_relative": float(np.linalg.norm(eight - one) / np.linalg.norm(one - initial)),
    }


images = np.random.default_rng(0).random((300, 28, 28), dtype=np.float32)  # 300 rows: not a multiple of 8
report = {"devices": jax.device_count()}
# Data parallelism, one model: one full-batch step on 296 rows; a shuffled epoch of 10 steps of batch 32.
for name, rows, epochs, batch_size in [("one_step", 296, 1, 296), ("one_epoch", 300, 1, 32)]:
    mesh = parallel.training_mesh(1)
    params_1, losses_1, _, _ = train(images[:rows], None, epochs, batch_size, [0])
    params_8, losses_8, sharding, _ = train(images[:rows], mesh, epochs, batch_size, [0])
    report[name] = {
        **compare(params_1, params_8, [0]),
        "loss_relative": float(np.max(np.abs(losses_8 / losses_1 - 1))),
        "data_devices": len(sharding.device_set),
        "mesh": dict(mesh.shape),
    }
# A population of 8 spread over the members axis (each device trains one member), and of 4 (2 x 2).
for name, size in [("population_8", 8), ("population_4", 4)]:
    mesh = parallel.training_mesh(size)
    params_1, losses_1, _, _ = train(images, None, 1, 32, list(range(size)))
    params_8, losses_8, _, states = train(images, mesh, 1, 32, list(range(size)))
    kernel = states.params["decoder"]["logits"]["kernel"]
    report[name] = {
        **compare(params_1, params_8, list(range(size))),
        "loss_relative": float(np.max(np.abs(losses_8 / losses_1 - 1))),
        "mesh": dict(mesh.shape),
        "member_shards": len({(s.index[0].start, s.index[0].stop) for s in kernel.addressable_shards}),
    }
try:
    parallel.check_batch_size(30, parallel.training_mesh(1))
except ConfigError as err:  # as the CLI shows it
    report["indivisible"] = f"--{err.field.replace('_', '-')} {err.message}"
json.dump(report, sys.stdout)
