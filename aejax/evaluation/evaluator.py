"""Every number of one trained model on test images: the batched evaluation loop.

`evaluate_model` computes the -ELBO and -IWAE_k bounds per test image (nats), the chapter's loss
and rounded accuracy, the posterior diagnostics (rate, distortion, KL per dimension, active units,
mutual information) and, given a classifier, its samples' quality. The bounds are computed a
batch of test images at a time (`batched`), batch i keyed by fold_in(key, i); a `Progress` keeps
the batches finished so far in a file, so a stopped evaluation continues with only the batches
left and gives the numbers an unbroken one would. `summarize` pools the rows of the members of one
grid point (`aejax.training.settings.grid_points`).

>>> settings = Settings(iwae_ks=(1, 5000))
>>> results, per_image = evaluate_model(settings, model, params, x, "bernoulli")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from aejax import stats
from aejax.errors import RunDirError
from aejax.evaluation import metrics, sample_quality
from aejax.io.files import write_bytes
from aejax.models import vae
from aejax.training.train import ceil_div

SAMPLE_QUALITY = ("frechet_distance", "precision", "recall")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a model is evaluated (the flags of experiments.evaluate_vae)."""

    iwae_ks: tuple[int, ...] = (1, 50, 5000)  # importance samples of each IWAE bound
    elbo_samples: int = 10  # latent draws per image for the Monte Carlo ELBO
    batch_size: int = 100  # test images per compiled call
    num_samples: int = 10000  # with a classifier: images generated per model
    seed: int = 0  # of the evaluation key


def to_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of an .npz file holding `arrays` (for an atomic `write_bytes`)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class Progress:
    """The bounds of the batches an evaluation has finished, by name, kept in the .npz file `path`
    while it runs: written at most every `every` seconds, when a bound is complete and when the
    evaluation is stopped (`save`), so that a resumed evaluation continues after the last batch
    written. Also counts the invocations and the seconds they took."""

    def __init__(self, path: str | Path, resume: bool, every: float = 10.0):
        self.path, self.every = Path(path), every
        self.started = self.saved_at = time.perf_counter()
        self.values: dict[str, np.ndarray] = {}
        self.seconds_before, self.invocations = 0.0, 1
        if resume and self.path.is_file():
            try:
                with open(self.path, "rb") as file, np.load(file) as arrays:  # np.load leaks a bad zip's file
                    self.values = {
                        name: arrays[name] for name in arrays.files if name not in ("seconds", "invocations")
                    }
                    self.seconds_before = float(arrays["seconds"])
                    self.invocations = int(arrays["invocations"]) + 1
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
                raise RunDirError(
                    f"{self.path} is not a readable evaluation progress file ({err}); pass --overwrite to start again"
                ) from None

    def seconds(self) -> float:
        """Seconds spent on this evaluation, over every invocation."""
        return self.seconds_before + time.perf_counter() - self.started

    def batches(self, batch_size: int) -> int:
        """How many batches of `batch_size` images it holds, over every bound."""
        return sum(len(values) for values in self.values.values()) // batch_size

    def finished(self, name: str, batch_size: int, count: int) -> np.ndarray:
        """The values of the batches of bound `name` finished so far (a whole number of batches)."""
        values = self.values.get(name, np.zeros(0, np.float32))
        if len(values) % batch_size or len(values) > count + -count % batch_size:
            raise RunDirError(f"{self.path}: {name} holds {len(values)} values, not whole batches of {batch_size}")
        return values

    def update(self, name: str, values: np.ndarray, complete: bool) -> None:
        self.values[name] = values
        if complete or time.perf_counter() - self.saved_at >= self.every:
            self.save()

    def save(self) -> None:
        payload = {**self.values, "seconds": np.float64(self.seconds()), "invocations": self.invocations}
        write_bytes(self.path, to_npz(payload))
        self.saved_at = time.perf_counter()


def batched(
    fn: Callable[[jax.Array, jax.Array], jax.Array],
    images: jax.Array,
    key: jax.Array,
    batch_size: int,
    desc: str,
    progress: Progress | None = None,
    name: str = "",
) -> np.ndarray:
    """fn(batch, key_i) -> (B,) over all images, batch i keyed by fold_in(key, i), with a progress bar.

    The last batch is zero-padded to full size (its padding's values dropped): one compilation.
    With `progress`, the batches it holds under `name` are not evaluated again, and each new one is
    handed to it.
    """
    count = len(images)
    padded = jnp.pad(images, [(0, -count % batch_size)] + [(0, 0)] * (images.ndim - 1))
    batches = ceil_div(count, batch_size)
    values = [] if progress is None else [progress.finished(name, batch_size, count)]
    first = sum(len(v) for v in values) // batch_size
    shown = tqdm(
        range(first, batches), desc=desc, unit="batch", file=sys.stdout, leave=False, initial=first, total=batches
    )
    for index in shown:
        start = index * batch_size
        values.append(np.asarray(fn(padded[start : start + batch_size], jax.random.fold_in(key, index))))
        if progress is not None:
            progress.update(name, np.concatenate(values), complete=index == batches - 1)
    return np.concatenate(values)[:count]


def mean_and_error(name: str, values: np.ndarray) -> dict[str, float]:
    """The mean of a bound over the test images and its standard error; FloatingPointError if any
    image's value is not finite."""
    if not np.all(np.isfinite(values)):
        raise FloatingPointError(
            f"{name} is not finite for {int(np.sum(~np.isfinite(values)))} test image(s): "
            "the model or its inputs are broken; nothing was written"
        )
    mean, error = stats.mean_and_standard_error(values)
    return {"mean": mean, "standard_error": error}


