"""Chapter 17's linear autoencoder on the synthetic 3-D data, compared with closed-form PCA.

    python -m experiments.linear_ae_pca [--epochs 20 --seed 42 --out runs/linear_ae_pca]

Three runs: the chapter's (20 epochs of minibatch SGD, the figure of the book); the same model
trained to convergence (full-batch gradient descent), whose codings land on the PCA projection;
and the chapter's recipe over --spread-seeds keys (0 … N-1), whose spread metrics.json reports.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import numpy as np

from aejax import data, pca, plotting, runtime
from aejax.config import check_types, fail, option
from aejax.io import runs
from aejax.io.files import write_json
from aejax.models import linear_ae
from experiments import common

KIND = "linear_ae_pca"
OUTPUTS = ("linear_autoencoder_pca.png", "linear_autoencoder_vs_pca.png", "metrics.json", common.TRACEBACK)


@dataclasses.dataclass(frozen=True)
class Config:
    epochs: int = option(20, "training epochs of the chapter's run")
    learning_rate: float = option(1.5, "SGD learning rate")
    batch_size: int = option(32, "minibatch size; equal to --num-examples for full-batch gradient descent")
    num_examples: int = option(60, "points drawn by the chapter's generate_3d_data (always with np.random.seed(4))")
    seed: int = option(42, "seed of the JAX key for initialisation and shuffling (0..4294967295)")
    converged_epochs: int = option(3000, "epochs of full-batch gradient descent for the converged run")
    spread_seeds: int = option(20, "also train the chapter's recipe with keys 0 … N-1 and report the spread")
    out: str = option("runs/linear_ae_pca", "output folder for the figures and metrics.json")
    overwrite: bool = option(False, "replace an earlier run in --out")

    def __post_init__(self):
        check_types(self)
        for name in ("epochs", "batch_size", "converged_epochs", "spread_seeds"):
            if getattr(self, name) < 1:
                fail(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.num_examples < 3:
            fail("num_examples", f"must be at least 3 (more points than the 2 codings), got {self.num_examples}")
        if self.batch_size > self.num_examples:
            fail("batch_size", f"must be at most --num-examples {self.num_examples}, got {self.batch_size}")
        if not 0 < self.learning_rate < float("inf"):
            fail("learning_rate", f"must be a finite number > 0, got {self.learning_rate}")
        if not 0 <= self.seed <= 2**32 - 1:
            fail("seed", f"must be in 0..{2**32 - 1}, got {self.seed}")
        if (
            self.converged_epochs * self.num_examples > 10**9
            or self.spread_seeds * self.epochs * self.num_examples > 10**9
        ):
            fail("num_examples", "with these epochs and seeds asks for more than 1e9 example-steps; lower them")


def _fit_quality(params, x, components, pca_loss) -> dict:
    angles = pca.principal_angles(linear_ae.decoder_subspace(params), components)
    loss = float(linear_ae.loss(params, x))
    return {
        "final_loss": loss,
        "loss_over_pca_optimum": loss / pca_loss,
        "max_principal_angle_rad": float(angles.max()),
        "principal_angles_decoder_rad": angles.tolist(),
    }


def _spread(values: np.ndarray) -> dict:
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max())}


def run(config: Config) -> int:
    x = data.synthetic_3d(config.num_examples)
    out = Path(config.out)
    environment = runtime.describe()
    with runs.claim(
        out,
        KIND,
        dataclasses.asdict(config),
        overwrite=config.overwrite,
        outputs=OUTPUTS,
        resumable=False,
        details={"environment": environment},
    ):
        components = pca.principal_components(x, 2)
        pca_loss = pca.pca_reconstruction_mse(x, 2)
        chapter, history = linear_ae.train(
            x,
            2,
            key=jax.random.key(config.seed),
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
        )
        converged, converged_history = linear_ae.train(
            x,
            2,
            key=jax.random.key(config.seed),
            epochs=config.converged_epochs,
            learning_rate=config.learning_rate,
            batch_size=len(x),
        )
        seeds = np.arange(config.spread_seeds)
        many, _ = linear_ae.train_many(
            x,
            2,
            keys=jax.vmap(jax.random.key)(seeds),
            epochs=config.epochs,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
        )
        spread = [_fit_quality(jax.tree.map(lambda leaf, i=i: leaf[i], many), x, components, pca_loss) for i in seeds]

        codings = np.asarray(linear_ae.encode(chapter, x))
        plotting.save_figure(plotting.linear_ae_codings(codings), out / OUTPUTS[0])
        runs_to_plot = []
        for label, params, losses in (
            (f"chapter: {config.epochs} epochs of SGD, batch {config.batch_size}", chapter, history["loss"]),
            (f"converged: {config.converged_epochs} epochs of full-batch GD", converged, converged_history["loss"]),
        ):
            quality = _fit_quality(params, x, components, pca_loss)
            runs_to_plot.append(
                plotting.LinearAERun(
                    label,
                    np.asarray(linear_ae.decode(params, linear_ae.encode(params, x))) @ components,
                    losses,
                    quality["max_principal_angle_rad"],
                    quality["loss_over_pca_optimum"],
                )
            )
        plotting.save_figure(plotting.linear_ae_vs_pca(runs_to_plot, x @ components, pca_loss), out / OUTPUTS[1])
        metrics = {
            "config": dataclasses.asdict(config),
            "environment": environment,
            "pca_optimal_loss": pca_loss,
            "loss_history": history["loss"].tolist(),
            "final_epoch_loss": float(history["loss"][-1]),
            **_fit_quality(chapter, x, components, pca_loss),
            "principal_angles_encoder_rad": pca.principal_angles(
                np.asarray(chapter["encoder"]["kernel"]), components
            ).tolist(),
            "converged": {"epochs": config.converged_epochs, **_fit_quality(converged, x, components, pca_loss)},
            "spread_over_seeds": {
                "seeds": seeds.tolist(),
                "loss_over_pca_optimum": _spread(np.asarray([s["loss_over_pca_optimum"] for s in spread])),
                "max_principal_angle_rad": _spread(np.asarray([s["max_principal_angle_rad"] for s in spread])),
                "per_seed": [
                    {"seed": int(seed), **{k: s[k] for k in ("loss_over_pca_optimum", "max_principal_angle_rad")}}
                    for seed, s in zip(seeds, spread)
                ],
            },
        }
        write_json(out / "metrics.json", metrics)
    s = metrics["spread_over_seeds"]
    print(
        f"linear AE: final loss {metrics['final_loss']:.5f} ({metrics['loss_over_pca_optimum']:.2f}x the PCA optimum "
        f"{pca_loss:.5f}; last-epoch mean {metrics['final_epoch_loss']:.5f}, chapter ~0.0055), largest principal "
        f"angle {metrics['max_principal_angle_rad']:.4f} rad; converged: {metrics['converged']['loss_over_pca_optimum']:.4f}x, "
        f"{metrics['converged']['max_principal_angle_rad']:.1e} rad; keys 0-{config.spread_seeds - 1}: median "
        f"{s['loss_over_pca_optimum']['median']:.2f}x ({s['loss_over_pca_optimum']['min']:.2f}-"
        f"{s['loss_over_pca_optimum']['max']:.2f}x), median angle {s['max_principal_angle_rad']['median']:.3f} rad "
        f"-> {config.out}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.main(Config, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
