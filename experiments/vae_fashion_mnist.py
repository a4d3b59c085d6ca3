"""Chapter 17's variational autoencoder on Fashion-MNIST: train one model or a population of them.

    python -m experiments.vae_fashion_mnist [--recipe chapter|improved|adam --epochs 25 --seed 42
                                             --num-seeds N --sweep beta=0.5,1,2 --out runs/vae --resume]

Trains on the first 55,000 training images and validates on the last 5,000 (as the chapter), then
writes into --out: metrics.json, params.msgpack, history.jsonl (one line per model and epoch, as
they happen), the chapter's figures, reconstructions, learning curves and checkpoints/.
--num-seeds and --sweep train a population (seeds x grid) in one compiled program; metrics.json
then lists every member and summarises each final metric (mean, 95% t-interval).

Every epoch ends with a checkpoint; --resume continues bit for bit. With several devices, members
and batches spread over them. Several hosts: one process per host with --coordinator-address
HOST:PORT --num-processes N --process-id I (or AEJAX_COORDINATOR_ADDRESS / AEJAX_NUM_PROCESSES /
AEJAX_PROCESS_ID; flags win); process 0 writes, and --out must be on a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import ClassVar

import jax
import numpy as np

from aejax import data, parallel, plotting, runtime, stats
from aejax.config import check_types, fail, option, section
from aejax.errors import DataError
from aejax.io import checkpoint, params_file, runs, writers
from aejax.io.files import write_json
from aejax.data import sources
from aejax.models import likelihoods, priors, registry, vae
from aejax.training import fit, population, settings
from experiments import common

KIND = "vae_fashion_mnist"
FIGURES = (
    "vae_generated_images_plot.png",
    "semantic_interpolation_plot.png",
    "vae_reconstructions_plot.png",
    "vae_learning_curves.png",
    "vae_rate_distortion.png",
    "vamp_pseudo_inputs.png",
)
OUTPUTS = ("metrics.json", "params.msgpack", "history.jsonl", "checkpoints", "tensorboard", common.TRACEBACK) + FIGURES
FINAL_METRICS = (
    "final_val_loss",
    "final_val_rounded_accuracy",
    "test_loss",
    "test_rounded_accuracy",
    "test_rate_nats",
    "test_distortion_nats",
)


@dataclasses.dataclass(frozen=True)
class OutputSettings:
    """Where the run writes, and what it does with a run already there."""

    out: str = option("runs/vae", "output folder (owned by this run: see --resume and --overwrite)")
    resume: bool = option(False, "continue the run in --out from its newest readable checkpoint")
    auto_resume: bool = option(
        False,
        "continue the run in --out if it holds one, else start it: one command line "
        "for a job that a scheduler may stop and requeue",
    )
    overwrite: bool = option(False, "replace the run already in --out (deletes its checkpoints and results)")
    keep_checkpoints: int = option(3, "how many per-epoch checkpoints to keep")
    tensorboard: bool = option(
        False, "also write the metrics as TensorBoard events to <out>/tensorboard (pip install -e '.[tensorboard]')"
    )
    deterministic: bool = option(False, "bitwise-reproducible GPU runs (XLA's deterministic ops; a little slower)")

    def __post_init__(self):
        check_types(self)
        if self.keep_checkpoints < 1:
            fail("keep_checkpoints", f"must be a positive integer, got {self.keep_checkpoints}")
        runs.check_reuse_flags(self.resume, self.auto_resume, self.overwrite)

    def resuming(self) -> bool:
        """Whether this run continues the one in --out (--resume, or --auto-resume and a run is there)."""
        return runs.resuming(self.out, KIND, self.resume, self.auto_resume)


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Multi-host training (aejax.parallel): flags win over the environment variables."""

    coordinator_address: str | None = option(None, "multi-host: HOST:PORT of process 0 (env AEJAX_COORDINATOR_ADDRESS)")
    num_processes: int | None = option(None, "multi-host: number of processes (env AEJAX_NUM_PROCESSES; default 1)")
    process_id: int | None = option(None, "multi-host: this process's index, 0..N-1 (env AEJAX_PROCESS_ID; default 0)")
    cluster_timeout: int = option(300, "multi-host: seconds to wait for every process to join")

    def __post_init__(self):
        check_types(self)


