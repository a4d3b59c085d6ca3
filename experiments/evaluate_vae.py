"""Evaluate a trained VAE on its data set's test split: bounds in nats and posterior diagnostics.

    python -m experiments.evaluate_vae --params runs/vae/params.msgpack [--iwae-k 1,50,5000
                                       --seed 0 --out runs/vae_eval]

Writes metrics.json: test -ELBO and -IWAE_k (mean over the test images and its standard error),
the chapter's loss and rounded accuracy, and the posterior diagnostics: rate (mean KL) and
distortion (mean -log p(x|z)), KL per latent dimension, active units (Burda et al. 2016) and the
mutual information I(x; z) (He et al. 2019). For the chapter's "bernoulli" likelihood on grey
levels it also reports the targets' entropy floor: the -ELBO of a perfect model, so the numbers
are cross-entropies, not log-likelihoods (aejax/models/likelihoods.py). Figures: reconstructions, the
latent space (PCA of the means, by class), a latent traversal and the posterior diagnostics.
The model, its likelihood and its data set (with the same test split) are read from the params
file's manifest; --dataset and the other data flags evaluate on other data of the same image
shape. A population's params.msgpack is
evaluated member by member (or pick one with --member), each row with its seed and hyperparameters,
and summarised per grid point. The bounds are computed a batch of test images at a time, and the
finished batches are kept (progress.npz) while the evaluation runs: a stopped evaluation (Ctrl-C,
SIGTERM, a session's end) continues with --resume, which evaluates only the batches left, with the
same draws (batch i's key is fold_in(key, i)), so it gives the numbers an unbroken one would.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aejax import data, pca, plotting, runtime
from aejax.config import check_types, fail, option
from aejax.errors import DataError
from aejax.evaluation import evaluator, metrics, sample_quality
from aejax.io import params_file, runs
from aejax.io.files import write_bytes, write_json
from aejax.data import sources
from aejax.models import likelihoods, vae
from aejax.training import fit, settings
from experiments import common

KIND = "evaluate_vae"
FIGURES = (
    "vae_reconstructions_plot.png",
    "vae_latent_space_plot.png",
    "vae_latent_traversal_plot.png",
    "vae_posterior_diagnostics.png",
)
# The bounds per test image, (members, N) each, in nats: "negative_elbo", "negative_iwae_k{k}" (rows in
# the order of metrics.json's members). Two models evaluated on the same test images compare image by
# image: the paired difference's standard error is far below each mean's (experiments.ladder_report).
PER_IMAGE = "per_image_bounds.npz"
# The bounds of the test-image batches finished so far, while the evaluation runs (`Progress`).
PROGRESS = "progress.npz"
OUTPUTS = ("metrics.json", PER_IMAGE, PROGRESS, common.TRACEBACK) + FIGURES
# Decoder evaluations (images x samples x members) one evaluation may ask for: ~8 hours on a 2-core
# CPU (measured ~3.5e5 per second), minutes on a GPU. More is refused up front.
MAX_DECODER_EVALUATIONS = 10**10


@dataclasses.dataclass(frozen=True)
class Config:
    params: str = option("runs/vae/params.msgpack", "params.msgpack written by experiments.vae_fashion_mnist")
    iwae_k: str = option("1,50,5000", "comma-separated numbers of importance samples for the IWAE bound")
    elbo_samples: int = option(10, "latent draws per image for the Monte Carlo ELBO")
    batch_size: int = option(100, "test images per compiled call")
    num_test_images: int | None = option(None, "evaluate the first N test images (default: all)")
    member: int | None = option(None, "a population's member to evaluate (default: every member)")
    matmul_precision: str = option(
        "default", "matmul precision: see experiments.vae_fashion_mnist --help", choices=settings.MATMUL_PRECISIONS
    )
    seed: int = option(0, f"seed of the evaluation key (0..{settings.MAX_SEED})")
    dataset: str | None = option(
        None,
        "the test images: as experiments.vae_fashion_mnist --dataset (default: the "
        "training run's, from the params file)",
    )
    data_dir: str | None = option(None, "fashion_mnist: folder with the IDX .gz files (default: the training run's)")
    images_key: str | None = option(None, "npz: the images' array (default: the training run's)")
    labels_key: str | None = option(None, "npz: the labels' array (default: the training run's)")
    test_holdout: int | None = option(
        None, "digits, npz, npy, folder: images held out as the test split (default: the training run's)"
    )
    classifier: str | None = option(
        None,
        "classifier.msgpack of experiments.train_classifier: also score --num-samples generated images "
        "(Fréchet distance, precision, recall in its features)",
    )
    num_samples: int = option(10000, "with --classifier: images generated per model")
    out: str = option("runs/vae_eval", "output folder (not a training run's: results never overwrite another run's)")
    resume: bool = option(
        False, "continue the stopped evaluation in --out (the same params and settings): only the batches left"
    )
    auto_resume: bool = option(
        False,
        "continue the evaluation in --out if it holds one, else start it: one command line for a job that "
        "a scheduler may stop and requeue",
    )
    overwrite: bool = option(False, "replace an earlier evaluation in --out")

    def __post_init__(self):
        check_types(self)
        for name in ("elbo_samples", "batch_size", "num_samples"):
            if getattr(self, name) < 1:
                fail(name, f"must be a positive integer, got {getattr(self, name)}")
        if self.num_test_images is not None and self.num_test_images < 1:
            fail("num_test_images", f"must be a positive integer, got {self.num_test_images}")
        if self.member is not None and self.member < 0:
            fail("member", f"must be >= 0, got {self.member}")
        if not 0 <= self.seed <= settings.MAX_SEED:
            fail("seed", f"must be in 0..{settings.MAX_SEED}, got {self.seed}")
        if self.dataset is not None:
            sources.check_name(self.dataset)
        runs.check_reuse_flags(self.resume, self.auto_resume, self.overwrite)
        self.ks()

    def data_settings(self, recorded: dict) -> sources.Settings:
        """The training run's data settings (`recorded`, from the manifest), with the flags given here
        (another --dataset starts from the defaults)."""
        if self.dataset is not None and self.dataset != recorded.get("dataset"):
            recorded = {"dataset": self.dataset}
        flags = {f.name: getattr(self, f.name) for f in dataclasses.fields(sources.Settings)}
        return sources.Settings(**{**recorded, **{k: v for k, v in flags.items() if v is not None}})

    def ks(self) -> list[int]:
        try:
            ks = [int(part) for part in self.iwae_k.split(",")]
        except ValueError:
            ks = []
        if not ks or min(ks) < 1 or len(set(ks)) != len(ks):
            fail("iwae_k", f"must be distinct positive integers separated by commas, got {self.iwae_k!r}")
        if max(ks) > metrics.MAX_IMPORTANCE_SAMPLES:
            fail("iwae_k", f"values must be at most {metrics.MAX_IMPORTANCE_SAMPLES}, got {max(ks)}")
        return ks

    def evaluation(self) -> evaluator.Settings:
        """The evaluation's settings (aejax.evaluation.evaluator)."""
        return evaluator.Settings(tuple(self.ks()), self.elbo_samples, self.batch_size, self.num_samples, self.seed)


