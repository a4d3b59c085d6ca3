"""Run in a subprocess with 8 CPU devices: 1-device vs 8-device training, and the batch check."""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from aejax import parallel, vae  # noqa: E402
from aejax.train import TrainState  # noqa: E402


def train(images, mesh, epochs, batch_size):
    state = TrainState.create(apply_fn=None, params=vae.init(jax.random.key(0)), tx=vae.chapter_optimizer())
    if mesh is None:
        data = jnp.asarray(images)
    else:
        state = parallel.replicate(state, mesh)
        data = parallel.shard_rows(images[parallel.process_rows(len(images), mesh)], len(images), mesh)
    losses = []
    for epoch in range(epochs):
        state, metrics = vae.train_epoch(state, data, jax.random.key(epoch), batch_size, mesh=mesh,
                                         num_examples=len(images))
        losses.append(float(parallel.to_host(metrics["loss"])))
    return parallel.to_host(state.params), losses, data.sharding


def max_abs_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


images = np.random.default_rng(0).random((300, 28, 28), dtype=np.float32)  # 300 rows: not a multiple of 8
mesh = parallel.data_mesh()
report = {"devices": jax.device_count()}
# One full-batch step on 296 rows; then two shuffled epochs of batch 32 (10 steps each, last one padded).
for name, rows, epochs, batch_size in [("one_step", 296, 1, 296), ("two_epochs", 300, 2, 32)]:
    params_1, losses_1, _ = train(images[:rows], None, epochs, batch_size)
    params_8, losses_8, sharding = train(images[:rows], mesh, epochs, batch_size)
    report[name] = {"params": max_abs_difference(params_1, params_8),
                    "loss": max(abs(a - b) for a, b in zip(losses_1, losses_8)),
                    "data_devices": len(sharding.device_set)}
try:
    parallel.check_batch_size(30, mesh)
except ValueError as err:
    report["indivisible"] = str(err)
json.dump(report, sys.stdout)