@dataclasses.dataclass(frozen=True)
class Config(fit.Config):
    """The training run's settings (aejax.training.settings), where its images come from, and where it writes."""

    source: sources.Settings = section(sources.Settings)
    output: OutputSettings = section(OutputSettings)
    cluster: ClusterSettings = section(ClusterSettings)

    # The standard density-estimation baseline (Exemplar-VAE's "standard VAE" protocol;
    # docs/likelihoods.md lists every difference).
    PRESETS: ClassVar[dict] = {
        "chapter": {},
        "literature": {
            "hidden_sizes": (300, 300),
            "latent_dim": 40,
            "binarize": True,
            "activation": "gated",
            "recipe": "adam",
            "learning_rate": 5e-4,
            "batch_size": 100,
            "num_validation": 10000,
            "kl_warmup_epochs": 100,
            "early_stopping_patience": 50,
            "epochs": 2000,
        },
    }


def prepare(config: Config) -> None:
    """Joins the cluster (before any JAX computation)."""
    flags = {name: getattr(config.cluster, name) for name in parallel.ENVIRONMENT}
    parallel.initialize(parallel.Cluster.resolve(flags, timeout_seconds=config.cluster.cluster_timeout))


def healthy_member(result: fit.FitResult) -> int | None:
    """The first member that trained without diverging and holds finite params (None if none did)."""
    for i in range(len(result.members)):
        finite = all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(result.member_params(i)))
        if result.diverged[i] is None and finite and (result.best_epoch is None or result.best_epoch[i] > 0):
            return i
    return None


def figures(result: fit.FitResult, member: int, test_images: np.ndarray, out: Path) -> None:
    """The chapter's figures (generation, interpolation, reconstructions) of `member`, a healthy one."""
    params, model = result.member_params(member), result.model
    likelihood = result.config.loss.likelihood
    keys = population.member_keys([result.members[member].seed])["figures"][0]
    generate_key, grid_key, reconstruction_key = jax.random.split(keys, 3)
    generated = np.asarray(vae.generate(model, params, generate_key, 12, likelihood))
    plotting.save_figure(plotting.image_grid(generated, 4), out / FIGURES[0])

    codings = priors.sample(model, params, grid_key, 12)
    interpolated = np.asarray(vae.decode(model, params, vae.interpolate_codings(codings, (3, 4), (5, 7)), likelihood))
    originals = [row * 7 + col for row in range(0, 5, 2) for col in range(0, 7, 2)]  # the chapter's frames
    plotting.save_figure(plotting.image_grid(interpolated, 7, framed=originals), out / FIGURES[1])

    originals_x = data.unit_float_images("test images", test_images[:10])
    if result.config.data.binarize:
        originals_x = np.asarray(
            likelihoods.binarize_for_evaluation(data.unit_float_images("test images", test_images), "test")[:10]
        )
    reconstructed = np.asarray(
        vae.decode(model, params, vae.sample_posterior(model, params, reconstruction_key, originals_x), likelihood)
    )
    plotting.save_figure(plotting.reconstructions(originals_x, reconstructed), out / FIGURES[2])
    if isinstance(model, priors.VampPrior):  # what the prior's components are made of
        pseudo_inputs = np.clip(np.asarray(params["prior"]["pseudo_inputs"][:24]), 0.0, 1.0)
        plotting.save_figure(plotting.image_grid(pseudo_inputs, 8), out / FIGURES[5])


def learning_curves(result: fit.FitResult, out: Path) -> None:
    plotting.save_figure(
        plotting.learning_curves(result.history, ["loss", "val_loss"], "loss (reconstruction per pixel + KL/784)"),
        out / FIGURES[3],
    )


def manifest(config: Config, model: vae.Model, metrics: dict) -> dict:
    """What params.msgpack holds (aejax.io.params_file): the model, its data and each member's identity."""
    members = metrics["members"] if "members" in metrics else [{**dataclasses.asdict(config.members()[0]), **metrics}]
    return {
        "kind": KIND,
        "model": {**registry.to_dict(model), "likelihood": config.loss.likelihood},
        "binarize": config.data.binarize,
        "data": dataclasses.asdict(config.source),
        "members": [
            {name: row[name] for name in ("seed", "beta", "learning_rate", "params_sha256", "diverged")}
            for row in members
        ],
    }


