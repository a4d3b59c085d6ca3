"""Smoke tests of the benchmark entry points on tiny sizes (no timing is asserted)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from aejax.training import population
from aejax.training.train import TrainState
from benchmarks import accelerator, ladder, throughput

PEER_PYTHON = Path(throughput.REPO_ROOT) / ".venv-peers" / "bin" / "python"


def test_throughput_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "--batch-sizes",
        "16",
        "--epochs",
        "1",
        "--num-examples",
        "64",
        "--population-sizes",
        "1,3",
        "--peers",
        "none",
        "--json",
        str(out),
    ]
    assert throughput.main(argv) == 0
    payload = json.loads(out.read_text())
    names = {r["name"] for r in payload["results"]}
    assert {
        "vae_train_scan_epoch",
        "vae_train_step_per_batch",
        "vae_generate",
        "matmul_only_ceiling",
        "gemm_peak",
    } <= names
    populations = {r["population"]: r for r in payload["results"] if r["name"] == "vae_train_scan_epoch"}
    assert sorted(populations) == [1, 3]
    # Aggregate = members x per-member rate; a bigger population needs more device memory.
    assert populations[3]["examples_per_sec"] == pytest.approx(3 * populations[3]["examples_per_sec_per_member"])
    assert populations[3]["program_bytes"] > populations[1]["program_bytes"] > 0
    for record in payload["results"]:
        if record["name"] == "gemm_peak":
            assert record["gflops_per_sec"] > 0
            continue
        assert {"name", "batch_size", "examples_per_sec", "device"} <= set(record)
        assert record["examples_per_sec"] > 0
    assert payload["hand_flops_per_example"] == 1_374_000  # the hand count, 1.374 MFLOP
    assert "examples/s" in capsys.readouterr().out


def _matmuls(jaxpr) -> list:
    """(operand shapes, dimension numbers) of every dot_general in a jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append((tuple(v.aval.shape for v in eqn.invars), eqn.params["dimension_numbers"]))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _matmuls(inner)
    return found


