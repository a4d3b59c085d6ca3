"""The accelerator suite: every measurement of the accelerator issue, in one run on one device.

    python -m benchmarks.accelerator --data-dir DIR [--json out.json --cpu-json cpu.json]
    python -m benchmarks.accelerator --data-dir DIR --dry-run      # the same suite, tiny, on any machine

DIR holds the four Fashion-MNIST IDX .gz files: the suite needs no network and no TFDS, only what a
CUDA research box has (jax with CUDA, flax, optax, chex, matplotlib, tqdm, scipy; torch for the
peers). It measures, on JAX's default device, in this order:

1. the device's large-matmul peak (float32 N x N x N, at 'highest' and at 'default' precision);
2. one chapter model's training (an epoch in one compiled `lax.scan`) for batch sizes 128 … 65,536:
   examples/s, compile seconds apart, GFLOP/s from the compiled step's cost analysis, % of peak;
3. populations of 1 … 1,024 models in one program (batch 128): aggregate and per-model examples/s;
4. sampling, and the IWAE bound with k = 5,000 over the whole test set (wall time);
5. the precision study: the chapter recipe trained and evaluated at 'highest' and at 'default'
   matmul precision, and the difference in test -ELBO (nats);
6. the peers on the same device: PyTorch eager and torch.compile at the same batch sizes.

Everything goes to --json and a Markdown table on stdout (device name, date, jax version). With
--cpu-json (a `benchmarks.throughput --json` file from the CPU) it also prints the issue's ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aejax import data, runtime
from aejax.evaluation import metrics
from aejax.io.files import write_json
from aejax.io.streams import tolerant_output
from aejax.models import likelihoods, vae
from aejax.training import fit, population
from benchmarks import throughput

FULL = {
    "matmul": 8192,
    "batch_sizes": [128, 512, 2048, 8192, 32768, 65536],
    "populations": [1, 4, 16, 64, 256, 1024],
    "iwae_k": 5000,
    "test_images": None,
    "epochs": 25,
    "repeats": 3,
    "peer_epochs": 2,
}
DRY = {
    "matmul": 256,
    "batch_sizes": [16],
    "populations": [1, 2],
    "iwae_k": 10,
    "test_images": 20,
    "epochs": 1,
    "repeats": 1,
    "peer_epochs": 1,
}


def _median_seconds(fn, repeats: int) -> float:
    """Median of `repeats` timed calls after a warm-up call (`throughput._time`)."""
    return statistics.median(throughput._time(fn, repeats)[1])


def matmul_peak(size: int, repeats: int) -> dict[str, float]:
    """TFLOP/s of an f32 (size x size) @ (size x size) at each precision."""
    a = jax.random.normal(jax.random.key(0), (size, size))
    b = jax.random.normal(jax.random.key(1), (size, size))
    peaks = {}
    for precision in ("highest", "default"):
        product = jax.jit(lambda x, y, p=precision: jnp.matmul(x, y, precision=None if p == "default" else p))
        peaks[precision] = 2 * size**3 / _median_seconds(lambda: product(a, b), repeats) / 1e12
    return peaks


def _examples(batch_size: int, minimum: int) -> int:
    """Examples per timed epoch: the training set's size, or 8 batches where a batch is bigger."""
    return max(minimum, 8 * batch_size)


def training(images: np.ndarray, batch_sizes: list[int], sizes: list[int], repeats: int, peak: float) -> list[dict]:
    """One model at each batch size, then populations at the first batch size."""
    records = []
    flops = {}
    cases = [(b, 1) for b in batch_sizes] + [(batch_sizes[0], p) for p in sizes if p > 1]
    for batch_size, size in cases:
        n = _examples(batch_size, len(images)) if size == 1 else len(images)
        rows = jnp.asarray(np.resize(images, (n,) + images.shape[1:]))
        states, hyper, keys = throughput.model_population(size)
        program = population.Program(batch_size=batch_size)
        start = time.perf_counter()
        compiled = population.train_epoch.lower(states, hyper, rows, keys, program).compile()
        compile_s = time.perf_counter() - start
        seconds = _median_seconds(lambda: compiled(throughput.model_population(size)[0], hyper, rows, keys), repeats)
        if batch_size not in flops:
            flops[batch_size] = throughput._compiled_flops(batch_size) or throughput.HAND_FLOPS_PER_EXAMPLE
        rate = size * n / seconds
        records.append(
            {
                "name": "vae_train_scan_epoch",
                "batch_size": batch_size,
                "population": size,
                "examples": n,
                "compile_s": compile_s,
                "epoch_s": seconds,
                "examples_per_sec": rate,
                "examples_per_sec_per_member": n / seconds,
                "flops_per_example": flops[batch_size],
                "tflops_per_sec": rate * flops[batch_size] / 1e12,
                "fraction_of_peak": rate * flops[batch_size] / 1e12 / peak,
            }
        )
        print(f"  trained batch {batch_size} x {size} models: {rate:,.0f} examples/s", flush=True)
    return records


