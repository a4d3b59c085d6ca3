"""Throughput of aejax's training, sampling and evaluation, against its peers and the matmul ceiling.

    python -m benchmarks.throughput [--model mlp|conv --batch-sizes 128,1024 --epochs 3 --num-examples 55000
                                     --peers all --peer-python .venv-peers/bin/python --json out.json]

`--model`: the chapter's MLP VAE (default) or the conv VAE (aejax/models/conv.py); the peers train
the same model.

Training: median examples/s over `--epochs` timed epochs after one compile epoch, for (a) the
jitted `population.train_step` called once per batch from Python and (b) `population.train_epoch`, a whole
epoch in one `lax.scan` with the data on the device, for each `--population-sizes` P: P models
(seeds 0 … P-1) trained together in one compiled program, reported as aggregate and per-model
examples/s and the program's device memory (XLA's memory analysis). FLOPs per example come from
the compiled step's own cost analysis; for the MLP, the ceiling is the model's 20 matmuls (forward +
backward) in the model's own scanned-epoch structure with nothing else (`skeleton_epoch`), so it
bounds the model; the machine's float32 GEMM peak (a 2,048 x 2,048 product on all cores) is
measured in the same run.

Peers (benchmarks/peers/, installed by `make peers`): the same model, loss and optimiser in
Keras 3 via `model.fit` (TensorFlow backend, the chapter's code path, and JAX backend) and
PyTorch (eager and torch.compile), each in its own process with the same intra-op thread count.
Every training row shows its ratio to Keras/TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aejax import data, runtime
from aejax.evaluation import metrics
from aejax.io.files import check_writable, write_json
from aejax.io.streams import tolerant_output
from aejax.models import conv, linear_ae, mlp, vae
from aejax.training import population, recipes
from aejax.training.train import TrainState, run_epoch

# Hand count of the chapter VAE's matmul FLOPs per example (2 per multiply-add): forward through
# 784-150-100-(10+10) and 10-100-150-784 is 268,200 MACs; backward needs weight gradients for every
# layer and input gradients for all but the first, 2 x 268,200 - 117,600 MACs.
MATMUL_MACS_FORWARD = 784 * 150 + 150 * 100 + 100 * 20 + 10 * 100 + 100 * 150 + 150 * 784
HAND_FLOPS_PER_EXAMPLE = 2 * (3 * MATMUL_MACS_FORWARD - 784 * 150)

# name -> (module, --mode); keras_tensorflow_fit is the baseline of every ratio.
PEERS = {
    "keras_tensorflow_fit": ("benchmarks.peers.keras_vae", "tensorflow"),
    "keras_jax_fit": ("benchmarks.peers.keras_vae", "jax"),
    "torch_eager": ("benchmarks.peers.torch_vae", "eager"),
    "torch_compile": ("benchmarks.peers.torch_vae", "compile"),
}
BASELINE = "keras_tensorflow_fit"
GEMM_SIZE = 2048  # the machine's float32 matmul peak is measured on square products of this size
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Compile/warm-up call, then `repeats` timed calls; returns (first call seconds, timings)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        timings.append(time.perf_counter() - start)
    return first, timings


CHAPTER = mlp.MLP()
MODELS = {"mlp": CHAPTER, "conv": conv.Conv()}
CHAPTER_HYPER = {"beta": 1.0, "learning_rate": 1e-3}


def _fresh_state(params):
    return TrainState.create(jax.tree.map(jnp.copy, params), recipes.chapter_optimizer())


def _compiled_flops(batch_size: int, model: vae.Model = CHAPTER) -> float | None:
    state = _fresh_state(model.init(jax.random.key(0)))
    batch = jnp.zeros((batch_size, *model.image_shape))
    program = population.Program(model=model, batch_size=batch_size)
    lowered = population.train_step.lower(state, batch, jax.random.key(1), CHAPTER_HYPER, program=program)
    analysis = lowered.compile().cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) / batch_size if analysis and "flops" in analysis else None


def model_population(size: int, model: vae.Model = CHAPTER) -> tuple[TrainState, dict, jax.Array]:
    """`size` models (seeds 0 … size-1) with the chapter's recipe: stacked states, hyperparameters and epoch keys."""
    keys = population.member_keys(range(size))
    hyper = {name: jnp.full(size, value, jnp.float32) for name, value in CHAPTER_HYPER.items()}
    return population.init_states(keys["init"], model), hyper, keys["train"]


