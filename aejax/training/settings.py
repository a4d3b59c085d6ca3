"""A training run's settings: one frozen config in sections, each setting declared once with its help.

>>> config = Config()                                   # the chapter's VAE recipe
>>> config.model.latent_dim, config.schedule.epochs
(10, 25)
>>> config.replace(latent_dim=2, num_seeds=3).population.num_seeds
3

The sections are `model`, `data`, `loss`, `optimiser`, `schedule` and `population`. The scripts'
flags are the settings' names (`--latent-dim`, `--num-seeds`: `aejax.config.leaves`), and so are
`run_definition`'s keys, which a resumed run must share with its checkpoints. Each section checks
its own settings; `Config` checks how they combine.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from aejax.config import check_types, fail, flatten, leaves, option, replace, section
from aejax.models import conv, hvae, likelihoods, mlp, priors, registry, vae
from aejax.training import recipes

SWEEPABLE = ("beta", "learning_rate")
MAX_SEED = 2**32 - 1  # jax.random.key(s) wraps modulo 2**32 (without x64): larger seeds alias smaller ones
MATMUL_PRECISIONS = ("default", "high", "highest")


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Which model of aejax/models/ and its sizes (a model passed to `fit` takes their place)."""

    name: str = option(
        "mlp",
        "the VAE: 'mlp' (the chapter's, aejax/models/mlp.py), 'conv' (convolutional, aejax/models/conv.py), "
        "'hvae' (two stochastic layers, aejax/models/hvae.py) or 'conv_hvae' (the hvae with convolutions "
        "where the image goes in and comes out)",
        choices=registry.NAMES,
        flag="model",
    )
    hidden_sizes: tuple[int, ...] = option(
        (150, 100),
        "mlp, hvae, conv_hvae: encoder hidden layer sizes, e.g. 300,300; the mlp's decoder mirrors them "
        "(hvae, conv_hvae: its MLPs' sizes, aejax/models/hvae.py)",
    )
    channels: tuple[int, ...] = option(
        (16, 32, 64), "conv, conv_hvae: channels of the stride-2 3x3 convolutions; the decoder mirrors them"
    )
    latent_dim: int = option(10, "size of the latent codings z (hvae, conv_hvae: of each of their two layers)")
    activation: str = option(
        "selu",
        "hidden units and convolutions, 'selu' (the chapter's) or 'gated' ((W x + b) * "
        "sigmoid(V x + c), as the literature's VAEs)",
        choices=mlp.ACTIVATIONS,
    )
    prior: str = option(
        "standard",
        "p(z) (hvae, conv_hvae: of the top layer): 'standard' (N(0, I)) or 'vamp' (the VampPrior: a mixture of the "
        "encoder's posteriors at learned pseudo-inputs, Tomczak & Welling 2018)",
        choices=priors.NAMES,
    )
    num_pseudo_inputs: int = option(500, "vamp: number of pseudo-inputs (mixture components)")

    def __post_init__(self):
        check_types(self)
        if self.name not in registry.NAMES:
            fail("model", f"must be one of {registry.NAMES}, got {self.name!r}")
        self.build((28, 28))  # the model checks its own settings

    def build(self, image_shape: tuple[int, ...]) -> vae.Model:
        """The model these settings describe, for images of `image_shape` ((H, W) or (H, W, C))."""
        image_shape = tuple(int(s) for s in image_shape)
        if self.name == "conv":
            model = conv.Conv(self.channels, self.latent_dim, image_shape, self.activation)
        elif self.name == "hvae":
            model = hvae.HVAE(self.hidden_sizes, self.latent_dim, self.activation, image_shape)
        elif self.name == "conv_hvae":
            model = hvae.ConvHVAE(self.hidden_sizes, self.latent_dim, self.activation, image_shape, self.channels)
        else:
            model = mlp.MLP(self.hidden_sizes, self.latent_dim, self.activation, image_shape)
        return priors.with_prior(model, self.prior, self.num_pseudo_inputs)


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """What training does with the images it is given."""

    binarize: bool = option(
        False,
        "dynamic binarization: train on Bernoulli draws of the grey levels, new each "
        "time a batch is used, and validate and test on images binarized once (the "
        "literature's protocol; with --likelihood bernoulli)",
    )
    num_validation: int = option(5000, "the last N training images are held out for validation")

    def __post_init__(self):
        check_types(self)
        _check_positive(self, "num_validation")


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The training objective: the observation model, the KL term's weight, and the bound (ELBO or IWAE)."""

    likelihood: str = option(
        "bernoulli",
        "observation model: 'bernoulli' (the chapter's; on grey levels a "
        "cross-entropy, not a density) or 'continuous_bernoulli' (a density on [0, 1])",
        choices=likelihoods.KINDS,
    )
    beta: float = option(1.0, "weight of the KL term (beta-VAE); 1 is the chapter's VAE")
    kl_warmup_epochs: int = option(0, "KL warm-up: the KL weight grows linearly to beta over this many epochs (0: off)")
    objective: str = option(
        "elbo",
        "what training maximises (and validation scores): 'elbo', or 'iwae' (the importance-weighted "
        "bound of Burda et al. 2015, with --train-samples draws)",
        choices=vae.OBJECTIVES,
    )
    train_samples: int = option(1, "latent draws per image in each training step and validation (iwae: its k)")

    def __post_init__(self):
        check_types(self)
        if self.likelihood not in likelihoods.KINDS:
            fail("likelihood", f"must be one of {likelihoods.KINDS}, got {self.likelihood!r}")
        _check_beta("beta", self.beta)
        if self.kl_warmup_epochs < 0:
            fail("kl_warmup_epochs", f"must be >= 0, got {self.kl_warmup_epochs}")
        if self.objective not in vae.OBJECTIVES:
            fail("objective", f"must be one of {vae.OBJECTIVES}, got {self.objective!r}")
        _check_positive(self, "train_samples")


