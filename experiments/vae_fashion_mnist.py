"""Chapter 17's variational autoencoder on Fashion-MNIST: train, generate, interpolate, evaluate.

    python -m experiments.vae_fashion_mnist [--recipe chapter|improved --epochs 25 --batch-size 128
                                             --seed 42 --data-dir DIR --out runs/vae --resume]

Trains on the first 55,000 training images, validates on the last 5,000 (as the chapter), and
writes metrics.json, the chapter's figures, reconstructions, learning curves and params.msgpack.

Every epoch ends with a checkpoint in <out>/checkpoints (the last --keep-checkpoints kept);
--resume continues from the newest readable one, bit for bit as if never interrupted.
With several devices the batch is split over all of them (data parallelism). Several hosts:
start one process per host with --coordinator-address HOST:PORT --num-processes N --process-id I
(or AEJAX_COORDINATOR_ADDRESS / AEJAX_NUM_PROCESSES / AEJAX_PROCESS_ID); each keeps only its
rows of the training set, process 0 writes the outputs, and --out must be on a shared filesystem
for --resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
import warnings
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from aejax import checkpoint, data, parallel, plotting, vae
from aejax.checks import check_positive_int
from aejax.train import TrainState, epoch_key
from aejax.files import write_bytes, write_json
from experiments.common import config_from_args, config_parser, prepare_out_dir

RECIPES = ("chapter", "improved")
# Settings a resumed run must share with its checkpoints (epochs and learning rate may change).
RUN_DEFINING = ("recipe", "batch_size", "beta", "num_validation", "seed")


@dataclasses.dataclass(frozen=True)
class Config:
    recipe: str = dataclasses.field(default="chapter", metadata={"choices": RECIPES})
    epochs: int = 25
    batch_size: int = 128
    beta: float = 1.0
    num_validation: int = 5000
    learning_rate: float | None = None
    seed: int = 42
    data_dir: str | None = None
    out: str = "runs/vae"
    resume: bool = False
    keep_checkpoints: int = 3
    coordinator_address: str | None = None
    num_processes: int = 1
    process_id: int = 0


HELP = {
    "recipe": "'chapter': Keras RMSprop defaults as in the book; 'improved': Adam with warm-up + cosine decay",
    "epochs": "training epochs",
    "batch_size": "minibatch size",
    "beta": "weight of the KL term (beta-VAE); 1 is the chapter's VAE",
    "num_validation": "the last N training images are held out for validation",
    "learning_rate": "peak learning rate (default: the recipe's, 1e-3 chapter / 4e-3 improved)",
    "seed": "seed of the root JAX key (init, sampling, shuffling, figures)",
    "data_dir": "directory with the four Fashion-MNIST IDX .gz files (default: Debian's package, else TFDS)",
    "out": "output directory for metrics.json, figures, params.msgpack and checkpoints/",
    "resume": "continue from the newest readable checkpoint in <out>/checkpoints",
    "keep_checkpoints": "how many per-epoch checkpoints to keep",
    "coordinator_address": "multi-host: HOST:PORT of process 0 (env AEJAX_COORDINATOR_ADDRESS)",
    "num_processes": "multi-host: number of processes (env AEJAX_NUM_PROCESSES)",
    "process_id": "multi-host: this process's index, 0..N-1 (env AEJAX_PROCESS_ID)",
}


def make_optimizer(
    recipe: str, steps_per_epoch: int, epochs: int, learning_rate: float | None = None
) -> optax.GradientTransformation:
    """The chapter's RMSprop, or the improved recipe's Adam with a warm-up + cosine schedule."""
    if recipe == "chapter":
        return vae.chapter_optimizer() if learning_rate is None else vae.chapter_optimizer(learning_rate)
    if recipe == "improved":
        peak = 4e-3 if learning_rate is None else learning_rate
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=peak, warmup_steps=steps_per_epoch,
            decay_steps=steps_per_epoch * epochs, end_value=peak * 0.01,
        )
        return optax.adam(schedule)
    raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")


def _validate(config: Config, num_train_images: int) -> None:
    check_positive_int("--epochs", config.epochs)
    check_positive_int("--batch-size", config.batch_size)
    check_positive_int("--num-validation", config.num_validation)
    check_positive_int("--keep-checkpoints", config.keep_checkpoints)
    if config.learning_rate is not None and not config.learning_rate > 0:
        raise ValueError(f"--learning-rate must be a positive number, got {config.learning_rate}")
    if config.num_validation >= num_train_images:
        raise ValueError(
            f"--num-validation must be smaller than the {num_train_images} training images, got {config.num_validation}"
        )
    if config.batch_size > num_train_images - config.num_validation:
        raise ValueError(
            f"--batch-size must be at most the {num_train_images - config.num_validation} training examples, "
            f"got {config.batch_size}"
        )


def _floats(metrics: dict) -> dict[str, float]:
    return {name: float(value) for name, value in parallel.to_host(metrics).items()}


def train(config: Config, train_images: np.ndarray, key: jax.Array, out: Path):
    """Trains with a progress bar and per-epoch checkpoints; returns (params, history, seconds, N).

    Raises FloatingPointError naming the epoch and step of a non-finite loss (the last good
    checkpoint stays in place).
    """
    fit_images, val_images = data.train_validation_split(data.to_unit_float(train_images), config.num_validation)
    num_fit = len(fit_images)
    steps_per_epoch = -(-num_fit // config.batch_size)
    init_key, train_key, eval_key = jax.random.split(key, 3)
    state = TrainState.create(
        apply_fn=None, params=vae.init(init_key, vae.VAEConfig(beta=config.beta)),
        tx=make_optimizer(config.recipe, steps_per_epoch, config.epochs, config.learning_rate),
    )
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_bce": [], "val_kl": [], "val_rounded_accuracy": []}
    checkpoint_dir, start_epoch = out / "checkpoints", 0
    if config.resume:
        restored = checkpoint.restore_latest(checkpoint_dir, state)
        if restored is None:
            print(f"--resume: no readable checkpoint in {checkpoint_dir}; starting from epoch 1", file=sys.stderr)
        else:
            state, start_epoch, extra = restored
            history = extra["history"]
            changed = {k: (v, getattr(config, k)) for k, v in extra["run"].items() if getattr(config, k) != v}
            if changed:
                raise ValueError(
                    f"--resume: the checkpoints in {checkpoint_dir} come from a run with different settings "
                    + ", ".join(f"--{k.replace('_', '-')} {old!r} (now {new!r})" for k, (old, new) in changed.items())
                    + "; pass the same values or use another --out"
                )
            if start_epoch > config.epochs:
                raise ValueError(f"--epochs {config.epochs} is less than the {start_epoch} epochs already in {checkpoint_dir}")

    # One device: plain arrays. Several (or several processes): replicated state, row-sharded data.
    mesh = parallel.data_mesh() if jax.device_count() > 1 else None
    if mesh is None:
        fit_data, val_data = jnp.asarray(fit_images), jnp.asarray(val_images)
    else:
        parallel.check_batch_size(config.batch_size, mesh)
        state = parallel.replicate(state, mesh)
        fit_data = parallel.shard_rows(fit_images[parallel.process_rows(num_fit, mesh)], num_fit, mesh)
        val_data = parallel.replicate(val_images, mesh)
    del fit_images  # the float copy: only this process's rows stay, on its devices

    writer = jax.process_index() == 0
    run_settings = {k: getattr(config, k) for k in RUN_DEFINING}
    start = time.perf_counter()
    bar = tqdm(range(start_epoch, config.epochs), desc=f"VAE ({config.recipe})", unit="epoch", file=sys.stdout,
               dynamic_ncols=True, initial=start_epoch, total=config.epochs, disable=not writer)
    for epoch in bar:
        state, train_metrics = vae.train_epoch(
            state, fit_data, epoch_key(train_key, epoch), config.batch_size, config.beta, mesh, num_fit
        )
        # A fixed evaluation key: validation curves differ only through the parameters.
        val = _floats(vae.evaluate(state.params, val_data, eval_key, beta=config.beta))
        train_metrics = _floats(train_metrics)
        bad_step = int(train_metrics.pop("first_nonfinite_step"))
        if bad_step >= 0 or not np.isfinite(train_metrics["loss"]) or not np.isfinite(val["loss"]):
            where = f"step {bad_step + 1} of {steps_per_epoch}" if bad_step >= 0 else "validation"
            kept = checkpoint.list_checkpoints(checkpoint_dir)
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch + 1}, {where}; training stopped. "
                + (f"The last good checkpoint is {kept[-1]} (--resume continues from it). " if kept else "")
                + "Lower --learning-rate or check the input data."
            )
        history["loss"].append(train_metrics["loss"])
        for name, value in val.items():
            history[f"val_{name}"].append(value)
        if writer:
            checkpoint.save(checkpoint_dir, epoch + 1, state, {"history": history, "run": run_settings},
                            keep=config.keep_checkpoints)
        bar.set_postfix(loss=f"{train_metrics['loss']:.4f}", val_loss=f"{val['loss']:.4f}",
                        val_acc=f"{val['rounded_accuracy']:.4f}")
    seconds = time.perf_counter() - start
    return parallel.to_host(state.params), history, seconds, num_fit * (config.epochs - start_epoch)


def figures(params, test_images: np.ndarray, key: jax.Array, out: Path, history: dict) -> None:
    """The chapter's generated and interpolated images, plus reconstructions and learning curves."""
    generate_key, grid_key, reconstruction_key = jax.random.split(key, 3)
    generated = np.asarray(vae.generate(params, generate_key, 12))
    plotting.save_figure(plotting.image_grid(generated, 4), out / "vae_generated_images_plot.png")

    codings = jax.random.normal(grid_key, (12, vae.latent_dim(params)))
    interpolated = np.asarray(vae.decode(params, vae.interpolate_codings(codings, (3, 4), (5, 7))))
    originals = [row * 7 + col for row in range(0, 5, 2) for col in range(0, 7, 2)]  # the chapter's frames
    plotting.save_figure(plotting.image_grid(interpolated, 7, framed=originals), out / "semantic_interpolation_plot.png")

    originals_x = data.to_unit_float(test_images[:10])
    mean, log_var = vae.encode(params, originals_x)
    reconstructed = np.asarray(vae.decode(params, vae.sample_latent(reconstruction_key, mean, log_var)))
    plotting.save_figure(plotting.reconstructions(originals_x, reconstructed), out / "vae_reconstructions_plot.png")
    plotting.save_figure(
        plotting.learning_curves(history, ["loss", "val_loss"], "loss (BCE per pixel + KL/784)"),
        out / "vae_learning_curves.png",
    )