def figures(
    config: Config,
    model: vae.Model,
    params: vae.Params,
    test: data.Dataset,
    x: np.ndarray,
    likelihood: str,
    diagnostics: dict,
    out: Path,
) -> None:
    reconstruction_key = evaluator.keys(config.seed)["reconstruction"]
    reconstructed = np.asarray(
        vae.decode(model, params, vae.sample_posterior(model, params, reconstruction_key, x[:10]), likelihood)
    )
    plotting.save_figure(plotting.reconstructions(x[:10], reconstructed), out / FIGURES[0])

    means = np.asarray(vae.encode(model, params, x)[0])
    scores = (means - means.mean(axis=0)) @ pca.principal_components(means, min(2, means.shape[1]))
    scores = np.pad(scores, ((0, 0), (0, 2 - scores.shape[1])))
    plotting.save_figure(plotting.latent_scatter(scores, test.labels, test.class_names), out / FIGURES[1])

    latent = model.latent_dim
    values = np.linspace(-3.0, 3.0, 9)
    traversal = np.repeat(means[:1][None], latent, axis=0).repeat(len(values), axis=1)
    for dim in range(latent):
        traversal[dim, :, dim] = values
    traversed = np.asarray(vae.decode(model, params, traversal.reshape(-1, latent), likelihood))
    titles = [f"z{dim}={v:+.1f}" if dim == 0 else "" for dim in range(latent) for v in values]
    fig = plotting.image_grid(traversed, len(values), titles=titles)
    fig.suptitle("latent traversal: row i varies coding i from -3 to +3, others at a test image's mean", fontsize=9)
    plotting.save_figure(fig, out / FIGURES[2])
    plotting.save_figure(plotting.posterior_diagnostics(diagnostics), out / FIGURES[3])


