"""Chapter 17's linear autoencoder on the synthetic 3-D data, compared with closed-form PCA.

    python -m experiments.linear_ae_pca [--epochs 20 --seed 42 --out runs/linear_ae_pca]
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np

from aejax import data, linear_ae, pca, plotting
from aejax.files import write_json
from experiments.common import config_from_args, config_parser, prepare_out_dir


@dataclasses.dataclass(frozen=True)
class Config:
    epochs: int = 20
    learning_rate: float = 1.5
    batch_size: int = 32
    num_examples: int = 60
    seed: int = 42
    out: str = "runs/linear_ae_pca"


HELP = {
    "epochs": "training epochs",
    "learning_rate": "SGD learning rate",
    "batch_size": "minibatch size; equal to --num-examples for full-batch gradient descent",
    "num_examples": "points drawn by the chapter's generate_3d_data (always with np.random.seed(4))",
    "seed": "seed of the JAX key for initialisation and shuffling",
    "out": "output directory for the figures and metrics.json",
}


def run(config: Config) -> dict:
    out = prepare_out_dir(config.out)
    x = data.synthetic_3d(config.num_examples)
    params, history = linear_ae.train(
        x, 2, key=jax.random.key(config.seed), epochs=config.epochs,
        learning_rate=config.learning_rate, batch_size=config.batch_size,
    )
    components = pca.principal_components(x, 2)
    decoder_angles = pca.principal_angles(linear_ae.decoder_subspace(params), components)
    encoder_angles = pca.principal_angles(np.asarray(params["encoder"]["kernel"]), components)
    codings = np.asarray(linear_ae.encode(params, x))
    reconstructions = np.asarray(linear_ae.decode(params, codings))
    pca_loss = pca.pca_reconstruction_mse(x, 2)

    plotting.save_figure(plotting.linear_ae_codings(codings), out / "linear_autoencoder_pca.png")
    plotting.save_figure(
        plotting.linear_ae_vs_pca(reconstructions @ components, x @ components, history["loss"], pca_loss),
        out / "linear_autoencoder_vs_pca.png",
    )
    metrics = {
        "config": dataclasses.asdict(config),
        "loss_history": history["loss"].tolist(),
        "final_epoch_loss": float(history["loss"][-1]),
        "final_loss": float(linear_ae.loss(params, x)),
        "pca_optimal_loss": pca_loss,
        "principal_angles_decoder_rad": decoder_angles.tolist(),
        "principal_angles_encoder_rad": encoder_angles.tolist(),
        "max_principal_angle_rad": float(decoder_angles.max()),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = config_parser(Config, HELP, __doc__)
    config = config_from_args(Config, parser.parse_args(argv))
    try:
        metrics = run(config)
    except ValueError as err:
        parser.error(str(err))
    print(
        f"linear AE: final loss {metrics['final_loss']:.5f} (last-epoch mean {metrics['final_epoch_loss']:.5f}; "
        f"chapter ~0.0055), PCA optimum {metrics['pca_optimal_loss']:.5f}, largest principal angle "
        f"{metrics['max_principal_angle_rad']:.4f} rad -> {config.out}"
    )


if __name__ == "__main__":
    sys.exit(main())