def _memory(compiled) -> int | None:
    """Device memory of a compiled program (arguments, outputs and temporaries), by XLA's analysis."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
        - analysis.alias_size_in_bytes
    )


# The chapter VAE's weight matrices, in the order `skeleton_loss` uses them.
MATMUL_SHAPES = [(784, 150), (150, 100), (100, 10), (100, 10), (10, 100), (100, 150), (150, 784)]


def skeleton_loss(weights: list[jax.Array], x: jax.Array, noise: jax.Array) -> jax.Array:
    """The VAE's forward matmuls with nothing between them: x (B, 784) -> 150 -> 100 -> (mean, log_var)
    -> z (B, 10) -> 100 -> 150 -> 784; its gradient needs exactly the VAE step's 13 backward matmuls.

    z = mean + log_var * noise keeps the two heads' input gradients two matmuls, as in the model
    (a sum of two products of one operand could be folded into one). The quadratic loss makes the
    output's gradient data that needs the last forward matmul (a linear loss would let XLA drop it).
    """
    encoder_1, encoder_2, mean_head, log_var_head, decoder_1, decoder_2, decoder_3 = weights
    h = x @ encoder_1 @ encoder_2
    z = h @ mean_head + (h @ log_var_head) * noise
    return 0.5 * jnp.mean(jnp.sum(jnp.square(z @ decoder_1 @ decoder_2 @ decoder_3), axis=-1))


def skeleton_step(state: TrainState, batch: jax.Array, key: jax.Array, weights: jax.Array):
    """One step of the matmul skeleton in `aejax.training.train.run_epoch`'s step signature: the 20 matmuls of
    a VAE step and an SGD update (the weights must change every step, or XLA would hoist the
    forward matmuls out of the loop)."""
    x = batch.reshape(batch.shape[0], -1)
    value, grads = jax.value_and_grad(skeleton_loss)(state.params, x, jnp.ones((x.shape[0], 10), x.dtype))
    params = [w - 1e-9 * g for w, g in zip(state.params, grads)]
    return state.replace(step=state.step + 1, params=params), {"loss": value}


@functools.partial(jax.jit, static_argnames=("batch_size",))
def skeleton_epoch(state: TrainState, images: jax.Array, key: jax.Array, batch_size: int):
    """The matmul skeleton's epoch in the model's own scanned-epoch structure (`run_epoch`: the same
    shuffle, batch gather and `lax.scan`), so it does a subset of the model's work."""
    return run_epoch(skeleton_step, state, images, key, batch_size)


def _matmul_ceiling(images: jax.Array, batch_size: int, repeats: int) -> float:
    """Examples/s of `skeleton_epoch`: the model's matmuls and epoch structure, nothing else."""
    weights = [jnp.full(shape, 1e-3) for shape in MATMUL_SHAPES]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=weights, opt_state=())
    _, timings = _time(lambda: skeleton_epoch(state, images, jax.random.key(0), batch_size), repeats)
    return images.shape[0] / statistics.median(timings)


def gemm_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul rate with all cores: a (size x size) @ (size x size) product,
    median of `repeats` after a warm-up; GFLOP/s (2 size^3 per product)."""
    a = jax.random.uniform(jax.random.key(0), (size, size))
    b = jax.random.uniform(jax.random.key(1), (size, size))
    product = jax.jit(jnp.matmul)
    _, timings = _time(lambda: product(a, b), repeats)
    return 2 * size**3 / statistics.median(timings) / 1e9


def benchmark_vae_training(
    images: jax.Array, batch_size: int, repeats: int, population_sizes: list[int] = (1,), model: vae.Model = CHAPTER
) -> list[dict]:
    """The scanned epoch for each population size (one compiled program: `population.train_epoch`), and a
    single model's jitted step called once per batch from Python. Compilation is timed apart."""
    n = images.shape[0]
    program = population.Program(model=model, batch_size=batch_size)
    records = []
    for size in population_sizes:
        states, hyper, keys = model_population(size, model)
        start = time.perf_counter()
        compiled = population.train_epoch.lower(states, hyper, images, keys, program).compile()
        compile_s = time.perf_counter() - start
        _, timings = _time(lambda: compiled(model_population(size, model)[0], hyper, images, keys), repeats)
        median = statistics.median(timings)
        records.append(
            {
                "name": "vae_train_scan_epoch",
                "batch_size": batch_size,
                "population": size,
                "compile_s": compile_s,
                "timings_s": timings,
                "examples_per_sec": size * n / median,
                "examples_per_sec_per_member": n / median,
                "program_bytes": _memory(compiled),
            }
        )

    state = _fresh_state(model.init(jax.random.key(0)))
    num_batches = n // batch_size
    batches = [images[i * batch_size : (i + 1) * batch_size] for i in range(num_batches)]

    def per_step_epoch():
        nonlocal state
        for i, batch in enumerate(batches):
            state, step_metrics = population.train_step(state, batch, jax.random.key(i), CHAPTER_HYPER, program=program)
        return step_metrics

    compile_s, timings = _time(per_step_epoch, repeats)
    records.append(
        {
            "name": "vae_train_step_per_batch",
            "batch_size": batch_size,
            "population": 1,
            "compile_s": compile_s,
            "timings_s": timings,
            "examples_per_sec": num_batches * batch_size / statistics.median(timings),
        }
    )
    return records


