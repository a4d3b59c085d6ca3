"""Training the VAE as a library function: one config, one compiled program for 1 … N models.

>>> images, _ = data.load_fashion_mnist("train")
>>> run = fit(Config(), images)                        # the chapter's VAE, 25 epochs
>>> population = fit(Config().replace(num_seeds=16), images)  # 16 seeds in one compiled program

A *population* is every combination of `num_seeds` seeds (seed, seed + 1, …) and the values in
`sweep` (e.g. `(("beta", (0.5, 1.0, 2.0)),)`). All members train in one compiled program: `vmap`
over their parameters, optimiser states, keys and hyperparameters, with the dataset shared. A
member draws its initialisation, shuffles and noise from its own seed exactly as a single run with
that seed does, so it trains the same model within float32 rounding: the two are different
programs, whose kernels may sum in another order (docs/reproducibility.md; tests/test_fit.py).
A single run is a population of one.

The config is `aejax.training.settings`, the compiled program `aejax.training.population`
(members' keys too), the host-side bookkeeping `aejax.training.tracking`; this module holds the
checks before any work and the loop that drives them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from aejax import data, parallel
from aejax.config import fail
from aejax.errors import RunDirError, UsageError
from aejax.io import checkpoint
from aejax.models import likelihoods, registry, vae
from aejax.training import population, recipes, settings, tracking
from aejax.training.train import ceil_div, epoch_key

Config, Member = settings.Config, settings.Member  # where a notebook finds them: fit.Config(…)
_MEMBER_BYTES_LIMIT = 2**36  # 64 GiB of parameters and optimiser state across a population


class Writer(Protocol):
    """Receives each epoch's metrics as they happen (`aejax.io.writers`); the caller closes it."""

    def write(self, epoch: int, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


@dataclasses.dataclass
class FitResult:
    """What `fit` returns. Arrays have a leading member axis M (1 for a single run)."""

    config: Config
    model: vae.Model
    members: list[Member]
    params: Any  # NumPy pytree (M, ...): the best epoch's with early stopping, else the last epoch's
    history: dict[str, np.ndarray]  # name -> (M, epochs) float64; NaN after a member stopped or diverged
    epochs_run: int
    best_epoch: np.ndarray | None  # (M,) 1-based, with early stopping
    diverged: list[dict | None]  # per member: {"epoch", "step"} of its first non-finite loss, or None
    seconds: float  # wall time of this call's training loop (compilation, validation and checkpoints included)
    examples_trained: int  # over all members, in this call
    total_seconds: float  # `seconds` summed over every call that trained this run (resumed ones too)
    invocations: int  # how many calls trained this run (1 + the resumes)

    def member_params(self, index: int) -> Any:
        return jax.tree.map(lambda leaf: leaf[index], self.params)

    def final(self, name: str) -> np.ndarray:
        """(M,) each member's value of history `name` at its result's epoch (best or last)."""
        values = self.history[name]
        if self.best_epoch is None:
            return values[:, -1]
        picked = values[np.arange(len(values)), np.maximum(self.best_epoch, 1) - 1]
        return np.where(self.best_epoch > 0, picked, np.nan)  # 0: no finite validation loss ever


def _member_dicts(members: Sequence[Member]) -> list[dict]:
    return [dataclasses.asdict(m) for m in members]


def fingerprint(images: np.ndarray) -> str:
    """SHA-256 of an image array's dtype, shape and bytes: what identifies the training data."""
    images = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{images.dtype}{images.shape}".encode())
    digest.update(images.data)
    return digest.hexdigest()


def check_model(model: Any, image_shape: tuple[int, ...]) -> None:
    """UsageError unless `model` has what `vae.Model` asks, is hashable and takes images of `image_shape`."""
    missing = [name for name in ("init", "encode", "decode_logits") if not callable(getattr(model, name, None))]
    missing += [name for name in ("latent_dim", "image_shape") if not hasattr(model, name)]
    if missing:
        raise UsageError(
            f"model must have init, encode, decode_logits, latent_dim and image_shape "
            f"(aejax.models.vae.Model); {type(model).__name__} lacks {missing}"
        )
    try:
        hash(model)
    except TypeError:
        raise UsageError(
            f"model must be hashable (a frozen dataclass, e.g. aejax.models.vae.FlaxVAE), got a {type(model).__name__}"
        ) from None
    if tuple(model.image_shape) != tuple(image_shape):
        raise UsageError(
            f"model takes images of shape {tuple(model.image_shape)}, but the training images have "
            f"shape {tuple(image_shape)}"
        )


def check(config: Config, num_images: int, model: vae.Model) -> None:
    """The checks of `config` that depend on the data, the model and the devices; ConfigError if one fails."""
    members = len(config.members())
    member_bytes = 3 * population.tree_bytes(jax.eval_shape(model.init, jax.random.key(0)))
    if members * member_bytes > _MEMBER_BYTES_LIMIT:
        fail(
            "num_seeds",
            f"and --sweep ask for {members} models, {members * member_bytes / 2**30:.0f} GiB of "
            f"parameters and optimiser state; the limit is {_MEMBER_BYTES_LIMIT / 2**30:.0f} GiB",
        )
    if config.data.num_validation >= num_images:
        fail(
            "num_validation", f"must be smaller than the {num_images} training images, got {config.data.num_validation}"
        )
    if config.schedule.batch_size > num_images - config.data.num_validation:
        fail(
            "batch_size",
            f"must be at most the {num_images - config.data.num_validation} training examples, got {config.schedule.batch_size}",
        )
    parallel.check_batch_size(config.schedule.batch_size, parallel.training_mesh(len(config.members())))


@dataclasses.dataclass(frozen=True)
class Plan:
    """A population ready to train: the split data, the keys, and the compiled epoch (`prepare`)."""

    config: Config
    model: vae.Model
    members: list[Member]
    program: population.Program
    fit_images: np.ndarray
    val_images: np.ndarray  # binarized once with the validation key, with `binarize`
    definition: dict  # what a resume must share: the settings and the data's fingerprint
    epoch: Any  # epoch(states, hyper, images, keys) -> (states, metrics), compiled
    validate: Any  # validate(params, images, keys, beta) -> metrics, compiled


def prepare(config: Config, train_images: np.ndarray, model: vae.Model | None = None) -> Plan:
    """Everything `fit` does before training, with every check that can fail up front: the config
    against the data and the devices, and the compiled epoch against the memory available (XLA's
    memory analysis), so that a script can call it before it writes anything. ConfigError if not.
    `model`: a model of the caller's (`aejax.models.vae.Model`) in place of the one the config names."""
    images = data.unit_float_images("train_images", train_images)
    if model is None:
        model = config.model.build(images.shape[1:])
    check_model(model, images.shape[1:])
    check(config, len(images), model)
    fit_images, val_images = data.train_validation_split(images, config.data.num_validation)
    members = config.members()
    mesh = parallel.training_mesh(len(members))
    steps_per_epoch = ceil_div(len(fit_images), config.schedule.batch_size)
    # A constant-rate recipe's program does not depend on the number of epochs: left at 1, so that a
    # run resumed with another --epochs (or a process that trains twice) reuses the compiled program.
    epochs = config.schedule.epochs if recipes.get(config.optimiser.recipe).schedule_uses_epochs else 1
    program = population.Program(
        model=model,
        likelihood=config.loss.likelihood,
        binarize=config.data.binarize,
        objective=config.loss.objective,
        samples=config.loss.train_samples,
        recipe=config.optimiser.recipe,
        batch_size=config.schedule.batch_size,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        num_examples=len(fit_images),
        mesh=mesh,
    )
    if config.data.binarize:
        val_images = np.asarray(likelihoods.binarize_for_evaluation(val_images, "validation"))
    with jax.default_matmul_precision(config.optimiser.jax_matmul_precision):
        epoch, validate = population.compile_programs(program, [m.seed for m in members], fit_images, val_images)
    definition = {**config.run_definition(), "model": registry.to_dict(model), "data_sha256": fingerprint(train_images)}
    return Plan(config, model, members, program, fit_images, val_images, definition, epoch, validate)


def fit(
    config: Config,
    train_images: np.ndarray,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    keep_checkpoints: int = 3,
    writers: Sequence[Writer] = (),
    progress: bool = True,
    model: vae.Model | None = None,
    plan: Plan | None = None,
) -> FitResult:
    """Trains the population that `config` describes on `train_images` (N, H, W) or (N, H, W, C),
    uint8 or in [0, 1]; `model` (`aejax.models.vae.Model`), if given, in place of the config's.

    The last `config.data.num_validation` images validate after every epoch (with the full beta; fixed
    keys, so curves differ only through the parameters). With `checkpoint_dir`, the state after
    every epoch is saved there (the last `keep_checkpoints` kept), and `resume=True` continues from
    the newest readable checkpoint, bit for bit, after checking it comes from the same run (same
    `config.run_definition()` and the same data). On several devices members spread over the
    "members" mesh axis and batches over "data" (`aejax.parallel`); on several hosts process 0
    writes checkpoints and calls the writers. `plan`: what `prepare(config, train_images)` returned,
    if the caller ran it already (its checks and compilation are not repeated).

    Raises FloatingPointError for a non-finite loss (naming epoch, step and the last checkpoint) in
    a single run or in every member; in a population, a diverged member is recorded and frozen.
    """
    _check_arguments(checkpoint_dir, resume, keep_checkpoints, writers)
    if plan is None:
        plan = prepare(config, train_images, model)
    elif plan.config != config or (model is not None and plan.model != model):
        raise UsageError("plan was prepared for another config or model: pass prepare(config, train_images, model)")
    program, members, fit_images, val_images, definition = (
        plan.program,
        plan.members,
        plan.fit_images,
        plan.val_images,
        plan.definition,
    )
    size, mesh, steps_per_epoch = len(members), program.mesh, program.steps_per_epoch
    keys = population.member_keys([m.seed for m in members])
    beta = np.asarray([m.beta for m in members], np.float32)
    hyper = {"beta": beta, "learning_rate": np.asarray([m.learning_rate for m in members], np.float32)}
    patience = config.schedule.early_stopping_patience
    writer_process = jax.process_index() == 0

    with jax.default_matmul_precision(config.optimiser.jax_matmul_precision):
        states = population.init_states(keys["init"], plan.model, config.optimiser.recipe)
        # A copy: the state's buffers are donated to the next epoch.
        tree = (
            {"state": states, "best_params": jax.tree.map(jnp.copy, states.params)} if patience else {"state": states}
        )
        tracker = tracking.Tracker(size, patience, config.loss.kl_warmup_epochs)
        start_epoch = 0
        if checkpoint_dir is not None:
            existing = checkpoint.list_checkpoints(checkpoint_dir)
            if resume:
                restored = checkpoint.restore_latest(
                    checkpoint_dir,
                    parallel.to_host(tree),
                    lambda extra, path: _check_same_run(extra["run"], definition, path),
                )
                if restored is None:
                    warnings.warn(
                        f"no readable checkpoint in {checkpoint_dir}; starting from epoch 1",
                        checkpoint.CheckpointWarning,
                        stacklevel=2,
                    )
                else:
                    tree, start_epoch, extra, path = restored
                    if start_epoch > config.schedule.epochs:
                        fail(
                            "epochs",
                            f"{config.schedule.epochs} is less than the {start_epoch} epochs already in {path}",
                        )
                    tracker = tracking.Tracker.from_json(extra["tracker"], patience, config.loss.kl_warmup_epochs)
            elif existing:
                raise RunDirError(
                    f"{checkpoint_dir} already holds checkpoints ({existing[-1].name}); resume them or "
                    "choose an empty directory"
                )

        if mesh is None:
            fit_data, val_data = jnp.asarray(fit_images), jnp.asarray(val_images)
            tree = jax.tree.map(jnp.asarray, tree)
        else:
            fit_data = parallel.shard_rows(fit_images, mesh)
            val_data = parallel.put(val_images, parallel.sharding(mesh))
            tree = parallel.put(parallel.to_host(tree), parallel.sharding(mesh, parallel.MEMBERS))
        del fit_images

        name = getattr(plan.model, "NAME", "custom")
        bar = tqdm(
            range(start_epoch, config.schedule.epochs),
            desc=f"VAE {name} ({config.optimiser.recipe}, {size} model{'s' * (size > 1)})",
            unit="epoch",
            file=sys.stdout,
            dynamic_ncols=True,
            initial=start_epoch,
            total=config.schedule.epochs,
            disable=not (progress and writer_process),
        )
        start = time.perf_counter()
        epochs_run = start_epoch
        for epoch in bar:
            if tracker.all_stopped():
                break
            epoch_hyper = {**hyper, "beta": beta * tracker.kl_weight(epoch)}
            states, train_metrics = plan.epoch(
                tree["state"],
                jax.tree.map(jnp.asarray, epoch_hyper),
                fit_data,
                jax.vmap(epoch_key, (0, None))(keys["train"], epoch),
            )
            val = plan.validate(states.params, val_data, keys["validation"], jnp.asarray(beta))
            train_metrics, val = parallel.to_host(train_metrics), parallel.to_host(val)
            tree = {**tree, "state": states}
            records = tracker.record(epoch, train_metrics, val)
            if tracker.newly_diverged and size == 1:
                _raise_diverged(tracker.diverged[0], steps_per_epoch, checkpoint_dir)
            if tracker.all_diverged():
                _raise_diverged(tracker.diverged[0], steps_per_epoch, checkpoint_dir, population=size)
            if patience:
                tree["best_params"] = population.keep_improved(
                    tree["best_params"], states.params, jnp.asarray(tracker.improved)
                )
            epochs_run = epoch + 1
            # The writers first: a run stopped between the two resumes from the previous checkpoint
            # and writes this epoch again (the writers drop its first lines); the other order would
            # lose this epoch's lines for good.
            if writer_process:
                for writer in writers:
                    writer.write(epoch + 1, [{**dataclasses.asdict(m), **r} for m, r in zip(members, records)])
            if checkpoint_dir is not None and writer_process:
                checkpoint.save(
                    checkpoint_dir,
                    epoch + 1,
                    tree,
                    {
                        "run": definition,
                        "members": _member_dicts(members),
                        "tracker": tracker.to_json(time.perf_counter() - start),
                    },
                    keep=keep_checkpoints,
                )
            bar.set_postfix(tracker.postfix())
        bar.close()
        seconds = time.perf_counter() - start
        tracker.seconds_total += seconds

    params = parallel.to_host(tree["best_params"] if patience else tree["state"].params)
    return FitResult(
        config=config,
        model=plan.model,
        members=members,
        params=params,
        history=tracker.history_arrays(),
        epochs_run=epochs_run,
        best_epoch=np.asarray(tracker.best_epoch) if patience else None,
        diverged=tracker.diverged,
        seconds=seconds,
        examples_trained=program.num_examples * sum(tracker.epochs_trained(start_epoch, epochs_run)),
        total_seconds=tracker.seconds_total,
        invocations=tracker.invocations,
    )


def _check_arguments(checkpoint_dir, resume: bool, keep_checkpoints: int, writers) -> None:
    """`fit`'s arguments besides the config, checked before any work (a notebook passes them directly)."""
    if resume and checkpoint_dir is None:
        raise UsageError("resume=True needs the checkpoint_dir to resume from")
    if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
        raise UsageError(f"keep_checkpoints must be a positive integer, got {keep_checkpoints!r}")
    if checkpoint_dir is not None and Path(checkpoint_dir).exists() and not Path(checkpoint_dir).is_dir():
        raise UsageError(f"checkpoint_dir {str(checkpoint_dir)!r} exists and is not a folder")
    for writer in writers:
        if not (callable(getattr(writer, "write", None)) and callable(getattr(writer, "close", None))):
            raise UsageError(f"writers must have write(epoch, records) and close() (aejax.io.writers), got {writer!r}")


def _check_same_run(recorded: dict, definition: dict, path: Path) -> None:
    # A setting the recorded run lacks was added since: that run had its default.
    recorded = {**Config().run_definition(), **recorded}
    changed = {k: (recorded.get(k), v) for k, v in definition.items() if recorded.get(k) != v}
    if changed:
        differences = ", ".join(
            f"the training data (SHA-256 {old[:12] if old else None}… now {new[:12]}…)"
            if k == "data_sha256"
            else f"--{k.replace('_', '-')} {old!r} (now {new!r})"
            for k, (old, new) in changed.items()
        )
        raise RunDirError(
            f"--resume: {path} comes from a run with different settings: {differences}; pass the "
            "same settings to continue it, or use another --out for a new run"
        )


def _raise_diverged(where: dict, steps_per_epoch: int, checkpoint_dir, population: int = 1) -> None:
    step = f"step {where['step'] + 1} of {steps_per_epoch}" if where["step"] >= 0 else "validation"
    kept = checkpoint.list_checkpoints(checkpoint_dir) if checkpoint_dir is not None else []
    who = f"all {population} models" if population > 1 else "training"
    raise FloatingPointError(
        f"non-finite loss at epoch {where['epoch']}, {step}; {who} stopped. "
        + (f"The last good checkpoint is {kept[-1]}. " if kept else "")
        + "Lower --learning-rate or --beta, or check the input data."
    )
