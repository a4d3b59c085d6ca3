"""The model interface: the conv VAE, models of the user's own Flax modules, and the registry."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aejax import data
from aejax.errors import UsageError
from aejax.models import conv, hvae, mlp, registry, vae
from aejax.training import fit


def _gated_conv(latent_dim, image_shape):
    return conv.Conv(latent_dim=latent_dim, image_shape=image_shape, activation="gated")


def _conv_hvae(latent_dim, image_shape):  # two layers of latent_dim
    return hvae.ConvHVAE(hidden_sizes=(32,), layer_dim=latent_dim, image_shape=image_shape, channels=(4, 8))


@pytest.mark.parametrize(
    "make, image_shape",
    [
        (conv.Conv, (28, 28)),
        (conv.Conv, (32, 32, 3)),
        (conv.Conv, (7, 9, 2)),
        (_gated_conv, (7, 9, 2)),
        (mlp.MLP, (8, 8)),
        (mlp.MLP, (32, 32, 3)),
        (_conv_hvae, (28, 28)),
        (_conv_hvae, (7, 9, 2)),
    ],
    ids=[
        "conv-28x28",
        "conv-32x32x3",
        "conv-7x9x2",
        "conv-gated-7x9x2",
        "mlp-8x8",
        "mlp-32x32x3",
        "conv_hvae-28x28",
        "conv_hvae-7x9x2",
    ],
)
def test_models_size_themselves_from_the_image_shape(make, image_shape):
    model = make(latent_dim=5, image_shape=image_shape)
    params = model.init(jax.random.key(0))
    vae.check_params(model, params)
    x = jax.random.uniform(jax.random.key(1), (2, 3) + image_shape)  # any leading axes
    mean, log_var = vae.encode(model, params, x)
    chex.assert_shape([mean, log_var], (2, 3, model.latent_dim))
    images = vae.decode(model, params, mean)
    chex.assert_shape(images, (2, 3) + image_shape)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    other = make(latent_dim=5, image_shape=(image_shape[0] + 9,) + image_shape[1:])  # another size after pooling
    with pytest.raises(ValueError, match="params do not fit the model"):
        vae.check_params(other, params)


def _reference_conv(x, kernel, stride, transpose):
    # The same kernel as lax.conv's OIHW filter: patches are ordered (channel, row, column).
    weights = kernel.reshape(x.shape[-1], 3, 3, -1).transpose(3, 0, 1, 2)
    if transpose:
        return jax.lax.conv_general_dilated(
            x, weights, (1, 1), ((1, 2), (1, 2)), lhs_dilation=(2, 2), dimension_numbers=("NHWC", "OIHW", "NHWC")
        )
    return jax.lax.conv_general_dilated(
        x, weights, (stride, stride), "SAME", dimension_numbers=("NHWC", "OIHW", "NHWC")
    )


@pytest.mark.parametrize("stride, transpose", [(1, False), (2, False), (1, True)])
def test_the_3x3_convolutions_are_lax_convolutions(stride, transpose):
    x = jax.random.normal(jax.random.key(2), (2, 7, 6, 3))
    layer = conv.Conv3x3(4, stride=stride, transpose=transpose)
    variables = layer.init(jax.random.key(3), x)
    out = layer.apply(variables, x)
    expected = _reference_conv(x, variables["params"]["kernel"], stride, transpose) + variables["params"]["bias"]
    # Sums of 27 float32 products in another order: a few ulps of values of order 1.
    chex.assert_trees_all_close(out, expected, atol=1e-5, rtol=1e-5)
    size = {(1, False): (7, 6), (2, False): (4, 3), (1, True): (14, 12)}[(stride, transpose)]
    chex.assert_shape(out, (2, *size, 4))


def test_the_conv_vae_has_the_chapters_channels_and_mirrors_the_encoder():
    params = conv.Conv().init(jax.random.key(0))
    shapes = jax.tree.map(jnp.shape, params)
    assert [shapes["encoder"][f"conv_{i}"]["kernel"] for i in range(3)] == [(9, 16), (9 * 16, 32), (9 * 32, 64)]
    assert shapes["encoder"]["mean"]["kernel"] == (4 * 4 * 64, 10)  # 28 -> 14 -> 7 -> 4
    assert shapes["decoder"]["project"]["kernel"] == (10, 4 * 4 * 64)
    assert [shapes["decoder"][f"deconv_{i}"]["kernel"] for i in range(3)] == [(9 * 64, 32), (9 * 32, 16), (9 * 16, 1)]


def test_a_gated_convolution_computes_its_gates_beside_its_features():
    shapes = jax.tree.map(jnp.shape, conv.Conv(activation="gated").init(jax.random.key(0)))
    assert [shapes["encoder"][f"conv_{i}"]["kernel"] for i in range(3)] == [(9, 32), (9 * 16, 64), (9 * 32, 128)]
    assert shapes["decoder"]["project"]["kernel"] == (10, 4 * 4 * 128)
    # Every layer but the logits is gated.
    assert [shapes["decoder"][f"deconv_{i}"]["kernel"] for i in range(3)] == [(9 * 64, 64), (9 * 32, 32), (9 * 16, 1)]
    h = jax.random.normal(jax.random.key(1), (3, 5, 8))
    chex.assert_trees_all_close(conv.activate(h, "gated"), h[..., :4] * jax.nn.sigmoid(h[..., 4:]))


def test_the_conv_vae_learns_on_real_digits():
    images = data.load("digits", "train").images
    config = fit.Config().replace(
        model="conv", latent_dim=4, epochs=6, batch_size=64, num_validation=200, recipe="adam", num_seeds=2
    )
    result = fit.fit(config, images, progress=False)
    losses = result.history["val_loss"]
    # Measured 0.60 -> 0.38 for both seeds; a model that learns nothing stays near its first epoch.
    assert np.all(losses[:, -1] < losses[:, 0] - 0.1), losses
    assert result.model == conv.Conv(latent_dim=4, image_shape=(8, 8))


class _Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1)))
        return nn.Dense(3)(h), nn.Dense(3)(h)


class _Decoder(nn.Module):
    @nn.compact
    def __call__(self, z):
        return nn.Dense(64)(nn.relu(nn.Dense(32)(z))).reshape(-1, 8, 8)


def test_a_users_flax_model_trains_as_a_population_and_matches_its_single_runs():
    images = data.load("digits", "train").images
    model = vae.FlaxVAE(_Encoder(), _Decoder(), latent_dim=3, image_shape=(8, 8))
    config = fit.Config().replace(epochs=2, batch_size=50, num_validation=200, num_seeds=2)
    population = fit.fit(config, images, model=model, progress=False)
    single = fit.fit(
        fit.Config().replace(epochs=2, batch_size=50, num_validation=200, seed=43), images, model=model, progress=False
    )
    # The same member trained alone: a different program, so float32 rounding only (tests/tolerances.py
    # derives the MLP's; these small Dense layers are within the same 1e-4 relative on 2 epochs).
    chex.assert_trees_all_close(population.member_params(1), single.member_params(0), rtol=1e-4, atol=1e-5)
    assert registry.to_dict(model)["name"] == "custom"


@pytest.mark.parametrize(
    "model, message",
    [
        (object(), "model must have init, encode, decode_logits, latent_dim and image_shape"),
        (
            mlp.MLP(image_shape=(28, 28)),
            r"model takes images of shape \(28, 28\), but the training images have shape \(8, 8\)",
        ),
    ],
)
def test_models_that_cannot_train_on_the_data_are_refused(model, message):
    images = data.load("digits", "train").images
    with pytest.raises(UsageError, match=message):
        fit.prepare(fit.Config().replace(num_validation=200), images, model=model)


def test_the_registry_round_trips_the_named_models():
    for model in (
        mlp.MLP(hidden_sizes=(300, 300), latent_dim=40, activation="gated"),
        conv.Conv(channels=(8, 16), image_shape=(32, 32, 3)),
        conv.Conv(activation="gated"),
        hvae.ConvHVAE(channels=(8, 16), image_shape=(32, 32, 3)),
    ):
        assert registry.from_dict(registry.to_dict(model)) == model
    with pytest.raises(ValueError, match="user-defined model"):
        registry.from_dict({"name": "custom", "repr": "Mine()"})
    with pytest.raises(ValueError, match="settings this aejax does not know: \\['depth'\\]"):
        registry.from_dict({"name": "mlp", "depth": 3})