def benchmark_sampling_and_eval(
    images: jax.Array, batch_size: int, repeats: int, model: vae.Model = CHAPTER
) -> list[dict]:
    params = model.init(jax.random.key(0))
    batch = images[:batch_size]
    cases = {
        "vae_generate": (lambda: vae.generate(model, params, jax.random.key(2), batch_size), batch_size),
        "vae_elbo": (lambda: metrics.elbo(model, params, batch, jax.random.key(3)), batch_size),
        "vae_iwae_k50": (lambda: metrics.iwae_bound(model, params, batch, jax.random.key(4), 50), batch_size),
    }
    records = []
    for name, (fn, count) in cases.items():
        compile_s, timings = _time(fn, repeats)
        records.append(
            {
                "name": name,
                "batch_size": batch_size,
                "compile_s": compile_s,
                "timings_s": timings,
                "examples_per_sec": count / statistics.median(timings),
            }
        )
    return records


def benchmark_linear_ae(repeats: int) -> dict:
    x = data.synthetic_3d(6000)
    epochs = 20
    compile_s, timings = _time(lambda: linear_ae.train(x, key=jax.random.key(0), epochs=epochs)[1]["loss"], repeats)
    return {
        "name": "linear_ae_train",
        "batch_size": 32,
        "compile_s": compile_s,
        "timings_s": timings,
        "examples_per_sec": len(x) * epochs / statistics.median(timings),
    }