@dataclasses.dataclass(frozen=True)
class OptimiserSettings:
    """How each step updates the parameters: the recipe, its peak rate, and the matmuls' precision."""

    recipe: str = option(
        "chapter",
        "optimiser recipe: 'chapter' (Keras RMSprop, as the book), 'improved' (Adam, "
        "warm-up + cosine decay), 'adam' (Adam, constant rate)",
        choices=tuple(recipes.RECIPES),
    )
    learning_rate: float | None = option(
        None, "peak learning rate (default: the recipe's, 1e-3 chapter / 4e-3 improved / 1e-3 adam)"
    )
    matmul_precision: str = option(
        "default",
        "matmul precision (jax_default_matmul_precision): 'highest' is full "
        "float32 on every backend; 'default' lets GPUs/TPUs use TF32/bf16 passes",
        choices=MATMUL_PRECISIONS,
    )

    def __post_init__(self):
        check_types(self)
        if self.recipe not in recipes.RECIPES:
            fail("recipe", f"must be one of {tuple(recipes.RECIPES)}, got {self.recipe!r}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            fail("matmul_precision", f"must be one of {MATMUL_PRECISIONS}, got {self.matmul_precision!r}")
        if self.learning_rate is not None:
            _check_learning_rate("learning_rate", self.learning_rate)

    @property
    def jax_matmul_precision(self) -> str | None:
        """What `jax.default_matmul_precision` takes: None keeps the backend's default."""
        return None if self.matmul_precision == "default" else self.matmul_precision

    @property
    def peak_learning_rate(self) -> float:
        return recipes.get(self.recipe).default_learning_rate if self.learning_rate is None else self.learning_rate


@dataclasses.dataclass(frozen=True)
class ScheduleSettings:
    """How long and in what batches training runs."""

    epochs: int = option(25, "training epochs (the most, with --early-stopping-patience)", resume_may_change=True)
    batch_size: int = option(128, "minibatch size")
    early_stopping_patience: int | None = option(
        None,
        "stop a model after this many epochs without a lower "
        "validation loss (counted after KL warm-up) and keep its best "
        "epoch's parameters (default: train all epochs, keep the last)",
    )

    def __post_init__(self):
        check_types(self)
        _check_positive(self, "epochs")
        _check_positive(self, "batch_size")
        if self.early_stopping_patience is not None:
            _check_positive(self, "early_stopping_patience")


@dataclasses.dataclass(frozen=True)
class PopulationSettings:
    """Which models train together in one program: seeds crossed with a grid of hyperparameters."""

    seed: int = option(42, f"seed of the root key (0..{MAX_SEED}): initialisation, shuffling, noise, figures")
    num_seeds: int = option(1, "population: train seeds seed, seed+1, …, seed+N-1 together")
    sweep: tuple[tuple[str, tuple[float, ...]], ...] = option(
        (), f"population: NAME=v1,v2,… (repeatable; NAME in {SWEEPABLE}); the grid is crossed with the seeds"
    )

    def __post_init__(self):
        check_types(self)
        _check_positive(self, "num_seeds")
        if not 0 <= self.seed <= MAX_SEED:
            fail("seed", f"must be in 0..{MAX_SEED} (larger or negative seeds alias others), got {self.seed}")
        if self.seed + self.num_seeds - 1 > MAX_SEED:
            fail("num_seeds", f"{self.num_seeds} from --seed {self.seed} would pass the largest seed {MAX_SEED}")
        names = [name for name, _ in self.sweep]
        for name, values in self.sweep:
            if name not in SWEEPABLE:
                fail("sweep", f"names must be in {SWEEPABLE}, got {name!r}")
            if names.count(name) > 1:
                fail("sweep", f"gives {name!r} twice; give all its values once: {name}=v1,v2,…")
            if not values or len(set(values)) != len(values):
                fail("sweep", f"{name} needs one or more distinct values, got {list(values)}")
            for value in values:
                (_check_beta if name == "beta" else _check_learning_rate)("sweep", value, f"{name} value ")

    def grid(self) -> dict[str, tuple[float, ...]]:
        return dict(self.sweep)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a training run; the defaults are the chapter's VAE recipe."""

    model: ModelSettings = section(ModelSettings)
    data: DataSettings = section(DataSettings)
    loss: LossSettings = section(LossSettings)
    optimiser: OptimiserSettings = section(OptimiserSettings)
    schedule: ScheduleSettings = section(ScheduleSettings)
    population: PopulationSettings = section(PopulationSettings)

    def __post_init__(self):
        check_types(self)
        if self.data.binarize and self.loss.likelihood != "bernoulli":
            fail("binarize", f"needs --likelihood bernoulli (binarized pixels are 0/1), got {self.loss.likelihood!r}")
        recipe, epochs = self.optimiser.recipe, self.schedule.epochs
        if recipes.get(recipe).schedule_uses_epochs and epochs < 2:
            fail(
                "epochs",
                f"must be at least 2 with --recipe {recipe} (one epoch of warm-up, then the decay), got {epochs}",
            )
        grid = self.population.grid()
        if "beta" in grid and self.loss.beta != 1.0:
            fail("beta", f"{self.loss.beta} and --sweep beta=… both set beta; pass one")
        if "learning_rate" in grid and self.optimiser.learning_rate is not None:
            fail(
                "learning_rate",
                f"{self.optimiser.learning_rate} and --sweep learning_rate=… both set the learning rate; pass one",
            )

    def replace(self, **values: Any) -> "Config":
        """This config with the named settings changed, e.g. `config.replace(epochs=3, latent_dim=2)`."""
        return replace(self, **values)

    def members(self) -> list["Member"]:
        """Every (grid point, seed), grid points outer, seeds inner (member i: seed + i % num_seeds)."""
        grid, population = self.population.grid(), self.population
        axes = [grid.get("beta", (self.loss.beta,)), grid.get("learning_rate", (self.optimiser.peak_learning_rate,))]
        return [
            Member(population.seed + offset, float(beta), float(rate))
            for beta, rate in itertools.product(*axes)
            for offset in range(population.num_seeds)
        ]

    def run_definition(self) -> dict[str, Any]:
        """The settings a resumed run must share with its checkpoints, by name: all of them except
        those that may change on resume (epochs, unless the recipe's schedule depends on it) and the
        model section's (`fit.prepare` records the model itself: `aejax.models.registry.to_dict`)."""
        own = leaves(Config)  # a script's config may add sections of its own (data sources, output)
        flexible = {leaf.name for leaf in own if leaf.field.metadata.get("resume_may_change")}
        flexible |= {leaf.name for leaf in leaves(ModelSettings)}
        if recipes.get(self.optimiser.recipe).schedule_uses_epochs:
            flexible.discard("epochs")
        values = flatten(self)
        return {leaf.name: _jsonable(values[leaf.name]) for leaf in own if leaf.name not in flexible}


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of a population: its seed and hyperparameters."""

    seed: int
    beta: float
    learning_rate: float


def grid_points(rows: list[dict]) -> list[tuple[dict, list[dict]]]:
    """Rows of a population's members (each holding its `SWEEPABLE` hyperparameters) grouped by grid
    point, in order of appearance: [({"beta": b, "learning_rate": r}, rows), …]. Members of different
    hyperparameters are never pooled."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(name) for name in SWEEPABLE), []).append(row)
    return [(dict(zip(SWEEPABLE, point)), group) for point, group in groups.items()]


def _check_positive(settings: Any, name: str) -> None:
    if getattr(settings, name) < 1:
        fail(name, f"must be a positive integer, got {getattr(settings, name)}")


def _check_beta(field: str, value: float, prefix: str = "") -> None:
    if not 0 <= value < float("inf"):
        fail(field, f"{prefix}must be a finite number >= 0 (beta = 1 is the chapter's VAE), got {value!r}")


def _check_learning_rate(field: str, value: float, prefix: str = "") -> None:
    if not 0 < value < float("inf"):
        fail(field, f"{prefix}must be a finite number > 0, got {value!r}")


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value
