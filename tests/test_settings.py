"""The nested config: every setting declared once, reached by one name from flags, notebooks and records."""

import dataclasses

import pytest

from aejax import config as config_lib
from aejax.config import option, section
from aejax.errors import ConfigError, UsageError
from aejax.training import fit, settings
from experiments import common, vae_fashion_mnist


def test_each_setting_has_one_name_one_place_and_one_help():
    found = config_lib.leaves(vae_fashion_mnist.Config)
    names = [leaf.name for leaf in found]
    assert len(names) == len(set(names))
    assert all(leaf.field.metadata.get("help") for leaf in found)
    where = {leaf.name: leaf.path for leaf in found}
    assert where["model"] == ("model",) and where["latent_dim"] == ("model",)  # --model is model.name
    assert where["epochs"] == ("schedule",) and where["dataset"] == ("source",) and where["out"] == ("output",)
    # The library's config holds the training settings only; the script adds its data source and output.
    assert {leaf.path[0] for leaf in config_lib.leaves(fit.Config)} == {
        "model",
        "data",
        "loss",
        "optimiser",
        "schedule",
        "population",
    }


def test_replace_reaches_settings_in_any_section_and_checks_them():
    config = fit.Config().replace(latent_dim=2, epochs=3, num_seeds=4, model="conv")
    assert (config.model.latent_dim, config.schedule.epochs, config.population.num_seeds) == (2, 3, 4)
    assert config.model.name == "conv" and config.model.build((8, 8)).latent_dim == 2
    assert config_lib.flatten(config)["latent_dim"] == 2
    assert config_lib.build(fit.Config, config_lib.flatten(config)) == config  # a round trip by name
    assert fit.Config() == settings.Config(model=settings.ModelSettings(), schedule=settings.ScheduleSettings())
    with pytest.raises(UsageError, match="Config has no setting 'epoch'; its settings are"):
        fit.Config().replace(epoch=3)
    with pytest.raises(ConfigError, match="latent_dim must be of type int"):  # the section checks its own
        fit.Config().replace(latent_dim="2")
    with pytest.raises(ConfigError, match="epochs must be at least 2 with --recipe improved"):  # and the whole
        fit.Config().replace(recipe="improved", epochs=1)
    with pytest.raises(ConfigError, match="model must be of type"):
        fit.Config(model="conv")


def test_the_flags_are_the_settings_names():
    parser = common.config_parser(vae_fashion_mnist.Config, "")
    args = parser.parse_args(["--latent-dim", "2", "--hidden-sizes", "30,20", "--binarize", "--dataset", "digits"])
    config = common.config_from_args(vae_fashion_mnist.Config, args)
    assert config.model.latent_dim == 2 and config.model.hidden_sizes == (30, 20)
    assert config.data.binarize and config.source.dataset == "digits"
    assert config == vae_fashion_mnist.Config().replace(
        latent_dim=2, hidden_sizes=(30, 20), binarize=True, dataset="digits"
    )
    # The run's definition leaves out what only the script knows (where the data and output live).
    assert config.run_definition() == fit.Config().replace(binarize=True).run_definition()
    groups = {group.title for group in parser._action_groups}
    assert {"model", "data", "loss", "optimiser", "schedule", "population", "source", "output", "cluster"} <= groups


def test_a_setting_declared_twice_is_refused():
    @dataclasses.dataclass(frozen=True)
    class First:
        epochs: int = option(1, "epochs")

    @dataclasses.dataclass(frozen=True)
    class Second:
        epochs: int = option(2, "again")

    @dataclasses.dataclass(frozen=True)
    class Both:
        first: First = section(First)
        second: Second = section(Second)

    with pytest.raises(TypeError, match=r"declares the settings \['epochs'\] more than once"):
        config_lib.leaves(Both)


def test_grid_points_group_members_by_hyperparameters_in_order_of_appearance():
    rows = [{"seed": s, "beta": b, "learning_rate": 1e-3} for s, b in [(0, 1.0), (1, 0.5), (2, 1.0), (3, 0.5)]]
    points = settings.grid_points(rows)
    assert [point for point, _ in points] == [
        {"beta": 1.0, "learning_rate": 1e-3},
        {"beta": 0.5, "learning_rate": 1e-3},
    ]
    assert [[row["seed"] for row in group] for _, group in points] == [[0, 2], [1, 3]]
