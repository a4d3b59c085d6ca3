"""Train the classifier whose features score generated images (aejax.evaluation.sample_quality).

    python -m experiments.train_classifier [--dataset fashion_mnist --epochs 15 --out runs/classifier]

Trains on the data set's labelled training split and measures its accuracy on the test split.
Writes classifier.msgpack (the params with a manifest: classes, layers, image shape, test accuracy,
data set, and the scores of real training images against the test images: what a perfect generator
scores) and metrics.json. `experiments.evaluate_vae --classifier runs/classifier/classifier.msgpack`
then reports the Fréchet distance, precision and recall of a model's samples in its features.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax

from aejax import data, runtime
from aejax.config import check_types, fail, option, section
from aejax.data import sources
from aejax.errors import DataError
from aejax.evaluation import sample_quality
from aejax.io import runs
from aejax.io.files import write_json
from aejax.training import fit, settings
from experiments import common

KIND = "train_classifier"
OUTPUTS = ("classifier.msgpack", "metrics.json", common.TRACEBACK)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How the classifier trains."""

    epochs: int = option(15, "training epochs (Adam, cosine decay from 1e-3)")
    batch_size: int = option(128, "minibatch size")
    seed: int = option(0, f"seed of the initialisation and shuffling (0..{settings.MAX_SEED})")
    out: str = option("runs/classifier", "output folder")
    overwrite: bool = option(False, "replace an earlier classifier in --out")

    def __post_init__(self):
        check_types(self)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                fail(name, f"must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.seed <= settings.MAX_SEED:
            fail("seed", f"must be in 0..{settings.MAX_SEED}, got {self.seed}")


@dataclasses.dataclass(frozen=True)
class Config:
    """The classifier's data set and training."""

    source: sources.Settings = section(sources.Settings)
    training: TrainingSettings = section(TrainingSettings)


def run(config: Config) -> int:
    training = config.training
    runs.check_folder(training.out, KIND, overwrite=training.overwrite, outputs=OUTPUTS, resumable=False)
    splits = config.source.load_splits(("train", "test"))
    for split in splits.values():
        if split.labels is None:
            raise DataError(
                f"{config.source.dataset}: the {split.source} images have no labels to train a classifier on"
            )
    train, test = (data.unit_float_images(f"{name} images", splits[name].images) for name in ("train", "test"))
    definition = {
        **dataclasses.asdict(config.source),
        **{k: v for k, v in dataclasses.asdict(training).items() if k not in ("out", "overwrite")},
        "data_sha256": fit.fingerprint(splits["train"].images),
    }
    out = Path(training.out)
    environment = runtime.describe("default")
    with runs.claim(
        out,
        KIND,
        definition,
        overwrite=training.overwrite,
        outputs=OUTPUTS,
        resumable=False,
        details={"environment": environment},
    ):
        start = time.perf_counter()
        classifier = sample_quality.train_classifier(
            train,
            splits["train"].labels,
            jax.random.key(training.seed),
            training.epochs,
            training.batch_size,
            held_out=(test, splits["test"].labels),
        )
        seconds = time.perf_counter() - start
        data_set = dataclasses.asdict(config.source)
        described = sample_quality.save(
            out / "classifier.msgpack", classifier, {"data": data_set, "seed": training.seed}
        )
        write_json(
            out / "metrics.json",
            {**described, "train_wall_seconds": seconds, "epochs": training.epochs, "environment": environment},
        )
    reference = classifier.reference
    print(
        f"classifier: test accuracy {classifier.accuracy:.4f} on {len(test)} {config.source.dataset} test images, "
        f"{training.epochs} epochs, {seconds:.0f} s; {min(len(train), len(test))} training images against the "
        f"test images (a perfect generator): Fréchet distance {reference['frechet_distance']:.2f}, precision "
        f"{reference['precision']:.3f}, recall {reference['recall']:.3f} -> {out / 'classifier.msgpack'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return common.main(Config, __doc__, run, argv)


if __name__ == "__main__":
    sys.exit(main())