def run(config: Config) -> int:
    resume = runs.resuming(config.out, KIND, config.resume, config.auto_resume)
    runs.check_folder(config.out, KIND, resume=resume, overwrite=config.overwrite, outputs=OUTPUTS)
    ks = config.ks()
    trained = params_file.load(config.params, None if config.member is None else [config.member])
    model, likelihood, members, manifest = trained.model, trained.likelihood, trained.members, trained.manifest
    chosen = list(range(len(members))) if config.member is None else [config.member]
    identities = manifest["members"]
    source = config.data_settings(manifest.get("data", {}))
    test = source.load("test")
    images = test.images
    if images.shape[1:] != tuple(model.image_shape):
        raise DataError(
            f"{source.dataset}: the test images have shape {images.shape[1:]}, the model in --params "
            f"takes {tuple(model.image_shape)}"
        )
    classifier = None if config.classifier is None else sample_quality.load(config.classifier)
    if classifier is not None and classifier.image_shape != tuple(model.image_shape):
        fail(
            "classifier",
            f"takes images of shape {classifier.image_shape}, the model in --params makes {tuple(model.image_shape)}",
        )
    count = len(images) if config.num_test_images is None else config.num_test_images
    if count > len(images):
        fail("num_test_images", f"must be at most the {len(images)} test images, got {count}")
    evaluations = count * (sum(ks) + config.elbo_samples) * len(chosen)
    if evaluations > MAX_DECODER_EVALUATIONS:
        fail(
            "iwae_k",
            f"{config.iwae_k} with --elbo-samples {config.elbo_samples} over {count} images and "
            f"{len(chosen)} model(s) asks for {evaluations:.2e} decoder evaluations (about "
            f"{evaluations / 3.5e5 / 3600:.0f} h on a 2-core CPU); the limit is {MAX_DECODER_EVALUATIONS:.0e}: "
            "lower --iwae-k, or pass --num-test-images or --member",
        )
    images = images[:count]
    test = dataclasses.replace(test, images=images, labels=None if test.labels is None else test.labels[:count])
    real = data.unit_float_images("test images", images)
    x = jnp.asarray(real)
    binarize = trained.binarize
    if binarize:
        x = likelihoods.binarize_for_evaluation(x, "test")

    definition = {
        "params_sha256": trained.sha256,
        "data_sha256": fit.fingerprint(images),
        **{
            k: v
            for k, v in dataclasses.asdict(config).items()
            if k not in ("out", "resume", "auto_resume", "overwrite", "data_dir")
        },
        "data": dataclasses.asdict(source),
    }
    out = Path(config.out)
    environment = runtime.describe(config.matmul_precision)
    with runs.claim(
        out,
        KIND,
        definition,
        resume=resume,
        overwrite=config.overwrite,
        outputs=OUTPUTS,
        details={"environment": environment},
    ):
        start = time.perf_counter()
        progress = evaluator.Progress(out / PROGRESS, resume)
        try:
            with jax.default_matmul_precision(
                None if config.matmul_precision == "default" else config.matmul_precision
            ):
                evaluated = [
                    evaluator.evaluate_model(
                        config.evaluation(), model, members[i], x, likelihood, classifier, real, progress, i
                    )
                    for i in chosen
                ]
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: keep what is finished for --resume
            progress.save()
            raise
        rows = [{"member": i, **identities[i], **results} for i, (results, _) in zip(chosen, evaluated)]
        seconds = time.perf_counter() - start
        result = {
            "config": dataclasses.asdict(config),
            "environment": environment,
            "params": config.params,
            "likelihood": likelihood,
            "binarize": binarize,
            "likelihood_source": "the params file's manifest",
            "data": dataclasses.asdict(source),
            "num_test_images": count,
            "model": manifest["model"],
            "eval_wall_seconds": seconds,
            "eval_wall_seconds_total": progress.seconds(),
            "invocations": progress.invocations,
            "wall_seconds_note": "eval_wall_seconds: this invocation's; _total: over all invocations (--resume)",
        }
        if classifier is not None:
            result["sample_quality"] = {
                "classifier": config.classifier,
                "classifier_test_accuracy": classifier.accuracy,
                "training_images_vs_test": classifier.reference,
                "generated": "E[x | z] for z from the model's prior",
                "real": "the test images, grey levels",
                "k": 3,
                "note": "Fréchet distance and precision/recall (k-NN manifolds) " + sample_quality.NOTE,
            }
        if likelihood == "bernoulli" and not binarize:
            floor = np.sum(np.asarray(likelihoods.bernoulli_entropy(x)), axis=vae.image_axes(model))
            result["test_entropy_floor_nats"] = float(np.mean(floor))
            result["note"] = (
                "'bernoulli' on grey levels is a cross-entropy, not a log-likelihood: a perfect model "
                "scores test_entropy_floor_nats; compare models by the gap above it"
            )
        if len(rows) == 1:
            result.update(rows[0] if len(members) > 1 else {k: v for k, v in rows[0].items() if k != "member"})
        else:
            result["members"] = rows
            result["summary_method"] = (
                "per grid point (members of equal beta and learning rate; different "
                "hyperparameters are never pooled): mean and Student-t 95% interval"
            )
            result["summary"] = [
                {**point, **evaluator.summarize(group, ks)} for point, group in settings.grid_points(rows)
            ]
        figures(config, model, members[chosen[0]], test, np.asarray(x), likelihood, rows[0]["diagnostics"], out)
        write_bytes(
            out / PER_IMAGE,
            evaluator.to_npz({name: np.stack([p[name] for _, p in evaluated]) for name in evaluated[0][1]}),
        )
        write_json(out / "metrics.json", result)
        (out / PROGRESS).unlink(missing_ok=True)  # all of it is in PER_IMAGE now
    print(summary_line(result, out))
    return 0