def run(config: Config) -> int:
    resume = config.output.resuming()
    runs.check_folder(config.output.out, KIND, resume=resume, overwrite=config.output.overwrite, outputs=OUTPUTS)
    splits = config.source.load_splits()  # a source without a test split is read once
    train_images, test_images = splits["train"].images, splits["test"].images
    if test_images.shape[1:] != train_images.shape[1:]:
        raise DataError(
            f"{config.source.dataset}: the test images' shape {test_images.shape[1:]} differs from the training "
            f"images' {train_images.shape[1:]}"
        )
    plan = fit.prepare(config, train_images)  # every check, the memory one included, before any output
    members = plan.members
    out = Path(config.output.out)
    log = [writers.JsonLines(out / "history.jsonl", resume=resume)]
    if config.output.tensorboard:
        log.append(writers.TensorBoard(out / "tensorboard", len(members)))
    writer = jax.process_index() == 0
    environment = runtime.describe(config.optimiser.matmul_precision, config.output.deterministic)
    with runs.claim(
        out,
        KIND,
        plan.definition,
        resume=resume,
        overwrite=config.output.overwrite,
        outputs=OUTPUTS,
        enabled=writer,
        details={"environment": environment},
    ):
        result = fit.fit(
            config,
            train_images,
            checkpoint_dir=out / "checkpoints",
            resume=resume,
            keep_checkpoints=config.output.keep_checkpoints,
            writers=log,
            plan=plan,
        )
        for w in log:
            w.close()
        digests = [params_file.member_digest(result.member_params(i)) for i in range(len(members))]
        metrics = results(config, result, test_images, digests, environment)
        shown = healthy_member(result)
        metrics["figures_member"] = None if shown is None else {"index": shown, **dataclasses.asdict(members[shown])}
        if writer:
            if shown is None:
                print("warning: no member trained without diverging: no figures of generated images", file=sys.stderr)
            else:
                if len(members) > 1 and shown != 0:
                    print(
                        f"note: figures show member {shown} (seed {members[shown].seed}), the first healthy one",
                        file=sys.stderr,
                    )
                figures(result, shown, test_images, out)
            learning_curves(result, out)
            if any(name == "beta" for name, _ in config.population.sweep):
                rows = metrics["members"]
                plotting.save_figure(
                    plotting.rate_distortion(
                        [r["test_rate_nats"] for r in rows],
                        [r["test_distortion_nats"] for r in rows],
                        [r["beta"] for r in rows],
                    ),
                    out / FIGURES[4],
                )
            params_file.write(out / "params.msgpack", result.params, manifest(config, result.model, metrics))
            write_json(out / "metrics.json", metrics)
    print(summary_line(config, metrics))
    return 0


