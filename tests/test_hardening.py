"""Hardening, round 2, through the scripts as a user meets them: for each class of failure, the exit
code, one message naming the flag, nothing written, and nothing of another run touched.

The classes (README, "What bad input gets") are numbered as in the issue; library-level checks of
the same classes live beside their modules (test_vae, test_files, test_runs, test_parallel).
"""

import errno
import gzip
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import flax.serialization
import numpy as np
import pytest

from aejax.io import checkpoint, params_file, runs
from aejax.models import linear_ae, mlp, registry
from experiments import evaluate_vae, linear_ae_pca, vae_fashion_mnist
from tests.conftest import run_main

ROOT = Path(__file__).resolve().parents[1]


def _train_flags(subset_dir, out, *extra):
    return [
        "--data-dir",
        str(subset_dir),
        "--num-validation",
        "120",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(subset_dir, tmp_path_factory):
    """A finished one-epoch training run (module-scoped: several tests read it, none may change it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert vae_fashion_mnist.main(_train_flags(subset_dir, out)) == 0
    return out


def _snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != runs.LOCK
    }


# ----- class 1: inputs validated by structure, not only by keys -----


def _params_file(tmp_path, tree, name="params.msgpack"):
    """A params file of one chapter model holding `tree` (as aejax writes it: member axis, manifest)."""
    import jax

    manifest = {
        "kind": "vae_fashion_mnist",
        "model": {**registry.to_dict(mlp.MLP()), "likelihood": "bernoulli"},
        "data": {"dataset": "fashion_mnist"},
        "members": [{"seed": 0, "beta": 1.0, "learning_rate": 1e-3}],
    }
    return params_file.write(tmp_path / name, jax.tree.map(lambda x: np.asarray(x)[None], tree), manifest)


def test_class_1_params_are_checked_as_whole_trees(tmp_path, capsys, subset_dir):
    import jax

    linear = linear_ae.init(jax.random.key(0), 3, 2)
    chapter = jax.tree.map(np.array, mlp.MLP().init(jax.random.key(0)))
    mismatched = jax.tree.map(np.array, chapter)
    mismatched["decoder"]["hidden_0"]["kernel"] = np.zeros((12, 100), np.float32)
    broken = jax.tree.map(np.array, chapter)
    broken["encoder"]["hidden_1"]["kernel"] = np.zeros((150, 7), np.float32)
    cases = [
        (jax.tree.map(np.asarray, linear), "encoder/kernel is unexpected"),
        (mismatched, r"decoder/hidden_0/kernel has shape (12, 100), expected (10, 100)"),
        (broken, "encoder/hidden_1/kernel has shape (150, 7), expected (150, 100)"),
    ]
    for tree, message in cases:
        out = tmp_path / "eval"
        code, err = run_main(
            evaluate_vae.main,
            ["--params", str(_params_file(tmp_path, tree)), "--data-dir", str(subset_dir), "--out", str(out)],
            capsys,
        )
        assert code == 2 and message in err and "Traceback" not in err
        assert not out.exists()
    # A bare tree (no manifest, so no model, likelihood or data set): refused, saying what it lacks.
    bare = tmp_path / "bare.msgpack"
    bare.write_bytes(flax.serialization.msgpack_serialize(chapter))
    code, err = run_main(evaluate_vae.main, ["--params", str(bare), "--out", str(tmp_path / "eval")], capsys)
    assert code == 2 and "is not an aejax.params/2 file (no manifest" in err


# ----- class 2: never a non-finite or empty result reported as if it were one -----


def test_class_2_nan_params_empty_splits_and_negative_sizes_are_refused(tmp_path, capsys, subset_dir):
    import jax

    tree = jax.tree.map(np.array, mlp.MLP().init(jax.random.key(0)))
    tree["decoder"]["logits"]["bias"][5] = np.nan
    out = tmp_path / "eval"
    code, err = run_main(
        evaluate_vae.main,
        ["--params", str(_params_file(tmp_path, tree)), "--data-dir", str(subset_dir), "--out", str(out)],
        capsys,
    )
    assert code == 2 and "decoder/logits/bias holds 1 NaN/inf value" in err and not out.exists()

    empty = tmp_path / "empty-data"
    shutil.copytree(subset_dir, empty)
    for name, shape in (("t10k-images-idx3-ubyte.gz", (0, 28, 28)), ("t10k-labels-idx1-ubyte.gz", (0,))):
        with gzip.open(empty / name, "wb") as f:
            f.write(b"\x00\x00\x08" + bytes([len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape))
    chapter = _params_file(tmp_path, mlp.MLP().init(jax.random.key(0)), "chapter.msgpack")
    code, err = run_main(
        evaluate_vae.main, ["--params", str(chapter), "--data-dir", str(empty), "--out", str(out)], capsys
    )
    assert code == 2 and "fashion_mnist: holds no test images" in err and not out.exists()
    code, err = run_main(evaluate_vae.main, ["--params", str(chapter), "--batch-size", "-5", "--out", str(out)], capsys)
    assert code == 2 and "--batch-size must be a positive integer, got -5" in err


# ----- class 3: every flag checked before any work or output, with the flag's name -----


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beta", "inf"], "--beta must be a finite number, got inf"),
        (["--beta", "-2"], "--beta must be a finite number >= 0"),
        (["--learning-rate", "nan"], "--learning-rate must be a finite number, got nan"),
        (["--recipe", "improved"], "--epochs must be at least 2 with --recipe improved"),
        (["--seed", str(2**64)], "--seed must be in 0..4294967295"),
        (["--seed", "-1"], "--seed must be in 0..4294967295"),
        (
            ["--seed", "4294967295", "--num-seeds", "2"],
            "--num-seeds 2 from --seed 4294967295 would pass the largest seed",
        ),
        (["--num-seeds", "0"], "--num-seeds must be a positive integer, got 0"),
        (["--num-seeds", "1000000"], "--num-seeds and --sweep ask for 1000000 models"),
        (["--sweep", "beta=1,x"], "argument --sweep: expected NAME=v1,v2,… (e.g. beta=0.5,1,2), got 'beta=1,x'"),
        (["--sweep", "depth=1,2"], "--sweep names must be in ('beta', 'learning_rate'), got 'depth'"),
        (["--latent-dim", "2.5"], "argument --latent-dim: invalid int value: '2.5'"),
        (["--hidden-sizes", "300,-1"], "--hidden-sizes must be one or more positive integers, got (300, -1)"),
        (["--keep-checkpoints", "0"], "--keep-checkpoints must be a positive integer, got 0"),
        (["--resume", "--overwrite"], "--overwrite and --resume contradict each other"),
        (["--cluster-timeout", "0"], "--cluster-timeout must be a positive number of seconds"),
    ],
)
def test_class_3_training_flags_are_refused_up_front(subset_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code, err = run_main(vae_fashion_mnist.main, _train_flags(subset_dir, out) + flags, capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--iwae-k", "3000000000"], "--iwae-k values must be at most 1073741824, got 3000000000"),
        (["--iwae-k", "100000000"], "asks for 1.80e+10 decoder evaluations"),  # 180 images x 1e8 > the 1e10 cap
        (["--iwae-k", "5,5"], "--iwae-k must be distinct positive integers"),
        (["--elbo-samples", "0"], "--elbo-samples must be a positive integer, got 0"),
        (["--num-test-images", "181"], "--num-test-images must be at most the 180 test images, got 181"),
        (["--member", "1"], "--member must be below the population's 1 members, got 1"),
        (["--dataset", "digits"], "digits: the test images have shape (8, 8), the model in --params takes (28, 28)"),
        (["--dataset", "npz:missing.npz"], "--dataset npz:missing.npz: no such file"),
        (["--images-key", "x"], "--images-key applies to --dataset npz only"),
        (["--auto-resume", "--overwrite"], "--overwrite and --auto-resume contradict each other"),
    ],
)
def test_class_3_evaluation_flags_are_refused_up_front(trained, subset_dir, tmp_path, capsys, flags, message):
    out = tmp_path / "eval"
    # No --data-dir: the params file names the training run's data (the subset), and it is used.
    code, err = run_main(
        evaluate_vae.main, ["--params", str(trained / "params.msgpack"), "--out", str(out), *flags], capsys
    )
    assert code == 2 and message in err and not out.exists()


# ----- class 4: one run owns its --out -----


def test_class_4_a_running_run_owns_its_folder(trained, subset_dir, capsys):
    before = _snapshot(trained)
    with _held_lock(trained):
        code, err = run_main(vae_fashion_mnist.main, _train_flags(subset_dir, trained, "--resume"), capsys)
    assert code == 2 and "is in use by another run" in err
    assert _snapshot(trained) == before


class _held_lock:
    """Holds a run folder's lock as another process's run would."""

    def __init__(self, folder):
        self.folder = folder

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.folder / runs.LOCK, os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "already holds a vae_fashion_mnist run (status 'finished'"),
        (["--resume", "--recipe", "adam"], "different settings: recipe 'chapter' (now 'adam')"),
        (["--resume", "--num-seeds", "2"], "num_seeds 1 (now 2)"),
    ],
)
def test_class_4_another_run_in_the_folder_is_never_continued_or_clobbered(trained, subset_dir, capsys, flags, message):
    before = _snapshot(trained)
    code, err = run_main(vae_fashion_mnist.main, _train_flags(subset_dir, trained, *flags), capsys)
    assert code == 2 and message in err
    assert _snapshot(trained) == before


def test_class_4_other_data_or_a_schedule_changing_epoch_count_is_refused_on_resume(subset_dir, tmp_path, capsys):
    other = tmp_path / "other-data"
    shutil.copytree(subset_dir, other)
    raw = bytearray(gzip.open(other / "train-images-idx3-ubyte.gz").read())
    raw[-1] ^= 0xFF  # one pixel of one image differs
    with gzip.open(other / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes(raw))
    out = tmp_path / "run"
    improved = ["--recipe", "improved", "--epochs", "2"]
    assert vae_fashion_mnist.main(_train_flags(subset_dir, out, *improved)) == 0
    before = _snapshot(out)
    code, err = run_main(vae_fashion_mnist.main, _train_flags(other, out, *improved, "--resume"), capsys)
    assert code == 2 and "data_sha256" in err
    code, err = run_main(
        vae_fashion_mnist.main,
        _train_flags(subset_dir, out, "--recipe", "improved", "--epochs", "3", "--resume"),
        capsys,
    )
    assert code == 2 and "epochs 2 (now 3)" in err  # the cosine schedule depends on the epoch count
    assert _snapshot(out) == before


def test_class_4_a_folder_that_must_not_be_touched_is_refused_whatever_else_is_wrong(
    trained, tmp_path, capsys, monkeypatch
):
    # No Fashion-MNIST anywhere and a missing --params: the folder's refusal still comes first.
    from aejax import data

    monkeypatch.setattr(data.fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-package")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty-tfds"))
    before = _snapshot(trained)
    for params in (trained / "params.msgpack", tmp_path / "missing.msgpack"):
        code, err = run_main(evaluate_vae.main, ["--params", str(params), "--out", str(trained)], capsys)
        assert (
            code == 2
            and "holds the outputs of a vae_fashion_mnist run, which this evaluate_vae run must not touch" in err
        )
    code, err = run_main(
        vae_fashion_mnist.main, ["--data-dir", str(tmp_path / "missing"), "--out", str(trained)], capsys
    )
    assert code == 2 and "already holds a vae_fashion_mnist run" in err
    assert _snapshot(trained) == before


# ----- class 5: interrupts and faults end cleanly -----


def test_class_5_ctrl_c_names_the_checkpoint_and_exits_130(subset_dir, tmp_path):
    out = tmp_path / "run"
    flags = _train_flags(subset_dir, out)
    flags[flags.index("--epochs") + 1] = "400"
    # As from a terminal: a suite started in the background (`make test &`) runs with SIGINT ignored,
    # which a child would inherit (and Python would install no KeyboardInterrupt handler). A handler
    # set here is reset to the default in the child by exec (no preexec_fn: JAX forbids fork hooks).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "experiments.vae_fashion_mnist", *flags],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "epoch_0002.msgpack").exists():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130
    assert err.strip().splitlines()[-1].startswith("interrupted; --resume continues from ")
    assert "Traceback" not in err and runs.read_record(out)["status"] == "interrupted"
    assert not (out / "metrics.json").exists()


def test_class_5_a_full_disk_is_one_line_and_exit_1(subset_dir, tmp_path, capsys, monkeypatch):
    import aejax.io.files

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(aejax.io.files.os, "fsync", no_space)
    code, err = run_main(
        linear_ae_pca.main, ["--spread-seeds", "1", "--converged-epochs", "1", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.endswith(".tmp")]


def test_class_5_leftovers_of_a_killed_run_are_cleaned_and_a_corrupt_newer_checkpoint_set_aside(
    trained, subset_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    stale = out / ".params.msgpack.0123456789abcdef.tmp"
    stale.write_bytes(b"a final write cut short")
    corrupt = out / "checkpoints" / "epoch_0009.msgpack"
    corrupt.write_bytes(b"damaged")
    flags = _train_flags(subset_dir, out, "--resume", "--keep-checkpoints", "1")
    flags[flags.index("--epochs") + 1] = "2"
    code, err = run_main(vae_fashion_mnist.main, flags, capsys)
    assert code == 0 and "epoch_0009.msgpack is truncated or corrupt" in err
    assert not stale.exists()
    # The newer corrupt file is set aside, so keeping 1 checkpoint keeps the good epoch 2 one.
    assert [p.name for p in checkpoint.list_checkpoints(out / "checkpoints")] == ["epoch_0002.msgpack"]
    assert (out / "checkpoints" / "epoch_0009.msgpack.corrupt").exists()


def test_class_5_outputs_are_readable_by_the_group_and_others_under_the_usual_umask(trained):
    # `trained` ran under the test process's umask; with 022 its files are 0644, not 0600.
    umask = os.umask(0)
    os.umask(umask)
    for path in (
        trained / "metrics.json",
        trained / "params.msgpack",
        trained / "run.json",
        checkpoint.list_checkpoints(trained / "checkpoints")[-1],
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


# ----- class 6: exit codes mean one thing -----


def test_class_6_a_diverging_linear_ae_is_exit_1_with_one_line(tmp_path, capsys):
    code, err = run_main(
        linear_ae_pca.main, ["--learning-rate", "1e6", "--spread-seeds", "1", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 1 and err.startswith("error: training diverged") and "Traceback" not in err


# ----- class 7: multi-host set-up fails fast and says why -----


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_command(subset_dir, out, address, process_id):
    return [
        sys.executable,
        "-m",
        "experiments.vae_fashion_mnist",
        *_train_flags(subset_dir, out),
        "--coordinator-address",
        address,
        "--num-processes",
        "2",
        "--process-id",
        str(process_id),
        "--cluster-timeout",
        "3",
    ]


def test_class_7_a_missing_coordinator_or_a_duplicate_id_times_out_with_a_reason(subset_dir, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    alone = subprocess.run(
        _cluster_command(subset_dir, tmp_path / "a", address, 1), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert alone.returncode == 1 and f"no coordinator answered at {address} within 3 s" in alone.stderr
    # Two processes that both say --process-id 0: one cannot listen, the other waits for process 1.
    both = [
        subprocess.Popen(
            _cluster_command(subset_dir, tmp_path / "b", address, 0),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = sorted(p.communicate(timeout=60)[1] for p in both)
    assert [p.returncode for p in both] == [1, 1]
    assert any("process 0 cannot listen" in e for e in errors)
    assert any("for processes [1] of 1..1, which never joined" in e for e in errors)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_class_7_bad_cluster_settings_and_the_environment(subset_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    for flags, message in (
        (["--coordinator-address", "localhost", "--num-processes", "2"], "must be HOST:PORT"),
        (["--coordinator-address", "host:99999", "--num-processes", "2"], "a port in 1..65535"),
        (["--coordinator-address", "localhost:1234"], "was given but --num-processes is 1"),
    ):
        code, err = run_main(vae_fashion_mnist.main, _train_flags(subset_dir, out, *flags), capsys)
        assert code == 2 and message in err and not out.exists()
    monkeypatch.setenv("AEJAX_NUM_PROCESSES", "garbage")
    code, err = run_main(vae_fashion_mnist.main, ["--help"], capsys)
    assert code == 0
    code, err = run_main(vae_fashion_mnist.main, _train_flags(subset_dir, out, "--recipe", "nope"), capsys)
    assert code == 2 and "invalid choice: 'nope'" in err  # a bad flag is reported, not the variable
    code, err = run_main(vae_fashion_mnist.main, _train_flags(subset_dir, out, "--epochs", "0"), capsys)
    assert code == 2 and "--epochs must be a positive integer" in err
    code, err = run_main(vae_fashion_mnist.main, _train_flags(subset_dir, out), capsys)
    assert code == 2 and "AEJAX_NUM_PROCESSES must be an integer, got 'garbage' (or pass --num-processes)" in err
    assert not out.exists()