def sampling_and_iwae(params, test: np.ndarray, k: int, repeats: int) -> list[dict]:
    x = jnp.asarray(test)
    records = []
    seconds = _median_seconds(lambda: vae.generate(throughput.CHAPTER, params, jax.random.key(0), 10_000), repeats)
    records.append({"name": "vae_generate", "images": 10_000, "seconds": seconds, "images_per_sec": 10_000 / seconds})
    batch = min(500, len(x))

    def whole_test_set():
        return [
            metrics.iwae_bound(
                throughput.CHAPTER,
                params,
                x[i : i + batch],
                jax.random.fold_in(jax.random.key(1), i),
                k,
                chunk_size=100,
            )
            for i in range(0, len(x) - len(x) % batch or len(x), batch)
        ]

    start = time.perf_counter()
    jax.block_until_ready(whole_test_set())
    first = time.perf_counter() - start
    start = time.perf_counter()
    bounds = jax.block_until_ready(whole_test_set())
    seconds = time.perf_counter() - start
    records.append(
        {
            "name": "iwae_test_set",
            "k": k,
            "images": sum(len(b) for b in bounds),
            "seconds": seconds,
            "compile_and_first_run_s": first,
            "negative_iwae_nats": -float(np.mean(np.concatenate(bounds))),
        }
    )
    return records


def precision_study(train_images: np.ndarray, test: np.ndarray, epochs: int, num_validation: int) -> dict:
    """The chapter recipe trained and evaluated at each matmul precision; test -ELBO in nats."""
    results, params = {}, {}
    x = jnp.asarray(test)
    for precision in ("highest", "default"):
        config = fit.Config().replace(epochs=epochs, num_validation=num_validation, matmul_precision=precision)
        result = fit.fit(config, train_images, progress=False)
        params[precision] = result.member_params(0)
        with jax.default_matmul_precision(None if precision == "default" else precision):
            elbo = metrics.elbo(throughput.CHAPTER, params[precision], x, jax.random.key(2), 10)
        results[precision] = {
            "test_negative_elbo_nats": -float(jnp.mean(elbo)),
            "train_seconds": result.seconds,
            "final_val_loss": float(result.final("val_loss")[0]),
        }
    with jax.default_matmul_precision(None):  # the 'highest' model evaluated at 'default'
        cross = -float(jnp.mean(metrics.elbo(throughput.CHAPTER, params["highest"], x, jax.random.key(2), 10)))
    results["highest_model_at_default"] = {"test_negative_elbo_nats": cross}
    results["difference_nats"] = (
        results["default"]["test_negative_elbo_nats"] - results["highest"]["test_negative_elbo_nats"]
    )
    results["evaluation_difference_nats"] = cross - results["highest"]["test_negative_elbo_nats"]
    return results


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"Device: {env['device_kind']} ({env['platform']}), {report['date']}, jax {env['jax_version']} / "
        f"jaxlib {env['jaxlib_version']}; large-matmul peak {report['matmul_peak_tflops']['highest']:.1f} TFLOP/s "
        f"(float32, 'highest'), {report['matmul_peak_tflops']['default']:.1f} ('default').",
        "",
        "| training | batch | models | examples/s | per model | GFLOP/s | % of peak | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["training"]:
        lines.append(
            f"| aejax scan epoch | {r['batch_size']:,} | {r['population']:,} | {r['examples_per_sec']:,.0f} | "
            f"{r['examples_per_sec_per_member']:,.0f} | {1e3 * r['tflops_per_sec']:,.0f} | "
            f"{100 * r['fraction_of_peak']:.1f}% | {r['compile_s']:.1f} |"
        )
    for r in report["peers"]:
        if "error" in r:
            lines.append(f"| {r['name']} | – | 1 | not measured: {r['error']} | | | | |")
        else:
            lines.append(
                f"| {r['name']} | {r['batch_size']:,} | 1 | {r['examples_per_sec']:,.0f} | | | | {r['compile_s']:.1f} |"
            )
    iwae = next(r for r in report["evaluation"] if r["name"] == "iwae_test_set")
    p = report["precision"]
    lines += [
        "",
        f"IWAE k = {iwae['k']:,} over {iwae['images']:,} test images: {iwae['seconds']:.2f} s "
        f"(first run with compilation {iwae['compile_and_first_run_s']:.1f} s).",
        f"Precision: test -ELBO {p['highest']['test_negative_elbo_nats']:.3f} nats trained and evaluated at "
        f"'highest', {p['default']['test_negative_elbo_nats']:.3f} at 'default' (difference "
        f"{p['difference_nats']:+.3f}); the 'highest' model evaluated at 'default': "
        f"{p['evaluation_difference_nats']:+.3f} nats.",
    ]
    return "\n".join(lines)