def results(
    config: Config, result: fit.FitResult, test_images: np.ndarray, digests: list[str], environment: dict
) -> dict:
    """metrics.json: the run's settings and environment, each member's results, and their summary."""
    test = population.evaluate_members(
        result.model,
        result.params,
        test_images,
        result.members,
        config.loss.likelihood,
        config.data.binarize,
        objective=config.loss.objective,
        samples=config.loss.train_samples,
    )
    rows = []
    for i, member in enumerate(result.members):
        finite = result.diverged[i] is None or result.best_epoch is not None and result.best_epoch[i] > 0
        row = {
            **dataclasses.asdict(member),
            "params_sha256": digests[i],
            "diverged": result.diverged[i],
            "best_epoch": None if result.best_epoch is None else int(result.best_epoch[i]),
        }
        values = {
            "final_val_loss": result.final("val_loss")[i],
            "final_val_rounded_accuracy": result.final("val_rounded_accuracy")[i],
            "test_loss": test["loss"][i],
            "test_rounded_accuracy": test["rounded_accuracy"][i],
            "test_rate_nats": test["kl"][i],
            "test_distortion_nats": vae.num_pixels(result.model) * test["reconstruction"][i],
        }
        row.update({k: float(v) if finite and np.isfinite(v) else None for k, v in values.items()})
        rows.append(row)
    seconds = result.seconds
    metrics = {
        "config": dataclasses.asdict(config),
        "environment": environment,
        "train_wall_seconds": seconds,
        "train_wall_seconds_total": result.total_seconds,
        "invocations": result.invocations,
        "wall_seconds_note": "train_wall_seconds: this invocation's training; _total: over all invocations (resumes)",
        "train_examples_per_sec": result.examples_trained / seconds if result.examples_trained else None,
        "epochs_run": result.epochs_run,
    }
    history = {
        name: [[None if not np.isfinite(v) else float(v) for v in member] for member in values]
        for name, values in result.history.items()
    }
    if len(rows) == 1:
        single = {k: v for k, v in rows[0].items() if k not in ("seed", "beta", "learning_rate")}
        return {
            **metrics,
            **single,
            "history": {name: values[0] for name, values in history.items()},
            "test": {k: float(v[0]) for k, v in test.items()},
        }
    points = settings.grid_points(rows)
    return {
        **metrics,
        "population": len(rows),
        "summary_method": "mean and Student-t 95% interval over the members (NaN/diverged members left out; n says how many)",
        "summary": {
            name: stats.summarize([r[name] if r[name] is not None else np.nan for r in rows]) for name in FINAL_METRICS
        },
        "summary_by_hyperparameters": [
            {
                **point,
                **{
                    name: stats.summarize([r[name] if r[name] is not None else np.nan for r in group])
                    for name in FINAL_METRICS
                },
            }
            for point, group in points
        ]
        if len(points) > 1
        else None,
        "members": rows,
        "history": history,
    }


def label(config: Config) -> str:
    """The model, its prior and its objective, e.g. "mlp+vamp, iwae k=5"."""
    name = config.model.name + ("+vamp" if config.model.prior == "vamp" else "")
    loss = config.loss
    return name + (
        f", {loss.objective} k={loss.train_samples}" if (loss.objective, loss.train_samples) != ("elbo", 1) else ""
    )


def summary_line(config: Config, metrics: dict) -> str:
    speed = f"training {metrics['train_wall_seconds']:.1f} s -> {config.output.out}"
    if "members" not in metrics:
        # The book's numbers compare only with its own model on its own data.
        book = fit.Config()
        chapter = config.source.dataset == "fashion_mnist" and (config.model, config.loss) == (book.model, book.loss)
        return (
            f"VAE {label(config)} ({config.optimiser.recipe}): val_loss {metrics['final_val_loss']:.4f}"
            f"{' (chapter 0.3133)' if chapter else ''}, val rounded accuracy "
            f"{metrics['final_val_rounded_accuracy']:.4f}{' (chapter 0.9228)' if chapter else ''}, {speed}; params "
            f"sha256 {metrics['params_sha256']}"
        )

    def interval(s):
        return (
            "n/a"
            if s["mean"] is None
            else (f"{s['mean']:.4f}" if s["n"] < 2 else f"{s['mean']:.4f} [{s['ci95_low']:.4f}, {s['ci95_high']:.4f}]")
        )

    def results(summary):
        loss, accuracy = summary["final_val_loss"], summary["final_val_rounded_accuracy"]
        return f"val_loss {interval(loss)}, val rounded accuracy {interval(accuracy)} (n={loss['n']})"

    head = f"VAE {label(config)} population of {metrics['population']} ({config.optimiser.recipe}), mean [95% CI]:"
    if metrics["summary_by_hyperparameters"] is None:
        return f"{head} {results(metrics['summary'])}, {speed}"
    # A sweep: one interval per grid point (pooling different hyperparameters would mean nothing).
    points = [
        f"  beta {g['beta']:g}, learning rate {g['learning_rate']:g}: {results(g)}"
        for g in metrics["summary_by_hyperparameters"]
    ]
    return "\n".join([head, *points, speed])


def resume_hint(config: Config) -> str:
    kept = checkpoint.list_checkpoints(Path(config.output.out) / "checkpoints")
    if not kept:
        return "no checkpoint was written yet"
    return f"--resume continues from {kept[-1]}"


def main(argv: list[str] | None = None) -> int:
    return common.main(Config, __doc__, run, argv, on_interrupt=resume_hint, prepare=prepare)


if __name__ == "__main__":
    sys.exit(main())