def test_throughput_times_the_conv_model_too(tmp_path, capsys):
    out = tmp_path / "conv.json"
    argv = ["--model", "conv", "--batch-sizes", "16", "--epochs", "1", "--num-examples", "32"]
    assert throughput.main([*argv, "--population-sizes", "1", "--peers", "none", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["model"] == "conv" and payload["hand_flops_per_example"] is None
    names = {r["name"] for r in payload["results"]}
    # The MLP's matmul skeleton does not bound another model: no ceiling row for the conv VAE.
    assert {"vae_train_scan_epoch", "vae_train_step_per_batch", "vae_iwae_k50"} <= names
    assert "matmul_only_ceiling" not in names
    scan = next(r for r in payload["results"] if r["name"] == "vae_train_scan_epoch")
    assert scan["model"] == "conv" and scan["flops_per_example_compiled"] > 0
    assert "model: conv" in capsys.readouterr().out


def test_the_matmul_ceiling_runs_exactly_the_models_matmuls():
    # The ceiling bounds the model only if it does a subset of the model's work: the same 20
    # matmuls (shapes and contraction dimensions, hence the same kernels), in the same epoch loop.
    batch, key = jnp.zeros((128, 28, 28)), jax.random.key(0)
    state = throughput._fresh_state(throughput.CHAPTER.init(key))
    model = jax.make_jaxpr(lambda s: population.train_step.__wrapped__(s, batch, key, throughput.CHAPTER_HYPER))(state)
    skeleton_state = TrainState(jnp.zeros((), jnp.int32), [jnp.ones(s) for s in throughput.MATMUL_SHAPES], ())
    skeleton = jax.make_jaxpr(lambda s: throughput.skeleton_step(s, batch, key, jnp.ones(128)))(skeleton_state)
    assert len(_matmuls(model.jaxpr)) == 20
    assert sorted(map(str, _matmuls(skeleton.jaxpr))) == sorted(map(str, _matmuls(model.jaxpr)))
    # XLA's own FLOP count of a compiled ceiling epoch covers the hand count of those matmuls (a
    # matmul XLA dropped, e.g. a forward whose output nothing reads, would lose 235 kFLOP/example);
    # the rest is elementwise (the SGD update, the loss): < 1%.
    compiled = throughput.skeleton_epoch.lower(skeleton_state, batch, key, 128).compile()  # one step
    analysis = compiled.cost_analysis()
    flops = (analysis[0] if isinstance(analysis, list) else analysis)["flops"] / len(batch)
    assert throughput.HAND_FLOPS_PER_EXAMPLE <= flops < 1.01 * throughput.HAND_FLOPS_PER_EXAMPLE


# Every peer once, and each framework on both models: a framework's two modes share its model code,
# so the mode a model skips runs the same layers. (torch.compile's first compilation of the conv
# VAE, cold on a fresh machine, took 77 s of the suite; of the MLP, 23 s.)
PEER_CASES = [
    ("torch_eager", "conv"),
    ("torch_compile", "mlp"),
    ("keras_tensorflow_fit", "conv"),
    ("keras_jax_fit", "mlp"),
]


def test_the_peer_cases_cover_every_peer_and_every_framework_on_both_models():
    assert sorted(peer for peer, _ in PEER_CASES) == sorted(throughput.PEERS)
    covered = {(throughput.PEERS[peer][0], model) for peer, model in PEER_CASES}
    assert covered == {(module, model) for module, _ in throughput.PEERS.values() for model in ("mlp", "conv")}


@pytest.mark.parametrize("peer, model", PEER_CASES)
def test_each_peer_trains_in_its_own_process(peer, model):
    assert PEER_PYTHON.exists(), "the peer frameworks are missing: run `make peers`"
    records = throughput.run_peer(peer, str(PEER_PYTHON), [16, 32], epochs=1, num_examples=64, threads=2, model=model)
    assert [r.get("error") for r in records] == [None, None]
    assert [r["batch_size"] for r in records] == [16, 32]
    for record in records:
        assert record["name"] == peer and record["examples_per_sec"] > 0 and len(record["timings_s"]) == 1


def test_missing_peer_frameworks_are_reported_not_raised(tmp_path):
    records = throughput.run_peer("torch_eager", "/nonexistent/python", [16], epochs=1, num_examples=64, threads=1)
    assert len(records) == 1 and "No such file" in records[0]["error"]


def test_unknown_peer_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        throughput.main(["--peers", "keras,mxnet"])
    assert exit_info.value.code == 2 and "mxnet" in capsys.readouterr().err


def test_accelerator_suite_dry_run(subset_dir, tmp_path, capsys):
    # The one-command GPU suite, at toy sizes on this CPU: every section runs and lands in the JSON.
    out = tmp_path / "accelerator.json"
    argv = ["--data-dir", str(subset_dir), "--dry-run", "--peers", "none", "--json", str(out)]
    assert accelerator.main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["matmul_peak_tflops"]) == {"highest", "default"}
    assert {(r["batch_size"], r["population"]) for r in report["training"]} == {(16, 1), (16, 2)}
    assert all(0 < r["fraction_of_peak"] and r["examples_per_sec"] > 0 for r in report["training"])
    iwae = next(r for r in report["evaluation"] if r["name"] == "iwae_test_set")
    assert iwae["images"] == 20 and iwae["negative_iwae_nats"] > 0
    # On a CPU both precisions are float32 throughout: identical results.
    assert report["precision"]["difference_nats"] == 0.0
    assert "| aejax scan epoch | 16 | 2 |" in capsys.readouterr().out


def test_the_ladder_benchmark_times_a_rung_as_make_ladder_trains_it(subset_dir, tmp_path, capsys):
    """The rungs and their flags come from the Makefile that `make ladder` runs; a rung is timed with
    its own settings (here the one that changes the most: hierarchy, VampPrior and IWAE training)."""
    known = ladder.rungs()
    assert known["mlp"] == [] and known["hvae_vamp_iwae"][:2] == ["--model", "hvae"]
    assert list(known)[:2] == ["mlp", "mlp_vamp"] and len(known) == 9
    out = tmp_path / "ladder.json"
    argv = ["--data-dir", str(subset_dir), "--dry-run", "--epochs", "2", "--repeats", "1", "--json", str(out)]
    assert ladder.main([*argv, "--rungs", "hvae_vamp_iwae"]) == 0
    (row,) = json.loads(out.read_text())["rungs"].values()
    assert row["flags"] == known["hvae_vamp_iwae"] and row["epochs_timed"] == 1 and row["iwae_images"] == 100
    assert 0 < row["epoch_seconds"] and 0 < row["iwae_seconds"] and row["training_examples"] == 620
    assert (
        "| hvae_vamp_iwae | --model hvae --prior vamp --objective iwae --train-samples 5 |" in capsys.readouterr().out
    )
    with pytest.raises(SystemExit):
        ladder.main([*argv, "--rungs", "hvea"])
    assert "--rungs must name rungs among mlp, mlp_vamp" in capsys.readouterr().err
