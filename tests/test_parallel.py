"""Data parallelism on 8 CPU devices and 2 processes (subprocesses: XLA reads device flags at start)."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tolerances
from conftest import PYTHON

from aejax import parallel

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra)


@pytest.mark.across_programs
def test_eight_devices_match_one_device_for_the_same_global_batch_and_population():
    done = subprocess.run(
        [*PYTHON, str(ROOT / "tests/helpers/data_parallel_check.py")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=3600 if len(PYTHON) > 1 else 300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["devices"] == 8
    # 1 device and 8 are different programs (the gradient is all-reduced from 8 partial sums), so
    # they agree within float32 rounding a few steps after the same state (tests/tolerances.py):
    # one full-batch step, and one epoch of 10 steps, at lr 1e-3.
    for case in ("one_step", "one_epoch"):
        assert report[case]["data_devices"] == 8 and report[case]["mesh"] == {"members": 1, "data": 8}
    # Populations spread over the members axis: 8 members one per device, 4 members x 2-way data.
    assert report["population_8"]["mesh"] == {"members": 8, "data": 1} and report["population_8"]["member_shards"] == 8
    assert report["population_4"]["mesh"] == {"members": 4, "data": 2} and report["population_4"]["member_shards"] == 4
    for case in ("one_step", "one_epoch", "population_8", "population_4"):
        assert report[case]["params_relative"] <= tolerances.PARAMS_RTOL, case
        assert report[case]["loss_relative"] <= tolerances.LOSS_RTOL, case
    assert report["indivisible"] == (
        "--batch-size 30 is not divisible by the 8 devices that split each batch: choose a multiple of 8 (e.g. 24)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_finish_with_identical_parameters(subset_dir, tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "experiments.vae_fashion_mnist",
        "--data-dir",
        str(subset_dir),
        "--num-validation",
        "120",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--out",
        str(out),
    ]
    processes = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(AEJAX_COORDINATOR_ADDRESS=address, AEJAX_NUM_PROCESSES="2", AEJAX_PROCESS_ID=str(i)),
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    digests = [re.search(r"params sha256 ([0-9a-f]{64})", stdout).group(1) for stdout, _ in outputs]
    assert digests[0] == digests[1]
    metrics = json.loads((out / "metrics.json").read_text())  # written once, by process 0
    assert metrics["environment"]["process_count"] == 2 and metrics["environment"]["device_count"] == 2
    assert metrics["params_sha256"] == digests[0]


@pytest.mark.parametrize(
    "flags, environ, message",
    [
        ({}, {"AEJAX_NUM_PROCESSES": "2"}, "--coordinator-address HOST:PORT is required for --num-processes 2"),
        (
            {},
            {"AEJAX_COORDINATOR_ADDRESS": "h:1", "AEJAX_NUM_PROCESSES": "2", "AEJAX_PROCESS_ID": "2"},
            "--process-id must be in 0..1, got 2",
        ),
        (
            {},
            {"AEJAX_NUM_PROCESSES": "two"},
            "AEJAX_NUM_PROCESSES must be an integer, got 'two' (or pass --num-processes)",
        ),
        (
            {"coordinator_address": "localhost"},
            {"AEJAX_NUM_PROCESSES": "2"},
            "must be HOST:PORT with a port in 1..65535",
        ),
        ({"coordinator_address": "localhost:70000", "num_processes": 2}, {}, "got 'localhost:70000'"),
        ({"coordinator_address": "localhost:1234"}, {}, "was given but --num-processes is 1"),
    ],
)
def test_bad_cluster_settings_are_named(flags, environ, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parallel.Cluster.resolve(flags, environ)


def test_flags_win_over_the_environment():
    environ = {"AEJAX_NUM_PROCESSES": "garbage", "AEJAX_PROCESS_ID": "also garbage"}
    cluster = parallel.Cluster.resolve({"num_processes": 1, "process_id": 0}, environ)
    assert cluster == parallel.Cluster()
    cluster = parallel.Cluster.resolve(
        {}, {"AEJAX_COORDINATOR_ADDRESS": "[::1]:8476", "AEJAX_NUM_PROCESSES": "4", "AEJAX_PROCESS_ID": "3"}
    )
    assert (cluster.coordinator_address, cluster.num_processes, cluster.process_id) == ("[::1]:8476", 4, 3)
