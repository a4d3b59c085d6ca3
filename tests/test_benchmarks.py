"""Smoke test of the benchmark entry point on tiny sizes (no timing is asserted)."""

import json

from benchmarks import throughput


def test_throughput_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert throughput.main(["--batch-sizes", "16", "--epochs", "1", "--num-examples", "64", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    names = {r["name"] for r in payload["results"]}
    assert {"vae_train_scan_epoch", "vae_train_step_per_batch", "vae_generate", "matmul_only_ceiling"} <= names
    for record in payload["results"]:
        assert {"name", "batch_size", "examples_per_sec", "device"} <= set(record)
        assert record["examples_per_sec"] > 0
    assert payload["hand_flops_per_example"] == 1_374_000  # the hand count, 1.374 MFLOP
    assert "examples/s" in capsys.readouterr().out
