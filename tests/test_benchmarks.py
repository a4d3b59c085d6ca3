"""Smoke tests of the benchmark entry points on tiny sizes (no timing is asserted)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from benchmarks import accelerator, throughput

PEER_PYTHON = Path(throughput.REPO_ROOT) / ".venv-peers" / "bin" / "python"


def test_throughput_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--batch-sizes", "16", "--epochs", "1", "--num-examples", "64", "--population-sizes", "1,3",
            "--peers", "none", "--json", str(out)]
    assert throughput.main(argv) == 0
    payload = json.loads(out.read_text())
    names = {r["name"] for r in payload["results"]}
    assert {"vae_train_scan_epoch", "vae_train_step_per_batch", "vae_generate", "matmul_only_ceiling"} <= names
    populations = {r["population"]: r for r in payload["results"] if r["name"] == "vae_train_scan_epoch"}
    assert sorted(populations) == [1, 3]
    # Aggregate = members x per-member rate; a bigger population needs more device memory.
    assert populations[3]["examples_per_sec"] == pytest.approx(3 * populations[3]["examples_per_sec_per_member"])
    assert populations[3]["program_bytes"] > populations[1]["program_bytes"] > 0
    for record in payload["results"]:
        assert {"name", "batch_size", "examples_per_sec", "device"} <= set(record)
        assert record["examples_per_sec"] > 0
    assert payload["hand_flops_per_example"] == 1_374_000  # the hand count, 1.374 MFLOP
    assert "examples/s" in capsys.readouterr().out


def test_matmul_ceiling_does_all_the_vae_matmul_work():
    # XLA's own FLOP count of one ceiling step must cover the hand count of the VAE's matmuls: a
    # matmul XLA drops (e.g. a forward whose output the gradient never reads) loses 235 kFLOP/example.
    # The only extra is elementwise (the SGD update and the output gradient): < 1%.
    batch = 128
    weights = [jnp.ones(shape) for shape in throughput.MATMUL_SHAPES]
    compiled = jax.jit(throughput.matmul_step).lower(weights, jnp.ones((batch, 784)), jnp.ones((batch, 784))).compile()
    analysis = compiled.cost_analysis()
    flops = (analysis[0] if isinstance(analysis, list) else analysis)["flops"] / batch
    assert throughput.HAND_FLOPS_PER_EXAMPLE <= flops < 1.01 * throughput.HAND_FLOPS_PER_EXAMPLE


@pytest.mark.parametrize("peer", list(throughput.PEERS))
def test_each_peer_trains_in_its_own_process(peer):
    assert PEER_PYTHON.exists(), "the peer frameworks are missing: run `make peers`"
    records = throughput.run_peer(peer, str(PEER_PYTHON), [16, 32], epochs=1, num_examples=64, threads=2)
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
