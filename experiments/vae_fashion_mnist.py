"""Chapter 17's variational autoencoder on Fashion-MNIST: train, generate, interpolate, evaluate.

    python -m experiments.vae_fashion_mnist [--recipe chapter|improved --epochs 25 --batch-size 128
                                             --seed 42 --data-dir DIR --out runs/vae]

Trains on the first 55,000 training images, validates on the last 5,000 (as the chapter), and
writes metrics.json, the chapter's figures, reconstructions, learning curves and params.msgpack.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from aejax import data, plotting, runtime, vae
from aejax.train import TrainState, check_positive_int, epoch_key
from experiments.common import add_config_flags, config_from_args, prepare_out_dir, write_bytes, write_json

RECIPES = ("chapter", "improved")


@dataclasses.dataclass(frozen=True)
class Config:
    recipe: str = dataclasses.field(default="chapter", metadata={"choices": RECIPES})
    epochs: int = 25
    batch_size: int = 128
    beta: float = 1.0
    num_validation: int = 5000
    seed: int = 42
    data_dir: str | None = None
    out: str = "runs/vae"


HELP = {
    "recipe": "'chapter': Keras RMSprop defaults as in the book; 'improved': Adam with warm-up + cosine decay",
    "epochs": "training epochs",
    "batch_size": "minibatch size",
    "beta": "weight of the KL term (beta-VAE); 1 is the chapter's VAE",
    "num_validation": "the last N training images are held out for validation",
    "seed": "seed of the root JAX key (init, sampling, shuffling, figures)",
    "data_dir": "directory with the four Fashion-MNIST IDX .gz files (default: Debian's package, else TFDS)",
    "out": "output directory for metrics.json, figures and params.msgpack",
}


def make_optimizer(recipe: str, steps_per_epoch: int, epochs: int) -> optax.GradientTransformation:
    """The chapter's RMSprop, or the improved recipe's Adam with a warm-up + cosine schedule."""
    if recipe == "chapter":
        return vae.chapter_optimizer()
    if recipe == "improved":
        peak = 4e-3
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
    return {name: float(value) for name, value in metrics.items()}


def train(config: Config, train_images: np.ndarray, key: jax.Array):
    """Trains with a progress bar; returns (params, history, seconds). Raises FloatingPointError on NaN."""
    fit_images, val_images = data.train_validation_split(data.to_unit_float(train_images), config.num_validation)
    fit_images, val_images = jnp.asarray(fit_images), jnp.asarray(val_images)
    steps_per_epoch = -(-len(fit_images) // config.batch_size)
    init_key, train_key, eval_key = jax.random.split(key, 3)
    state = TrainState.create(
        apply_fn=None, params=vae.init(init_key, vae.VAEConfig(beta=config.beta)),
        tx=make_optimizer(config.recipe, steps_per_epoch, config.epochs),
    )
    history: dict[str, list[float]] = {"loss": [], "val_loss": [], "val_bce": [], "val_kl": [], "val_rounded_accuracy": []}
    start = time.perf_counter()
    bar = tqdm(range(config.epochs), desc=f"VAE ({config.recipe})", unit="epoch", file=sys.stdout, dynamic_ncols=True)
    for epoch in bar:
        state, train_metrics = vae.train_epoch(
            state, fit_images, epoch_key(train_key, epoch), config.batch_size, config.beta
        )
        # A fixed evaluation key: validation curves differ only through the parameters.
        val = _floats(vae.evaluate(state.params, val_images, eval_key, beta=config.beta))
        train_loss = float(train_metrics["loss"])
        if not np.isfinite(train_loss) or not np.isfinite(val["loss"]):
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch + 1} (train {train_loss}, validation {val['loss']}); "
                "training stopped — lower the learning rate or check the input data"
            )
        history["loss"].append(train_loss)
        for name, value in val.items():
            history[f"val_{name}"].append(value)
        bar.set_postfix(loss=f"{train_loss:.4f}", val_loss=f"{val['loss']:.4f}", val_acc=f"{val['rounded_accuracy']:.4f}")
    seconds = time.perf_counter() - start
    return state.params, history, seconds, len(fit_images)


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

    params, history, seconds, num_fit = train(config, train_images, train_key)
    test = _floats(vae.evaluate(params, jnp.asarray(data.to_unit_float(test_images)), test_key, beta=config.beta))
    figures(params, test_images, figure_key, out, history)
    write_bytes(out / "params.msgpack", flax.serialization.to_bytes(params))
    metrics = {
        "config": dataclasses.asdict(config),
        "device": jax.devices()[0].device_kind,
        "jax_version": jax.__version__,
        "history": history,
        "final_val_loss": history["val_loss"][-1],
        "final_val_rounded_accuracy": history["val_rounded_accuracy"][-1],
        "test": test,
        "train_wall_seconds": seconds,
        "train_examples_per_sec": num_fit * config.epochs / seconds,
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    runtime.use_fast_cpu_flags()  # before JAX's backend starts; see aejax/runtime.py
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, Config, HELP)
    config = config_from_args(Config, parser.parse_args(argv))
    try:
        metrics = run(config)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"VAE ({config.recipe}): val_loss {metrics['final_val_loss']:.4f} (chapter 0.3133), val rounded accuracy "
        f"{metrics['final_val_rounded_accuracy']:.4f} (chapter 0.9228), training {metrics['train_wall_seconds']:.1f} s "
        f"({metrics['train_examples_per_sec']:,.0f} examples/s) -> {config.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