def run_peer(
    name: str,
    python: str,
    batch_sizes: list[int],
    epochs: int,
    num_examples: int,
    threads: int,
    device: str = "cpu",
    model: str = "mlp",
) -> list[dict]:
    """Runs one peer in its own process, training `model` ("mlp" or "conv"); its records, or one
    record with an "error" if it failed."""
    module, mode = PEERS[name]
    command = [
        python,
        "-m",
        module,
        "--mode",
        mode,
        "--model",
        model,
        "--threads",
        str(threads),
        "--epochs",
        str(epochs),
        "--num-examples",
        str(num_examples),
        "--batch-sizes",
        ",".join(map(str, batch_sizes)),
        "--device",
        device,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2")
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as err:
        return [{"name": name, "error": str(err)}]
    if done.returncode != 0:
        missing = "No module named" in done.stderr
        hint = (
            "peer frameworks not installed: run `make peers` and pass --peer-python .venv-peers/bin/python"
            if missing
            else ""
        )
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return [{"name": name, "error": hint or f"exit {done.returncode}: {tail[0]}"}]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return [
        dict(
            {"device": "cpu"},
            **record,
            name=name,
            framework_version=report["framework_version"],
            threads=report["threads"],
            gflops_per_sec=record["examples_per_sec"] * HAND_FLOPS_PER_EXAMPLE / 1e9 if model == "mlp" else None,
        )
        for record in report["records"]
    ]


def _parse_list(parser: argparse.ArgumentParser, flag: str, text: str, choices=None) -> list:
    items = [item for item in text.split(",") if item]
    if choices is not None:
        unknown = sorted(set(items) - set(choices))
        if unknown:
            parser.error(
                f"{flag} must be 'all', 'none' or a comma-separated subset of {sorted(choices)}, got {unknown}"
            )
        return items
    try:
        return [int(item) for item in items]
    except ValueError:
        parser.error(f"{flag} must be integers separated by commas, got {text!r}")


def _label(record: dict) -> str:
    population = record.get("population", 1)
    return record["name"] if population == 1 else f"{record['name']} x{population}"


def print_table(results: list[dict], hand_count: bool = True) -> None:
    """Training rows with ratios to Keras/TensorFlow, % of the matmul ceiling and % of the machine's
    GEMM peak (the MLP's hand-counted matmul FLOPs; `hand_count=False` for other models leaves both
    out); population rows with their aggregate and per-member examples/s and the ratio to one model
    in the same run."""
    peak = next((r["gflops_per_sec"] for r in results if r["name"] == "gemm_peak"), None)
    if peak:
        print(f"float32 GEMM peak of this machine ({GEMM_SIZE} x {GEMM_SIZE}, all cores): {peak:.1f} GFLOP/s")
    by_batch: dict[int, dict[str, dict]] = {}
    for r in results:
        if "batch_size" in r:
            by_batch.setdefault(r["batch_size"], {})[_label(r)] = r
    print(
        f"{'name':32s} {'batch':>6s} {'examples/s':>12s} {'per model':>10s} {'vs 1 model':>10s} "
        f"{'vs Keras/TF':>12s} {'% ceiling':>10s} {'% peak':>7s} {'GFLOP/s':>8s} {'compile s':>10s} {'program MB':>10s}"
    )
    for batch_size, rows in by_batch.items():
        baseline = rows.get(BASELINE, {}).get("examples_per_sec")
        ceiling = rows.get("matmul_only_ceiling", {}).get("examples_per_sec")
        single = rows.get("vae_train_scan_epoch", {}).get("examples_per_sec")
        for label, r in rows.items():
            speed = r.get("examples_per_sec")
            training = r["name"].startswith("vae_train") or r["name"] in PEERS
            ratio = f"{speed / baseline:11.2f}x" if training and speed and baseline else ""
            frac = f"{100 * speed / ceiling:9.0f}%" if training and speed and ceiling else ""
            matmul_rate = speed * HAND_FLOPS_PER_EXAMPLE / 1e9 if speed and hand_count else None
            counted = training or r["name"] == "matmul_only_ceiling"  # rows that do the training step's FLOPs
            of_peak = f"{100 * matmul_rate / peak:6.0f}%" if peak and matmul_rate and counted else ""
            versus = f"{speed / single:9.2f}x" if r["name"] == "vae_train_scan_epoch" and speed and single else ""
            per = r.get("examples_per_sec_per_member")
            shown = f"{speed:12,.0f}" if speed else f"{'n/a':>12s}"
            compile_s, gflops, size = r.get("compile_s"), r.get("gflops_per_sec"), r.get("program_bytes")
            print(
                f"{label:32s} {batch_size:6d} {shown} {'' if per is None else f'{per:10,.0f}':>10s} {versus:>10s} "
                f"{ratio:>12s} {frac:>10s} {of_peak:>7s} {'' if gflops is None else f'{gflops:8.1f}':>8s} "
                f"{'' if compile_s is None else f'{compile_s:10.2f}':>10s} "
                f"{'' if size is None else f'{size / 2**20:10.0f}':>10s}"
            )
    for r in results:
        if "error" in r:
            print(f"{r['name']}: not measured ({r['error']})")


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The output file and the peers' Python, checked before any timing (a suite runs for minutes)."""
    problem = check_writable(args.json) if args.json else None
    if problem:
        parser.error(f"--json {args.json!r} {problem}")
    if not (os.path.isfile(args.peer_python) and os.access(args.peer_python, os.X_OK)):
        parser.error(f"--peer-python {args.peer_python!r} is not an executable file")


def main(argv: list[str] | None = None) -> int:
    tolerant_output()  # a closed reader (`| head`) must not lose the JSON at the end
    runtime.configure()  # before JAX's backend starts; see aejax/runtime.py
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default="mlp",
        choices=sorted(MODELS),
        help="the VAE to time, aejax's and the peers': the chapter's MLP or the conv VAE (default: %(default)s)",
    )
    parser.add_argument("--batch-sizes", default="128,1024", help="comma-separated batch sizes (default: %(default)s)")
    parser.add_argument(
        "--population-sizes",
        default="1,4,16,64",
        help="comma-separated numbers of models trained together in one program (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="timed epochs/repeats per measurement, median reported (default: %(default)s)",
    )
    parser.add_argument(
        "--num-examples", type=int, default=55000, help="training examples per epoch (default: %(default)s)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="Fashion-MNIST IDX directory; default: random images of the same shape"
    )
    parser.add_argument(
        "--peers",
        default="all",
        help=f"'all', 'none' or a comma-separated subset of {list(PEERS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--peer-python",
        default=sys.executable,
        help="Python with the peer frameworks, e.g. .venv-peers/bin/python (default: this one)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="intra-op threads for every peer; XLA uses one per core (default: %(default)s)",
    )
    parser.add_argument("--json", default=None, help="write all raw timings to this JSON file")
    args = parser.parse_args(argv)
    batch_sizes = _parse_list(parser, "--batch-sizes", args.batch_sizes)
    population_sizes = _parse_list(parser, "--population-sizes", args.population_sizes)
    peers = (
        list(PEERS)
        if args.peers == "all"
        else []
        if args.peers == "none"
        else _parse_list(parser, "--peers", args.peers, PEERS)
    )
    if not batch_sizes or min(batch_sizes) <= 0 or args.epochs <= 0 or args.threads <= 0:
        parser.error(
            f"--batch-sizes, --epochs and --threads must be positive, got {args.batch_sizes!r}, {args.epochs}, {args.threads}"
        )
    if not population_sizes or min(population_sizes) <= 0:
        parser.error(f"--population-sizes must be positive integers, got {args.population_sizes!r}")
    if args.num_examples < max(batch_sizes):
        parser.error(
            f"--num-examples must be at least the largest batch size {max(batch_sizes)}, got {args.num_examples}"
        )

    check_paths(parser, args)
    if args.data_dir:
        try:
            train_images, _ = data.load_fashion_mnist("train", args.data_dir)
        except (OSError, ValueError) as err:
            parser.error(f"--data-dir: {err}")
        images = np.resize(data.to_unit_float(train_images), (args.num_examples, 28, 28))
    else:  # Timing does not depend on pixel values.
        images = np.random.default_rng(0).random((args.num_examples, 28, 28), dtype=np.float32)
    images = jnp.asarray(images)
    device = jax.devices()[0]
    model, chapter = MODELS[args.model], args.model == "mlp"
    peak = gemm_peak_gflops(GEMM_SIZE, max(3, args.epochs))
    results = [{"name": "gemm_peak", "matrix_size": GEMM_SIZE, "gflops_per_sec": peak}]
    for batch_size in batch_sizes:
        flops = _compiled_flops(batch_size, model)
        if chapter:  # the matmul skeleton and the hand count are the MLP's
            ceiling = _matmul_ceiling(images, batch_size, args.epochs)
            results.append(
                {
                    "name": "matmul_only_ceiling",
                    "batch_size": batch_size,
                    "examples_per_sec": ceiling,
                    "gflops_per_sec": ceiling * HAND_FLOPS_PER_EXAMPLE / 1e9,
                }
            )
        for record in benchmark_vae_training(images, batch_size, args.epochs, population_sizes, model):
            record["flops_per_example_compiled"] = flops
            record["gflops_per_sec"] = (
                record["examples_per_sec"] * (flops or HAND_FLOPS_PER_EXAMPLE) / 1e9 if chapter or flops else None
            )
            if chapter:
                record["fraction_of_matmul_ceiling"] = record["examples_per_sec"] / ceiling
                record["fraction_of_gemm_peak"] = record["examples_per_sec"] * HAND_FLOPS_PER_EXAMPLE / 1e9 / peak
            results.append(record)
        results.extend(benchmark_sampling_and_eval(images, batch_size, args.epochs, model))
    if chapter:
        results.append(benchmark_linear_ae(args.epochs))
    for record in results:
        record["device"] = device.device_kind
        record["model"] = args.model
    if peers and device.platform != "cpu":
        print(f"note: peers run on the CPU (their CPU builds), aejax on {device.device_kind}")
    for name in peers:
        results.extend(
            run_peer(
                name, args.peer_python, batch_sizes, args.epochs, args.num_examples, args.threads, model=args.model
            )
        )

    print(f"model: {args.model} ({vae.describe(model)})")
    print_table(results, hand_count=chapter)
    if args.json:
        payload = {
            "device": device.device_kind,
            "platform": device.platform,
            "jax_version": jax.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "peer_threads": args.threads,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "model": args.model,
            "hand_flops_per_example": HAND_FLOPS_PER_EXAMPLE if chapter else None,
            "results": results,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