def load_cpu_json(parser: argparse.ArgumentParser, path: str) -> dict:
    """A CPU run's benchmarks.throughput --json, checked for what `ratios` reads, before any timing."""
    try:
        cpu = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        parser.error(f"--cpu-json {path!r} is not a readable JSON file ({err})")
    rows = cpu.get("results") if isinstance(cpu, dict) else None
    rows = (
        [r for r in rows if isinstance(r, dict) and r.get("name") == "vae_train_scan_epoch"]
        if isinstance(rows, list)
        else []
    )
    if not rows or not all(isinstance(r.get("examples_per_sec"), (int, float)) for r in rows):
        parser.error(
            f'--cpu-json {path!r} is not a benchmarks.throughput --json report: it needs "results" with '
            "vae_train_scan_epoch rows that have examples_per_sec"
        )
    return cpu


def ratios(report: dict, cpu: dict) -> dict:
    """The issue's targets against a CPU run of benchmarks.throughput (its --json file)."""
    cpu_rows = [r for r in cpu["results"] if r.get("name") == "vae_train_scan_epoch"]
    cpu_single = max(r["examples_per_sec"] for r in cpu_rows if r.get("population", 1) == 1)
    cpu_aggregate = max(r["examples_per_sec"] for r in cpu_rows)
    rows = report["training"]
    single = max(r["examples_per_sec"] for r in rows if r["population"] == 1)
    aggregate = max(r["examples_per_sec"] for r in rows)
    compiled = {r["batch_size"]: r["examples_per_sec"] for r in report["peers"] if r.get("name") == "torch_compile"}
    ahead = all(
        r["examples_per_sec"] > compiled[r["batch_size"]]
        for r in rows
        if r["population"] == 1 and r["batch_size"] in compiled
    )
    iwae = next(r for r in report["evaluation"] if r["name"] == "iwae_test_set")
    return {
        "single_model_vs_cpu": single / cpu_single,
        "population_vs_cpu_aggregate": aggregate / cpu_aggregate,
        "iwae_k5000_test_set_seconds": iwae["seconds"],
        "every_row_ahead_of_torch_compile": ahead,
        "precision_difference_nats": report["precision"]["difference_nats"],
    }


def main(argv: list[str] | None = None) -> int:
    runtime.configure()
    tolerant_output()  # a closed reader (`| head`) must not lose the JSON at the end
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--json", default=None, help="write the whole report to this JSON file")
    parser.add_argument("--cpu-json", default=None, help="a CPU run's benchmarks.throughput --json, for the ratios")
    parser.add_argument(
        "--peer-python", default=sys.executable, help="Python with torch for the peers (default: this one)"
    )
    parser.add_argument(
        "--peers", choices=("torch", "none"), default="torch", help="run the PyTorch peers (default: %(default)s)"
    )
    parser.add_argument("--dry-run", action="store_true", help="the whole suite at toy sizes (any device, ~1 min)")
    args = parser.parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    throughput.check_paths(parser, args)
    cpu = load_cpu_json(parser, args.cpu_json) if args.cpu_json else None
    try:
        train_images, _ = data.load_fashion_mnist("train", args.data_dir)
        test_images, _ = data.load_fashion_mnist("test", args.data_dir)
    except (OSError, ValueError) as err:
        parser.error(f"--data-dir: {err}")
    if args.dry_run:
        train_images, test_images = train_images[:256], test_images[: sizes["test_images"]]
    fit_images = data.to_unit_float(train_images[: -min(5000, len(train_images) // 4)])
    test = data.to_unit_float(test_images)
    environment = runtime.describe()
    device = jax.devices()[0]
    print(f"accelerator suite on {device.device_kind} ({device.platform}), jax {jax.__version__}", flush=True)

    peak = matmul_peak(sizes["matmul"], sizes["repeats"])
    print(f"  matmul peak: {peak}", flush=True)
    rows = training(fit_images, sizes["batch_sizes"], sizes["populations"], sizes["repeats"], peak["highest"])
    params = throughput.CHAPTER.init(jax.random.key(0))
    evaluation = sampling_and_iwae(params, test, sizes["iwae_k"], sizes["repeats"])
    print(f"  IWAE: {evaluation[-1]['seconds']:.2f} s", flush=True)
    precision = precision_study(train_images, test, sizes["epochs"], min(5000, len(train_images) // 4))
    peer_device = "cuda" if device.platform == "gpu" else "cpu"
    peer_examples = 8192 if args.dry_run else 55000
    peers = []
    for name in ("torch_eager", "torch_compile") if args.peers == "torch" else ():
        peers += throughput.run_peer(
            name,
            args.peer_python,
            [b for b in sizes["batch_sizes"] if b <= peer_examples],
            sizes["peer_epochs"],
            peer_examples,
            threads=os.cpu_count(),
            device=peer_device,
        )
    report = {
        "date": datetime.date.today().isoformat(),
        "environment": environment,
        "dry_run": args.dry_run,
        "matmul_peak_tflops": peak,
        "training": rows,
        "evaluation": evaluation,
        "precision": precision,
        "peers": peers,
        "likelihood_kinds": list(likelihoods.KINDS),
    }
    if cpu is not None:
        report["targets"] = ratios(report, cpu)
    print(markdown(report))
    if report.get("targets"):
        print(json.dumps(report["targets"], indent=2))
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