def summary_line(result: dict, out: Path) -> str:
    first = result if "members" not in result else result["members"][0]
    iwae = ", ".join(
        f"k={k}: {v['mean']:.2f} ± {v['standard_error']:.2f}" for k, v in first["test_negative_iwae_nats"].items()
    )
    elbo = first["test_negative_elbo_nats"]
    d = first["diagnostics"]
    floor = f"; entropy floor {result['test_entropy_floor_nats']:.2f}" if "test_entropy_floor_nats" in result else ""
    samples = (
        f"; samples: Fréchet distance {first['frechet_distance']:.2f}, precision {first['precision']:.3f}, "
        f"recall {first['recall']:.3f}"
        if "frechet_distance" in first
        else ""
    )
    who = f"member 0 of {len(result['members'])}: " if "members" in result else ""
    return (
        f"{who}test -ELBO {elbo['mean']:.2f} ± {elbo['standard_error']:.2f} nats; -IWAE {iwae} nats{floor} "
        f"({result['likelihood']}{', binarized' if result['binarize'] else ''}); rate {d['rate_nats']:.2f}, "
        f"distortion {d['distortion_nats']:.2f}, active units {d['active_units']}/{len(d['kl_per_dim_nats'])}, "
        f"MI {d['mutual_information_nats']:.2f} nats{samples}; chapter loss "
        f"{first['test_chapter_loss']:.4f}, rounded accuracy {first['test_rounded_accuracy']:.4f} "
        f"({result['eval_wall_seconds']:.0f} s) -> {out}"
    )


def resume_hint(config: Config) -> str:
    path = Path(config.out) / PROGRESS
    if not path.is_file():
        return "no batch of the bounds was finished yet"
    batches = evaluator.Progress(path, resume=True).batches(config.batch_size)
    return f"--resume continues from {path} ({batches} batches of test images' bounds finished)"


def main(argv: list[str] | None = None) -> int:
    return common.main(Config, __doc__, run, argv, on_interrupt=resume_hint)


if __name__ == "__main__":
    sys.exit(main())
