"""What every peer script shares: its flags, synthetic data and the one JSON line it prints.

A peer runs in its own process, imports only its own framework (never JAX), trains `--model`
(the chapter's MLP VAE, or aejax's conv VAE) for `--epochs` timed epochs after one warm-up epoch, and prints one JSON object on its last
stdout line: {"name", "framework_version", "threads", "records": [{"batch_size", "timings_s",
"compile_s", "examples_per_sec"}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable

import numpy as np

# The models, shared by the peers. mlp, the chapter's: encoder 784-150-100-(10, 10), decoder
# 10-100-150-784. conv, aejax/models/conv.py's: stride-2 3x3 convolutions 1-16-32-64 (28 -> 14 -> 7
# -> 4), Dense to (10, 10); Dense to 4x4x64, stride-2 transposed 3x3 convolutions 64-32-16-1, each
# cropped to the encoder's size (8 -> 7, 14, 28).
MODELS = ("mlp", "conv")
HIDDEN_SIZES = (150, 100)
CHANNELS = (16, 32, 64)
FEATURE_SIDES = (28, 14, 7, 4)  # the encoder's feature maps, input first
LATENT_DIM = 10
SIDE, PIXELS = 28, 784
# Keras' RMSprop defaults, as in the chapter.
LEARNING_RATE, RHO, EPSILON = 1e-3, 0.9, 1e-7


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--batch-sizes", default="128", help="comma-separated batch sizes")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    parser.add_argument("--num-examples", type=int, default=55000, help="training examples per epoch")
    parser.add_argument("--threads", type=int, required=True, help="intra-op threads (inter-op: 1)")
    parser.add_argument("--mode", default=None, help="framework-specific variant")
    parser.add_argument("--model", default="mlp", choices=MODELS, help="which VAE to train")
    parser.add_argument("--device", default="cpu", help="where to train: cpu, or cuda where the framework has it")
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if min(args.batch_sizes) <= 0 or args.epochs <= 0 or args.num_examples < max(args.batch_sizes):
        parser.error("batch sizes and --epochs must be positive, --num-examples at least the largest batch size")
    return args


def images(num_examples: int) -> np.ndarray:
    """(N, 784) float32 in [0, 1]: timing does not depend on pixel values."""
    return np.random.default_rng(0).random((num_examples, PIXELS), dtype=np.float32)


def record(batch_size: int, num_examples: int, compile_s: float, timings: list[float]) -> dict:
    """One measurement: examples/s from the median of the timed epochs."""
    return {
        "batch_size": batch_size,
        "compile_s": compile_s,
        "timings_s": timings,
        "examples_per_sec": num_examples / statistics.median(timings),
    }


def time_epochs(run_epoch: Callable[[], None], epochs: int, num_examples: int, batch_size: int) -> dict:
    """One warm-up (compile) epoch, then `epochs` timed ones."""
    start = time.perf_counter()
    run_epoch()
    compile_s = time.perf_counter() - start
    timings = []
    for _ in range(epochs):
        start = time.perf_counter()
        run_epoch()
        timings.append(time.perf_counter() - start)
    return record(batch_size, num_examples, compile_s, timings)


def emit(name: str, framework_version: str, threads: int, records: list[dict]) -> None:
    sys.stdout.write(
        json.dumps({"name": name, "framework_version": framework_version, "threads": threads, "records": records})
        + "\n"
    )