def run(config: Config) -> dict:
    train_images, _ = data.load_fashion_mnist("train", config.data_dir)
    test_images, _ = data.load_fashion_mnist("test", config.data_dir)
    _validate(config, len(train_images))
    out = prepare_out_dir(config.out)
    key = jax.random.key(config.seed)
    train_key, test_key, figure_key = jax.random.split(key, 3)

    params, history, seconds, num_trained = train(config, train_images, train_key, out)
    test = _floats(vae.evaluate(params, jnp.asarray(data.to_unit_float(test_images)), test_key, beta=config.beta))
    params_bytes = flax.serialization.to_bytes(params)
    metrics = {
        "config": dataclasses.asdict(config),
        "device": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "history": history,
        "final_val_loss": history["val_loss"][-1],
        "final_val_rounded_accuracy": history["val_rounded_accuracy"][-1],
        "test": test,
        "train_wall_seconds": seconds,
        "train_examples_per_sec": num_trained / seconds if num_trained else None,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "params_sha256": hashlib.sha256(params_bytes).hexdigest(),  # equal digests: bitwise-equal params
    }
    if jax.process_index() == 0:
        figures(params, test_images, figure_key, out, history)
        write_bytes(out / "params.msgpack", params_bytes)
        write_json(out / "metrics.json", metrics)
    return metrics


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(Config, HELP, __doc__)
    try:
        cluster_env = parallel.Cluster.from_environment()
    except ValueError as err:
        parser.error(str(err))
    parser.set_defaults(**dataclasses.asdict(cluster_env))
    config = config_from_args(Config, parser.parse_args(argv))
    try:
        parallel.initialize(parallel.Cluster(config.coordinator_address, config.num_processes, config.process_id))
        with warnings.catch_warnings():
            warnings.simplefilter("always", checkpoint.CheckpointWarning)
            warnings.showwarning = _warn_to_stderr
            metrics = run(config)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"VAE ({config.recipe}): val_loss {metrics['final_val_loss']:.4f} (chapter 0.3133), val rounded accuracy "
        f"{metrics['final_val_rounded_accuracy']:.4f} (chapter 0.9228), training {metrics['train_wall_seconds']:.1f} s "
        f"-> {config.out}; params sha256 {metrics['params_sha256']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
