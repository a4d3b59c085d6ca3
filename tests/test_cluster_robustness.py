"""Hardening, round 3 (docs/hardening.md, classes 10-16): what a cluster user meets first.

Preemption and requeueing, outputs that go away, torn logs, populations with failed members,
benchmarks that check before they time, and records that say what ran. Each test fails without its
fix: the scripts are driven as a user (or a scheduler) drives them.
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aejax.evaluation import evaluator
from aejax.io import params_file, runs
from benchmarks import accelerator, throughput
from experiments import evaluate_vae, linear_ae_pca, vae_fashion_mnist
from tests.conftest import REPO, run_main

TRAIN = [sys.executable, "-m", "experiments.vae_fashion_mnist"]


def _flags(subset_dir, out, *extra):
    return [
        "--data-dir",
        str(subset_dir),
        "--num-validation",
        "120",
        "--batch-size",
        "24",
        "--epochs",
        "1",
        "--out",
        str(out),
        *extra,
    ]


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)


# ----- class 10: preemption, signals and requeueing -----


def test_sigterm_and_sighup_stop_like_ctrl_c_and_the_same_command_line_continues(subset_dir, tmp_path):
    """A scheduler preempts (SIGTERM), a terminal closes (SIGHUP), the job is requeued with the same
    command line each time (--auto-resume): the run ends as if never stopped."""
    out = tmp_path / "run"
    command = [*TRAIN, *_flags(subset_dir, out, "--auto-resume")]
    command[command.index("--epochs") + 1] = "6"
    for signum, code, epoch in ((signal.SIGTERM, 143, 1), (signal.SIGHUP, 129, 3)):
        job = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _wait_for(out / "checkpoints" / f"epoch_{epoch:04d}.msgpack", job)
        job.send_signal(signum)
        _, err = job.communicate(timeout=60)
        assert job.returncode == code, err
        name = signal.Signals(signum).name
        assert err.strip().splitlines()[-1].startswith(f"stopped by {name}; --resume continues from "), err
        assert "Traceback" not in err
        record = runs.read_record(out)
        assert record["status"] == "stopped" and record["stopped_by"] == name
        assert not (out / "metrics.json").exists()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["invocations"] == 3 and metrics["epochs_run"] == 6
    assert metrics["train_wall_seconds_total"] > metrics["train_wall_seconds"]
    history = [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3, 4, 5, 6]  # no epoch lost or written twice
    assert runs.read_record(out)["status"] == "finished"


def test_a_run_whose_process_is_gone_is_named_and_the_advice_names_real_flags(subset_dir, tmp_path, capsys):
    out = tmp_path / "killed"
    out.mkdir()
    (out / runs.RECORD).write_text(
        json.dumps(
            {
                "kind": vae_fashion_mnist.KIND,
                "status": "running",
                "pid": 999999,
                "host": "node7",
                "started": "2026-12-01T00:00:00+00:00",
            }
        )
    )
    code, err = run_main(vae_fashion_mnist.main, _flags(subset_dir, out), capsys)
    assert code == 2
    assert "was running as pid 999999 on node7, which no longer exists" in err and "pass --resume" in err

    for main, kind, extra, advice in (
        (evaluate_vae.main, evaluate_vae.KIND, ["--params", "x.msgpack"], "pass --resume to continue it, --overwrite"),
        (linear_ae_pca.main, linear_ae_pca.KIND, [], "pass --overwrite to replace it"),
    ):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / runs.RECORD).write_text(json.dumps({"kind": kind, "status": "finished", "started": "then"}))
        code, err = run_main(main, [*extra, "--out", str(folder)], capsys)
        assert code == 2 and advice in err, err
        assert "--resume" in advice or "--resume" not in err, err  # linear_ae_pca has no --resume


def test_a_stopped_evaluation_continues_with_only_the_batches_left(subset_dir, tmp_path, capsys, monkeypatch):
    """An evaluation stopped in its IWAE pass (here by Ctrl-C in the third batch) keeps the batches it
    finished; --resume evaluates only the rest, with the same draws: the per-image bounds equal, bit
    for bit, those of an evaluation never stopped (the same programs on the same machine)."""
    trained = tmp_path / "run"
    assert vae_fashion_mnist.main(_flags(subset_dir, trained)) == 0
    flags = ["--params", str(trained / "params.msgpack"), "--data-dir", str(subset_dir), "--iwae-k", "1,20"]
    flags += ["--elbo-samples", "2", "--batch-size", "50"]  # 180 test images: 4 batches, the last padded
    whole, stopped = tmp_path / "whole_eval", tmp_path / "stopped_eval"
    assert evaluate_vae.main([*flags, "--out", str(whole)]) == 0

    bound, calls, stop_at = evaluator.metrics.iwae_bound, [], 3  # the ELBO's 4 batches, IWAE k = 1's first 2

    def counted(*args, **kwargs):
        calls.append(args[4])  # k
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        return bound(*args, **kwargs)

    elbo, elbo_calls = evaluator.metrics.elbo, []
    monkeypatch.setattr(evaluator.metrics, "iwae_bound", counted)
    monkeypatch.setattr(evaluator.metrics, "elbo", lambda *args: elbo_calls.append(1) or elbo(*args))
    code, err = run_main(evaluate_vae.main, [*flags, "--auto-resume", "--out", str(stopped)], capsys)
    assert code == 130 and f"--resume continues from {stopped / evaluate_vae.PROGRESS} (6 batches" in err, err
    assert runs.read_record(stopped)["status"] == "interrupted" and not (stopped / "metrics.json").exists()

    code, err = run_main(evaluate_vae.main, [*flags, "--seed", "1", "--resume", "--out", str(stopped)], capsys)
    assert code == 2 and "different settings: seed 0 (now 1)" in err, err  # other draws: refused

    assert len(elbo_calls) == 4
    calls.clear()
    stop_at = None
    assert evaluate_vae.main([*flags, "--auto-resume", "--out", str(stopped)]) == 0  # the same line, requeued
    assert calls == [1, 1, 20, 20, 20, 20]  # only what was left: k = 1's last 2 batches, then all of k = 20
    assert len(elbo_calls) == 4  # the ELBO's batches were all finished: none evaluated again
    with np.load(whole / evaluate_vae.PER_IMAGE) as expected, np.load(stopped / evaluate_vae.PER_IMAGE) as resumed:
        assert sorted(resumed) == sorted(expected)
        for name in expected:
            np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    metrics = json.loads((stopped / "metrics.json").read_text())
    assert metrics["invocations"] == 2 and metrics["eval_wall_seconds_total"] >= metrics["eval_wall_seconds"]
    assert (
        metrics["test_negative_iwae_nats"]
        == json.loads((whole / "metrics.json").read_text())["test_negative_iwae_nats"]
    )
    assert not (stopped / evaluate_vae.PROGRESS).exists()  # all of it is in the per-image file


# ----- class 11: outputs that cannot kill the work -----


def test_a_closed_reader_or_closed_streams_do_not_stop_training(subset_dir, tmp_path):
    out = tmp_path / "piped"
    with subprocess.Popen(
        [*TRAIN, *_flags(subset_dir, out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as job:
        job.stdout.read(20)  # `| head -c 20`
        job.stdout.close()
        err = job.stderr.read().decode()
    assert job.returncode == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    for name in ("params.msgpack", "metrics.json", "vae_generated_images_plot.png"):
        assert (out / name).is_file()

    closed = tmp_path / "closed"
    command = " ".join([*TRAIN, *_flags(subset_dir, closed)])
    assert subprocess.run(f"{command} >&- 2>&-", shell=True, cwd=REPO, timeout=300).returncode == 0
    assert (closed / "metrics.json").is_file() and runs.read_record(closed)["status"] == "finished"


def test_a_benchmark_read_through_head_still_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.throughput",
        "--batch-sizes",
        "16",
        "--epochs",
        "1",
        "--num-examples",
        "64",
        "--population-sizes",
        "1",
        "--peers",
        "none",
        "--json",
        str(out),
    ]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as job:
        job.stdout.read(10)  # `| head -c 10`
        job.stdout.close()
        err = job.stderr.read().decode()
    assert job.returncode == 0 and "Traceback" not in err and "Exception ignored" not in err, err
    assert json.loads(out.read_text())["results"]


# ----- class 12: append-only files tolerate a torn tail -----


def test_a_torn_history_line_is_dropped_on_resume(subset_dir, tmp_path, capsys):
    out = tmp_path / "torn"
    assert vae_fashion_mnist.main(_flags(subset_dir, out)) == 0
    with open(out / "history.jsonl", "ab") as log:
        log.write(b'{"epoch": 2, "member": 0, "loss": 0.3')  # a kill mid-append
    flags = _flags(subset_dir, out, "--resume")
    flags[flags.index("--epochs") + 1] = "2"
    code, err = run_main(vae_fashion_mnist.main, flags, capsys)
    assert code == 0, err
    assert "history.jsonl: dropped a partial last line" in err
    assert [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [1, 2]


# ----- class 13: populations with failed members -----


def test_a_diverged_member_spoils_neither_figures_nor_evaluation(subset_dir, tmp_path, capsys):
    out = tmp_path / "population"
    code, err = run_main(vae_fashion_mnist.main, _flags(subset_dir, out, "--sweep", "learning_rate=1e30,1e-3"), capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["members"][0]["diverged"] is not None and metrics["members"][1]["diverged"] is None
    assert metrics["figures_member"] == {"index": 1, "seed": 42, "beta": 1.0, "learning_rate": 1e-3}
    assert "figures show member 1" in err
    members, manifest, _ = params_file.read(out / "params.msgpack")
    assert len(members) == 2 and manifest["model"]["likelihood"] == "bernoulli"
    assert not np.isfinite(members[0]["decoder"]["logits"]["bias"]).all()

    evaluation = [
        "--params",
        str(out / "params.msgpack"),
        "--data-dir",
        str(subset_dir),
        "--iwae-k",
        "1,5",
        "--num-test-images",
        "40",
        "--elbo-samples",
        "2",
    ]
    code, err = run_main(evaluate_vae.main, [*evaluation, "--out", str(tmp_path / "all")], capsys)
    assert code == 2 and "(member 0)" in err and "NaN" in err, err
    code, err = run_main(evaluate_vae.main, [*evaluation, "--member", "1", "--out", str(tmp_path / "one")], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert (result["member"], result["seed"], result["learning_rate"]) == (1, 42, 1e-3)
    assert result["likelihood_source"] == "the params file's manifest"


def test_evaluation_summarises_per_grid_point(subset_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert vae_fashion_mnist.main(_flags(subset_dir, out, "--sweep", "beta=0.5,2")) == 0
    evaluation = ["--data-dir", str(subset_dir), "--iwae-k", "1", "--num-test-images", "30", "--elbo-samples", "1"]
    code, err = run_main(
        evaluate_vae.main,
        ["--params", str(out / "params.msgpack"), *evaluation, "--out", str(tmp_path / "eval")],
        capsys,
    )
    assert code == 0, err
    result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [(p["beta"], p["n"]) for p in result["summary"]] == [(0.5, 1), (2.0, 1)]  # never pooled
    assert [(r["seed"], r["beta"]) for r in result["members"]] == [(42, 0.5), (42, 2.0)]


# ----- class 14: every script checks everything before the work -----


def test_benchmarks_refuse_bad_paths_before_timing(tmp_path, capsys):
    cases = [
        (throughput.main, ["--json", str(tmp_path / "file.txt" / "x.json")], "--json"),
        (throughput.main, ["--json", str(tmp_path)], "is a folder"),
        (throughput.main, ["--peer-python", str(tmp_path / "nope")], "--peer-python"),
        (throughput.main, ["--data-dir", str(tmp_path)], "--data-dir"),
        (accelerator.main, ["--data-dir", str(tmp_path), "--cpu-json", str(tmp_path / "wrong.json")], "--cpu-json"),
        (accelerator.main, ["--data-dir", str(tmp_path), "--cpu-json", str(tmp_path / "missing.json")], "--cpu-json"),
        (accelerator.main, ["--data-dir", str(tmp_path)], "--data-dir"),
    ]
    (tmp_path / "file.txt").write_text("")
    (tmp_path / "wrong.json").write_text(json.dumps({"results": [{"name": "other"}]}))
    for main, argv, message in cases:
        start = time.monotonic()
        code, err = run_main(main, argv, capsys)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
        assert time.monotonic() - start < 5  # before any timing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "wrong.json"]


def test_an_impossible_out_name_and_an_oversized_model_are_refused_up_front(subset_dir, tmp_path, capsys, monkeypatch):
    long_name = tmp_path / ("x" * 300)
    for main, extra in (
        (vae_fashion_mnist.main, _flags(subset_dir, long_name)),
        (linear_ae_pca.main, ["--out", str(long_name)]),
    ):
        code, err = run_main(main, extra, capsys)
        assert code == 2 and "cannot be used as a folder" in err, err

    out = tmp_path / "huge"
    # 3e6 latent units pass the 64 GiB population cap (7 GB of state), but the validation program
    # needs 63 GiB (XLA's memory analysis). The machine is made a 16 GiB one, whatever it really has.
    import aejax.parallel

    monkeypatch.setattr(aejax.parallel, "available_memory", lambda device=None: 16 * 2**30)
    code, err = run_main(vae_fashion_mnist.main, _flags(subset_dir, out, "--latent-dim", "3000000"), capsys)
    last = err.strip().splitlines()[-1]  # after argparse's usage lines, the one message
    assert code == 2 and "--latent-dim" in last, err
    needed = float(re.search(r"needs ([\d.]+) GiB, and this machine has 16.0 GiB available", last).group(1))
    assert needed > 16  # 63.0 GiB with jaxlib 0.10, 51.5 with the floor's 0.4.35
    assert not out.exists()


# ----- class 15: records that say what ran -----


def test_records_say_what_ran_and_sweeps_do_not_hide_a_flag(subset_dir, tmp_path, capsys):
    out = tmp_path / "record"
    assert vae_fashion_mnist.main(_flags(subset_dir, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    environment = metrics["environment"]
    assert environment["aejax"]["version"] and len(environment["aejax"]["commit"] or "") in (0, 40)
    assert {"flax", "optax", "numpy", "jax"} <= {k for k, v in environment["libraries"].items() if v}
    assert environment["date"].startswith("20") and environment["host"]
    assert metrics["invocations"] == 1
    assert runs.read_record(out)["environment"]["aejax"] == environment["aejax"]

    code, err = run_main(
        vae_fashion_mnist.main, _flags(subset_dir, tmp_path / "b", "--beta", "3", "--sweep", "beta=1,2"), capsys
    )
    assert code == 2 and "--beta 3.0 and --sweep beta=… both set beta" in err
    assert not (tmp_path / "b").exists()


# ----- class 16: the notebook is a first-class user -----


def test_a_notebook_passes_lists_and_bad_fit_arguments_fail_before_the_first_step(subset_dir, tmp_path):
    from aejax import checks, data
    from aejax.training import fit, population

    images, _ = data.load_fashion_mnist("train", subset_dir)
    config = fit.Config().replace(
        hidden_sizes=[32], latent_dim=2, epochs=1, batch_size=60, num_validation=120, sweep=[["beta", [0.5, 1.0]]]
    )
    assert config.model.hidden_sizes == (32,) and config.population.sweep == (("beta", (0.5, 1.0)),)
    (tmp_path / "file").write_text("")
    for kwargs, message in (
        ({"keep_checkpoints": 0, "checkpoint_dir": tmp_path / "c"}, "keep_checkpoints"),
        ({"checkpoint_dir": tmp_path / "file"}, "is not a folder"),
        ({"writers": [object()]}, "writers must have"),
    ):
        with pytest.raises(ValueError, match=message):
            fit.fit(config, images, **kwargs)
    assert not (tmp_path / "c").exists()

    import jax

    model = config.model.build((28, 28))
    state = jax.tree.map(lambda x: x[0], population.init_states(population.member_keys([0])["init"], model))
    step = checks.checked(population.train_step)  # the value checks of the compiled step, on request
    with pytest.raises(Exception, match="hyper learning_rate must be finite"):
        step(
            state,
            data.to_unit_float(images[:8]),
            jax.random.key(0),
            {"beta": 1.0, "learning_rate": float("nan")},
            program=population.Program(model=model),
        )


# ----- a bug is reported as a bug -----


def test_a_bug_is_exit_1_with_its_traceback_kept_never_called_bad_input(subset_dir, tmp_path, capsys, monkeypatch):
    """An error that is not one of aejax.errors' bad-input types is aejax's (or a library's) bug:
    one line saying so, exit 1, and the traceback kept in the run folder, never "exit 2, your input"."""
    from aejax.training import population

    def broken(*args, **kwargs):
        raise ValueError("an internal shape mismatch")  # what a JAX or aejax bug raises

    monkeypatch.setattr(population, "evaluate_members", broken)
    out = tmp_path / "bug"
    code, err = run_main(vae_fashion_mnist.main, _flags(subset_dir, out), capsys)
    assert code == 1, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("bug: ValueError: an internal shape mismatch") and str(out / "traceback.txt") in line
    assert "in broken" in (out / "traceback.txt").read_text()
    assert runs.read_record(out)["status"] == "failed"
    # The next run into the folder replaces that run, traceback included, with --overwrite.
    monkeypatch.undo()
    assert vae_fashion_mnist.main(_flags(subset_dir, out, "--overwrite")) == 0
    assert not (out / "traceback.txt").exists()