def keys(seed: int) -> dict[str, jax.Array]:
    """The evaluation's keys, one per use, from `seed`."""
    elbo, iwae, chapter, figures = jax.random.split(jax.random.key(seed), 4)
    reconstruction, mutual_information = jax.random.split(figures)
    return {
        "elbo": elbo,
        "iwae": iwae,
        "chapter": chapter,
        "reconstruction": reconstruction,
        "mutual_information": mutual_information,
        "kl_per_dim": jax.random.fold_in(chapter, 1),
        "samples": jax.random.fold_in(chapter, 2),
    }


def generated_images(settings: Settings, model: vae.Model, params: vae.Params, likelihood: str) -> np.ndarray:
    """`settings.num_samples` images E[x | z], z from the model's prior, 1,000 per compiled call."""
    key, count = keys(settings.seed)["samples"], settings.num_samples
    batches = [
        np.asarray(vae.generate(model, params, jax.random.fold_in(key, i), 1000, likelihood))
        for i in tqdm(range(ceil_div(count, 1000)), desc="samples", unit="batch", file=sys.stdout, leave=False)
    ]
    return np.concatenate(batches)[:count]


def evaluate_model(
    settings: Settings,
    model: vae.Model,
    params: vae.Params,
    x: jax.Array,
    likelihood: str,
    classifier: sample_quality.TrainedClassifier | None = None,
    real: np.ndarray | None = None,
    progress: Progress | None = None,
    member: int = 0,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Every number of one model on the test images x (binarized already, for a model trained so).

    Args:
      classifier, real: with a classifier, its samples' quality against the `real` (grey-level)
        test images.
      progress: the batches finished by a stopped evaluation (this model's under `member`'s index).

    Returns:
      The results (metrics.json's numbers of one model) and the bounds per test image (nats, (N,)
      each, by name: "negative_elbo", "negative_iwae_k{k}").

    Raises:
      FloatingPointError: a bound or diagnostic is not finite (checked as soon as it exists, so a
        broken model stops before the long k = 5,000 pass).
    """
    key = keys(settings.seed)

    def bound(name: str, desc: str, fn: Callable, bound_key: jax.Array) -> np.ndarray:
        return -batched(fn, x, bound_key, settings.batch_size, desc, progress, f"member{member}/{name}")

    per_image = {
        "negative_elbo": bound(
            "negative_elbo",
            "ELBO",
            lambda b, k: metrics.elbo(model, params, b, k, settings.elbo_samples, likelihood),
            key["elbo"],
        )
    }
    results: dict = {
        "test_negative_elbo_nats": mean_and_error("-ELBO", per_image["negative_elbo"]),
        "test_negative_iwae_nats": {},
    }
    for k in settings.iwae_ks:
        name = f"negative_iwae_k{k}"
        per_image[name] = bound(
            name,
            f"IWAE k={k}",
            lambda b, bound_key, k=k: metrics.iwae_bound(model, params, b, bound_key, k, likelihood=likelihood),
            key["iwae"],
        )
        results["test_negative_iwae_nats"][str(k)] = mean_and_error(f"-IWAE k={k}", per_image[name])
    chapter = vae.evaluate(model, params, x, key["chapter"], likelihood=likelihood)
    results["test_chapter_loss"] = float(chapter["loss"])
    results["test_rounded_accuracy"] = float(chapter["rounded_accuracy"])
    per_dim = np.asarray(metrics.kl_per_dim(model, params, x, key["kl_per_dim"]), np.float64)
    activity = np.asarray(metrics.latent_activity(model, params, x), np.float64)
    results["diagnostics"] = {
        "rate_nats": float(chapter["kl"]),
        "distortion_nats": float(vae.num_pixels(model) * chapter["reconstruction"]),
        "kl_per_dim_nats": per_dim.tolist(),
        "latent_activity": activity.tolist(),
        "active_units": int(np.sum(activity > metrics.ACTIVE_UNITS_THRESHOLD)),
        "active_units_threshold": metrics.ACTIVE_UNITS_THRESHOLD,
        "mutual_information_nats": float(metrics.mutual_information(model, params, x, key["mutual_information"])),
        "mutual_information_max_nats": float(np.log(len(x))),
    }
    for name, value in results["diagnostics"].items():
        if not np.all(np.isfinite(value)):
            raise FloatingPointError(f"{name} is not finite: the model or its inputs are broken; nothing was written")
    if classifier is not None:
        generated = generated_images(settings, model, params, likelihood)
        results.update(sample_quality.scores(classifier, real, generated))
        results["num_samples"] = settings.num_samples
    return results, per_image


def summarize(rows: list[dict], ks: list[int] | tuple[int, ...]) -> dict:
    """The rows' (`evaluate_model`'s results of the members of one grid point) mean and Student-t
    95% interval of each number."""
    return {
        "n": len(rows),
        "test_negative_elbo_nats": stats.summarize([r["test_negative_elbo_nats"]["mean"] for r in rows]),
        **{
            f"test_negative_iwae_nats_k{k}": stats.summarize(
                [r["test_negative_iwae_nats"][str(k)]["mean"] for r in rows]
            )
            for k in ks
        },
        "active_units": stats.summarize([r["diagnostics"]["active_units"] for r in rows]),
        "mutual_information_nats": stats.summarize([r["diagnostics"]["mutual_information_nats"] for r in rows]),
        **{name: stats.summarize([r[name] for r in rows]) for name in SAMPLE_QUALITY if name in rows[0]},
    }
