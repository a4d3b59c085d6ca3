"""Sample quality without the network: a classifier trained in-project, and the Fréchet distance
and precision/recall of generated images in its feature space.

The classifier (`Classifier`: two stride-2 3 x 3 convolutions with 64 and 128 channels, then
Dense 128 (the features) and Dense to the classes; selu) trains on a data set's labelled training
split (`train_classifier`: Adam with cosine decay, random horizontal flips). Its penultimate
activations are the feature space:
- `frechet_distance`: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between the features'
  Gaussian fits (Heusel et al. 2017), in float64;
- `precision_recall`: the share of generated images inside the real images' k-NN manifold, and
  of real images inside the generated ones' (Kynkäänniemi et al. 2019, k = 3).
These are the usual definitions in another feature space: the numbers compare models scored with
the same classifier, never with Inception-based FID.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
from flax import linen as nn
from tqdm import tqdm

from aejax.errors import ParamsFileError
from aejax.io import params_file
from aejax.models.conv import Conv3x3
from aejax.models.kernels import selu
from aejax.training.train import TrainState, ceil_div, epoch_schedule

FEATURES = 128
NOTE = (
    f"in the in-project classifier's {FEATURES} penultimate features (aejax.evaluation.sample_quality); "
    "not comparable with Inception-based FID"
)


class Classifier(nn.Module):
    """Images (N, H, W) or (N, H, W, C) in [0, 1] -> (features (N, 128), logits (N, num_classes))."""

    num_classes: int
    channels: tuple[int, ...] = (64, 128)

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x[..., None] if x.ndim == 3 else x
        h = 2.0 * h - 1.0
        for channels in self.channels:
            h = selu(Conv3x3(channels, 2)(h))
        features = selu(nn.Dense(FEATURES)(h.reshape(h.shape[0], -1)))
        return features, nn.Dense(self.num_classes)(features)


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    """A classifier's params with what they were trained on; `accuracy` on held-out images, and
    `reference`, the `scores` of real images against held-out ones, where measured."""

    num_classes: int
    channels: tuple[int, ...]
    image_shape: tuple[int, ...]
    params: dict
    accuracy: float
    reference: dict[str, float] | None = None

    @property
    def module(self) -> Classifier:
        return Classifier(self.num_classes, self.channels)


def _loss(module, params, x, labels, weights):
    logits = module.apply({"params": params}, x)[1]
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(per_example * weights) / jnp.sum(weights)


def _flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """Each image (N, H, W[, C]) mirrored left-right with probability 1/2."""
    flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    return jnp.where(flip.reshape((-1,) + (1,) * (x.ndim - 1)), x[:, :, ::-1], x)


@functools.partial(jax.jit, static_argnames=("module", "batch_size", "epochs"), donate_argnums=(1,))
def _train_epoch(module, state, images, labels, key, batch_size, epochs):
    order, weights, step_keys = epoch_schedule(key, images.shape[0], batch_size)
    schedule = optax.cosine_decay_schedule(1e-3, epochs * order.shape[0], alpha=0.01)

    def step(state, batch):
        rows, w, step_key = batch
        x = _flip(step_key, images[rows])
        grads = jax.grad(_loss, argnums=1)(module, state.params, x, labels[rows], w)
        return state.apply_gradients(grads, optax.adam(schedule(state.step))), None

    return jax.lax.scan(step, state, (order, weights, step_keys))[0]


@functools.partial(jax.jit, static_argnames=("module",))
def _apply(module, params, x):
    return module.apply({"params": params}, x)


def apply_batched(classifier: TrainedClassifier, images: np.ndarray, batch_size: int = 500):
    """(features (N, 128), logits (N, classes)) of images in [0, 1], `batch_size` at a time."""
    module, count = classifier.module, len(images)
    padded = np.concatenate([images, np.zeros((-count % batch_size,) + images.shape[1:], images.dtype)])
    outputs = [
        _apply(module, classifier.params, jnp.asarray(padded[i : i + batch_size])) for i in range(0, count, batch_size)
    ]
    return tuple(np.concatenate([np.asarray(o[part]) for o in outputs])[:count] for part in (0, 1))


def accuracy(classifier: TrainedClassifier, images: np.ndarray, labels: np.ndarray) -> float:
    """The share of images whose most likely class is their label."""
    return float(np.mean(np.argmax(apply_batched(classifier, images)[1], axis=1) == labels))


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    key: jax.Array,
    epochs: int = 15,
    batch_size: int = 128,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = True,
    channels: tuple[int, ...] = Classifier.channels,
) -> TrainedClassifier:
    """Trains the classifier (Adam, cosine decay from 1e-3, random flips) on images (N, H, W[, C])
    in [0, 1] with integer labels (N,); its `accuracy` is measured on `held_out` (images, labels),
    if given, else on the training images. With `held_out`, its `reference` is the `scores` of as
    many training images against the held-out ones: what a perfect generator scores."""
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(
            f"labels must be (N,) = ({len(images)},) non-negative integers, got {labels.shape} {labels.dtype}"
        )
    num_classes = int(labels.max()) + 1
    module = Classifier(num_classes, tuple(channels))
    init_key, epoch_root = jax.random.split(key)
    params = module.init(init_key, jnp.zeros((1,) + images.shape[1:]))["params"]
    state = TrainState.create(params, optax.adam(1e-3))
    x, y = jnp.asarray(images, jnp.float32), jnp.asarray(labels, jnp.int32)
    for epoch in tqdm(range(epochs), desc="classifier", unit="epoch", file=sys.stdout, disable=not progress):
        state = _train_epoch(module, state, x, y, jax.random.fold_in(epoch_root, epoch), batch_size, epochs)
        jax.block_until_ready(state)  # the progress bar counts finished epochs, not dispatched ones
    params = jax.tree.map(np.asarray, state.params)
    trained = TrainedClassifier(num_classes, module.channels, tuple(images.shape[1:]), params, 0.0)
    if held_out is None:
        return dataclasses.replace(trained, accuracy=accuracy(trained, images, labels))
    held_out_images, held_out_labels = held_out
    return dataclasses.replace(
        trained,
        accuracy=accuracy(trained, held_out_images, np.asarray(held_out_labels)),
        reference=scores(trained, held_out_images, images[: len(held_out_images)]),
    )


def save(path: str | Path, classifier: TrainedClassifier, details: dict) -> dict:
    """Writes the classifier to `path` (`aejax.io.params_file`, its manifest's "classifier": its
    description with `details`); returns the description."""
    described = {
        "num_classes": classifier.num_classes,
        "channels": list(classifier.channels),
        "image_shape": list(classifier.image_shape),
        "test_accuracy": classifier.accuracy,
        "training_images_vs_test": classifier.reference,
        **details,
    }
    stacked = jax.tree.map(lambda leaf: np.asarray(leaf)[None], classifier.params)
    params_file.write(path, stacked, {"classifier": described, "members": [{}]})
    return described


def load(path: str | Path, flag: str = "--classifier") -> TrainedClassifier:
    """The classifier `save` wrote to `path`; ParamsFileError naming `flag` for any other file."""
    members, manifest, _ = params_file.read(path, flag=flag)
    described = manifest.get("classifier")
    if not isinstance(described, dict):
        raise ParamsFileError(
            f"{flag} {str(path)!r} holds no classifier (it was not written by experiments.train_classifier)"
        )
    return TrainedClassifier(
        described["num_classes"],
        tuple(described["channels"]),
        tuple(described["image_shape"]),
        members[0],
        described["test_accuracy"],
        described.get("training_images_vs_test"),
    )


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussian fits of two feature sets (N, D) and (M, D), float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"features must be (N, D) and (M, D) with N, M >= 2, got {a.shape} and {b.shape}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    root = np.real(root)  # rounding can leave imaginary parts of ~1e-10
    return float(np.sum(np.square(mean_a - mean_b)) + np.trace(cov_a + cov_b - 2.0 * root))


def _chunks(queries: jax.Array, chunk_size: int) -> jax.Array:
    n = queries.shape[0]
    padded = jnp.pad(queries, ((0, ceil_div(n, chunk_size) * chunk_size - n), (0, 0)))
    return padded.reshape(-1, chunk_size, queries.shape[1])


def _squared_distances(queries: jax.Array, points: jax.Array) -> jax.Array:
    """(Q, M) squared Euclidean distances, at full float32 precision on every backend."""
    cross = jnp.matmul(queries, points.T, precision=jax.lax.Precision.HIGHEST)
    norms = jnp.sum(jnp.square(points), axis=1)
    return jnp.maximum(jnp.sum(jnp.square(queries), axis=1)[:, None] + norms[None] - 2.0 * cross, 0.0)


@functools.partial(jax.jit, static_argnames=("k", "chunk_size"))
def _kth_neighbour_radii(points: jax.Array, k: int, chunk_size: int) -> jax.Array:
    """Squared distance of each point to its k-th nearest other point, (N,)."""
    # The point itself is at distance 0: the (k + 1)-th smallest is the k-th other.
    radii = jax.lax.map(
        lambda q: -jax.lax.top_k(-_squared_distances(q, points), k + 1)[0][:, k], _chunks(points, chunk_size)
    )
    return radii.reshape(-1)[: points.shape[0]]


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _inside(queries: jax.Array, points: jax.Array, radii: jax.Array, chunk_size: int) -> jax.Array:
    """For each query, whether it lies within some point's radius (the points' k-NN manifold), (N,)."""
    inside = jax.lax.map(
        lambda q: jnp.any(_squared_distances(q, points) <= radii[None], axis=1), _chunks(queries, chunk_size)
    )
    return inside.reshape(-1)[: queries.shape[0]]


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3, chunk_size: int = 500) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of generated features against real
    ones, (N, D) and (M, D): precision, the share of generated points inside the union of the real
    points' k-NN balls; recall, the share of real points inside the generated points' balls."""
    real, generated = jnp.asarray(real, jnp.float32), jnp.asarray(generated, jnp.float32)
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"precision/recall with k = {k} need more than {k} points in each set")
    real_radii = _kth_neighbour_radii(real, k, chunk_size)
    generated_radii = _kth_neighbour_radii(generated, k, chunk_size)
    return {
        "precision": float(jnp.mean(_inside(generated, real, real_radii, chunk_size))),
        "recall": float(jnp.mean(_inside(real, generated, generated_radii, chunk_size))),
    }


def scores(classifier: TrainedClassifier, real: np.ndarray, generated: np.ndarray, k: int = 3) -> dict[str, float]:
    """{"frechet_distance", "precision", "recall"} of generated images against real ones, both in
    [0, 1] and of the classifier's image shape."""
    for name, images in (("real", real), ("generated", generated)):
        if tuple(images.shape[1:]) != classifier.image_shape:
            raise ValueError(
                f"{name} images have shape {images.shape[1:]}, the classifier takes {classifier.image_shape}"
            )
    real_features = apply_batched(classifier, real)[0]
    generated_features = apply_batched(classifier, generated)[0]
    return {
        "frechet_distance": frechet_distance(real_features, generated_features),
        **precision_recall(real_features, generated_features, k),
    }
