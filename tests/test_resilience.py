"""Checkpoints, exact resume after SIGKILL, corrupt-checkpoint fallback, non-finite loss."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax.io import checkpoint
from aejax.models import mlp
from aejax.training import population, recipes
from aejax.training.train import TrainState
from experiments import vae_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]


def _flags(subset_dir, out, epochs):
    return [
        "--data-dir",
        str(subset_dir),
        "--num-validation",
        "120",
        "--batch-size",
        "32",
        "--epochs",
        str(epochs),
        "--keep-checkpoints",
        "2",
        "--out",
        str(out),
    ]


def _command(subset_dir, out, epochs, *extra):
    return [sys.executable, "-m", "experiments.vae_fashion_mnist", *_flags(subset_dir, out, epochs), *extra]


def test_sigkill_then_resume_is_bitwise_identical(subset_dir, tmp_path):
    epochs = 40
    reference = subprocess.run(
        _command(subset_dir, tmp_path / "reference", epochs), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    victim = subprocess.Popen(
        _command(subset_dir, out, epochs), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "epoch_0003.msgpack").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint appeared before the kill"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)  # no chance to clean up or finish the epoch
    assert victim.wait() == -signal.SIGKILL
    assert not (out / "params.msgpack").exists()
    names = [p.name for p in (out / "checkpoints").iterdir()]
    temporary = [name for name in names if name.startswith(".")]  # a write the kill cut short
    # keep=2, plus one if the kill fell between a checkpoint's rename and the pruning after it.
    assert len(names) - len(temporary) <= 3 and len(temporary) <= 1

    resumed = subprocess.run(
        _command(subset_dir, out, epochs, "--resume"), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "params.msgpack").read_bytes() == (tmp_path / "reference" / "params.msgpack").read_bytes()
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history == json.loads((tmp_path / "reference" / "metrics.json").read_text())["history"]
    assert len(checkpoint.list_checkpoints(out / "checkpoints")) == 2
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # partial write removed


def test_a_compiled_program_from_the_cache_gives_the_same_bits(subset_dir, tmp_path):
    # The same program on the same machine, compiled in-process or loaded from JAX's persistent
    # compilation cache (the suite shares one with its subprocesses on JAX >= 0.10, conftest.py).
    cache = {name: value for name, value in os.environ.items() if name.startswith("JAX_") and "CACHE" in name}
    plain = {name: value for name, value in os.environ.items() if name not in cache}
    digests = []
    for name, env in (("compiled", plain), ("cache_first", os.environ), ("cache_second", os.environ)):
        done = subprocess.run(
            _command(subset_dir, tmp_path / name, 2), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        digests.append((tmp_path / name / "params.msgpack").read_bytes())
    assert digests[0] == digests[1] == digests[2]


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(subset_dir, tmp_path, capsys):
    assert vae_fashion_mnist.main(_flags(subset_dir, tmp_path / "reference", 3)) == 0
    out = tmp_path / "run"
    assert vae_fashion_mnist.main(_flags(subset_dir, out, 2)) == 0
    latest = out / "checkpoints" / "epoch_0002.msgpack"
    latest.write_bytes(latest.read_bytes()[:-100])  # truncated, as by a full disk
    capsys.readouterr()
    assert vae_fashion_mnist.main(_flags(subset_dir, out, 3) + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "epoch_0002.msgpack is truncated or corrupt" in err and "fell back to the previous checkpoint" in err
    # Epoch 2 is recomputed from epoch 1's checkpoint: still the uninterrupted run, bit for bit.
    assert (out / "params.msgpack").read_bytes() == (tmp_path / "reference" / "params.msgpack").read_bytes()
    # The damaged file is kept aside for inspection, outside the epochs that pruning counts.
    assert (out / "checkpoints" / "epoch_0002.msgpack.corrupt").exists()
    assert [p.name for p in checkpoint.list_checkpoints(out / "checkpoints")] == [
        "epoch_0002.msgpack",
        "epoch_0003.msgpack",
    ]


def test_resume_refuses_different_run_settings(subset_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert vae_fashion_mnist.main(_flags(subset_dir, out, 1)) == 0
    with pytest.raises(SystemExit) as info:
        vae_fashion_mnist.main(_flags(subset_dir, out, 2) + ["--resume", "--seed", "7"])
    assert info.value.code == 2 and "different settings: seed 42 (now 7)" in capsys.readouterr().err


def _plant_huge_weight(path):
    # A finite but huge weight: the next forward pass overflows to inf and the loss becomes NaN.
    contents = flax.serialization.msgpack_restore(path.read_bytes()[:-32])  # the SHA-256 trails the payload
    layer = contents["tree"]["state"]["params"]["encoder"]["hidden_0"]
    layer["kernel"] = np.full_like(layer["kernel"], 1e38)
    checkpoint.save(path.parent, int(contents["epoch"]), contents["tree"], json.loads(contents["extra"]))


def test_nonfinite_loss_names_epoch_and_step_and_keeps_the_last_good_checkpoint(subset_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert vae_fashion_mnist.main(_flags(subset_dir, out, 2)) == 0
    (out / "metrics.json").unlink()
    (out / "params.msgpack").unlink()
    _plant_huge_weight(out / "checkpoints" / "epoch_0002.msgpack")
    capsys.readouterr()
    code = vae_fashion_mnist.main(_flags(subset_dir, out, 3) + ["--resume"])
    err = capsys.readouterr().err
    assert code == 1
    assert "non-finite loss at epoch 3, step 1 of 19" in err  # 600 examples / 32 = 19 steps
    assert "epoch_0002.msgpack" in err and "Lower --learning-rate" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001.msgpack", "epoch_0002.msgpack"]
    assert not (out / "metrics.json").exists() and not (out / "params.msgpack").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


def test_run_epoch_reports_the_first_nonfinite_step():
    images = np.full((64, 28, 28), 0.5, np.float32)
    images[37] = np.nan
    key = jax.random.key(3)
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), 64))
    expected_step = int(np.where(order == 37)[0][0]) // 8
    hyper = {"beta": jnp.ones(1), "learning_rate": jnp.full(1, 1e-3)}
    program = population.Program(batch_size=8)
    for data, step in ((images, expected_step), (np.full((64, 28, 28), 0.5, np.float32), -1)):
        states = population.init_states(population.member_keys([0])["init"])
        _, metrics = population.train_epoch(states, hyper, jnp.asarray(data), jnp.stack([key]), program)
        assert int(metrics["first_nonfinite_step"][0]) == step


def _state(model=mlp.MLP()):
    return TrainState.create(model.init(jax.random.key(0)), recipes.chapter_optimizer())


def test_checkpoints_roundtrip_and_reject_another_model(tmp_path):
    state = _state()
    for epoch in range(1, 5):
        checkpoint.save(tmp_path, epoch, state.replace(step=jnp.asarray(epoch)), {"epoch": epoch}, keep=3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [f"epoch_{e:04d}.msgpack" for e in (2, 3, 4)]
    restored, epoch, extra, path = checkpoint.restore_latest(tmp_path, state)
    assert epoch == 4 and extra == {"epoch": 4} and int(restored.step) == 4 and path.name == "epoch_0004.msgpack"
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), restored.params, state.params)
    with pytest.raises(ValueError, match="differ from this model"):
        checkpoint.load(tmp_path / "epoch_0004.msgpack", _state(mlp.MLP(latent_dim=4)))
    # Another model's checkpoint is an error, not a corrupt file to skip: nothing is set aside.
    with pytest.raises(ValueError, match="differ from this model"):
        checkpoint.restore_latest(tmp_path, _state(mlp.MLP(latent_dim=4)))
    assert len(checkpoint.list_checkpoints(tmp_path)) == 3
    assert checkpoint.restore_latest(tmp_path / "none", state) is None


def test_save_removes_a_partial_write_left_by_a_killed_run(tmp_path):
    partial = tmp_path / ".epoch_0002.msgpack.0123456789abcdef.tmp"
    partial.write_bytes(b"cut short")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("kept")
    checkpoint.save(tmp_path, 2, _state(), {}, keep=3)
    assert not partial.exists() and unrelated.exists()
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["epoch_0002.msgpack"]
