"""Evaluate a trained VAE on the Fashion-MNIST test set in nats: -ELBO and IWAE bounds, plus views.

    python -m experiments.evaluate_vae --params runs/vae/params.msgpack [--iwae-k 1,50,5000
                                       --data-dir DIR --seed 0 --out runs/vae_eval]

Writes metrics.json (test -ELBO, -IWAE_k for each k, the chapter's loss and rounded accuracy),
vae_reconstructions_plot.png, vae_latent_space_plot.png (PCA of the 10-D means, by class) and
vae_latent_traversal_plot.png (one coding varied at a time).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from aejax import data, metrics, pca, plotting, vae
from aejax.files import write_json
from experiments.common import config_from_args, config_parser, prepare_out_dir


@dataclasses.dataclass(frozen=True)
class Config:
    params: str = "runs/vae/params.msgpack"
    iwae_k: str = "1,50,5000"
    batch_size: int = 100
    elbo_samples: int = 10
    seed: int = 0
    data_dir: str | None = None
    out: str = "runs/vae_eval"


HELP = {
    "params": "params.msgpack written by experiments.vae_fashion_mnist",
    "iwae_k": "comma-separated numbers of importance samples for the IWAE bound",
    "batch_size": "test images per compiled call",
    "elbo_samples": "latent draws per image for the Monte Carlo ELBO",
    "seed": "seed of the evaluation key",
    "data_dir": "directory with the Fashion-MNIST IDX .gz files (default: Debian's package, else TFDS)",
    "out": "output directory",
}


def load_params(path: str | Path) -> vae.Params:
    """Reads params saved with flax.serialization; checks they are a VAE's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--params {str(path)!r} does not exist; train first with experiments.vae_fashion_mnist")
    try:
        params = flax.serialization.msgpack_restore(path.read_bytes())
    except (ValueError, TypeError) as err:  # msgpack's errors for corrupt bytes derive from these
        raise ValueError(f"--params {str(path)!r} is not a flax msgpack file ({type(err).__name__}: {err})") from err
    if not isinstance(params, dict) or set(params) != {"encoder", "decoder"}:
        raise ValueError(f"--params {str(path)!r} does not hold VAE params (expected 'encoder' and 'decoder')")
    return jax.tree.map(jnp.asarray, params)


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) <= 0:
        raise ValueError(f"--iwae-k must be positive integers separated by commas, got {text!r}")
    return ks


def batched_mean(fn, images: np.ndarray, key: jax.Array, batch_size: int, desc: str) -> float:
    """Mean over all images of fn(batch, key_i) -> (B,), batch i keyed by fold_in(key, i), with a progress bar."""
    total = 0.0
    starts = range(0, len(images), batch_size)
    for index, start in enumerate(tqdm(starts, desc=desc, unit="batch", file=sys.stdout, leave=False)):
        values = fn(jnp.asarray(images[start : start + batch_size]), jax.random.fold_in(key, index))
        total += float(jnp.sum(values))
    return total / len(images)


def run(config: Config) -> dict:
    ks = parse_ks(config.iwae_k)
    params = load_params(config.params)
    images, labels = data.load_fashion_mnist("test", config.data_dir)
    x = data.to_unit_float(images)
    out = prepare_out_dir(config.out)
    elbo_key, iwae_key, chapter_key, figure_key = jax.random.split(jax.random.key(config.seed), 4)

    results: dict = {"num_test_images": len(x), "params": config.params}
    start = time.perf_counter()
    results["test_negative_elbo_nats"] = -batched_mean(
        lambda b, k: metrics.elbo(params, b, k, config.elbo_samples), x, elbo_key, config.batch_size, "ELBO"
    )
    results["test_negative_iwae_nats"] = {}
    for k in ks:
        results["test_negative_iwae_nats"][str(k)] = -batched_mean(
            lambda b, key, k=k: metrics.iwae_bound(params, b, key, k), x, iwae_key, config.batch_size, f"IWAE k={k}"
        )
    chapter = vae.evaluate(params, jnp.asarray(x), chapter_key)
    results["test_chapter_loss"] = float(chapter["loss"])
    results["test_rounded_accuracy"] = float(chapter["rounded_accuracy"])
    results["eval_wall_seconds"] = time.perf_counter() - start

    reconstruction_key, traversal_key = jax.random.split(figure_key)
    mean, log_var = vae.encode(params, x[:10])
    reconstructed = np.asarray(vae.decode(params, vae.sample_latent(reconstruction_key, mean, log_var)))
    plotting.save_figure(plotting.reconstructions(x[:10], reconstructed), out / "vae_reconstructions_plot.png")

    means = np.asarray(vae.encode(params, x)[0])
    scores = (means - means.mean(axis=0)) @ pca.principal_components(means, 2)
    plotting.save_figure(plotting.latent_scatter(scores, labels, data.FASHION_MNIST_CLASSES), out / "vae_latent_space_plot.png")

    values = np.linspace(-3.0, 3.0, 9)
    base = np.asarray(vae.encode(params, x[:1])[0])[0]
    traversal = np.repeat(base[None, None], vae.latent_dim(params), axis=0).repeat(len(values), axis=1)
    for dim in range(vae.latent_dim(params)):
        traversal[dim, :, dim] = values
    traversed = np.asarray(vae.decode(params, traversal.reshape(-1, vae.latent_dim(params))))
    titles = [f"z{dim}={v:+.1f}" if dim == 0 else "" for dim in range(vae.latent_dim(params)) for v in values]
    fig = plotting.image_grid(traversed, len(values), titles=titles)
    fig.suptitle("latent traversal: row i varies coding i from -3 to +3, others at a test image's mean", fontsize=9)
    plotting.save_figure(fig, out / "vae_latent_traversal_plot.png")

    write_json(out / "metrics.json", {"config": dataclasses.asdict(config), **results})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = config_parser(Config, HELP, __doc__)
    config = config_from_args(Config, parser.parse_args(argv))
    try:
        results = run(config)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    iwae = ", ".join(f"k={k}: {v:.2f}" for k, v in results["test_negative_iwae_nats"].items())
    print(
        f"test -ELBO {results['test_negative_elbo_nats']:.2f} nats; -IWAE {iwae} nats; chapter loss "
        f"{results['test_chapter_loss']:.4f}; rounded accuracy {results['test_rounded_accuracy']:.4f} "
        f"({results['eval_wall_seconds']:.0f} s) -> {config.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
