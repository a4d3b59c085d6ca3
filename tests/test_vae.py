import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

from aejax import checks, data
from aejax.evaluation import metrics
from aejax.models import mlp, vae
from aejax.training import fit, population, recipes
from aejax.training.train import TrainState

MODEL = mlp.MLP()
PARAMS = MODEL.init(jax.random.key(0))


def test_init_has_the_chapters_architecture():
    shapes = jax.tree.map(lambda a: a.shape, PARAMS)
    assert shapes["encoder"]["hidden_0"]["kernel"] == (784, 150)
    assert shapes["encoder"]["hidden_1"]["kernel"] == (150, 100)
    assert shapes["encoder"]["mean"]["kernel"] == shapes["encoder"]["log_var"]["kernel"] == (100, 10)
    assert shapes["decoder"]["hidden_0"]["kernel"] == (10, 100)
    assert shapes["decoder"]["hidden_1"]["kernel"] == (100, 150)
    assert shapes["decoder"]["logits"]["kernel"] == (150, 784)


class ShapesTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_encode_decode_shapes(self):
        x = jax.random.uniform(jax.random.key(1), (5, 28, 28))
        mean, log_var = self.variant(functools.partial(vae.encode, MODEL))(PARAMS, x)
        chex.assert_shape([mean, log_var], (5, 10))
        images = self.variant(functools.partial(vae.decode, MODEL))(PARAMS, mean)
        chex.assert_shape(images, (5, 28, 28))
        chex.assert_type(images, jnp.float32)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0

    @chex.variants(with_jit=True, without_jit=True)
    def test_loss_jit_and_eager_agree(self):
        x = jax.random.uniform(jax.random.key(2), (4, 28, 28))
        eager = vae.loss(MODEL, PARAMS, x, jax.random.key(3))
        # Fusion changes float32 rounding only (a few ulps on a ~0.7 loss).
        chex.assert_trees_all_close(
            self.variant(functools.partial(vae.loss, MODEL))(PARAMS, x, jax.random.key(3)), eager, rtol=1e-5
        )


# ----- KL divergence -----


def test_kl_zero_at_the_prior():
    np.testing.assert_allclose(vae.kl_divergence(jnp.zeros((3, 10)), jnp.zeros((3, 10))), 0.0, atol=0)


def test_kl_closed_form_matches_monte_carlo():
    mean = jnp.array([0.5, -1.0, 2.0])
    log_var = jnp.array([-1.0, 0.3, 0.7])
    n = 400_000
    z = vae.sample_latent(jax.random.key(4), jnp.broadcast_to(mean, (n, 3)), jnp.broadcast_to(log_var, (n, 3)))
    log_q = -0.5 * jnp.sum(log_var + (z - mean) ** 2 / jnp.exp(log_var) + jnp.log(2 * jnp.pi), axis=-1)
    log_p = -0.5 * jnp.sum(z**2 + jnp.log(2 * jnp.pi), axis=-1)
    samples = np.asarray(log_q - log_p, np.float64)
    standard_error = samples.std() / np.sqrt(n)
    # 4 standard errors: a false alarm has probability ~6e-5.
    assert abs(samples.mean() - float(vae.kl_divergence(mean, log_var))) < 4 * standard_error


def test_kl_gradients_are_correct():
    mean = jnp.array([[0.3, -0.2], [1.0, 0.0]])
    log_var = jnp.array([[0.1, -0.5], [0.4, 2.0]])
    # Finite differences in float32: eps=1e-3 with the default tolerances of check_grads.
    check_grads(vae.kl_divergence, (mean, log_var), order=2, modes=["rev"], eps=1e-3, atol=2e-2, rtol=2e-2)


def test_kl_is_finite_for_extreme_log_var():
    log_var = jnp.array([[-80.0, 80.0, 0.0, -1e-8]])
    kl = vae.kl_divergence(jnp.zeros((1, 4)), log_var)
    grads = jax.grad(lambda lv: jnp.sum(vae.kl_divergence(jnp.zeros((1, 4)), lv)))(log_var)
    chex.assert_tree_all_finite([kl, grads])


# ----- sampler -----


def test_sampler_moments():
    n = 200_000
    mean = jnp.array([1.0, -2.0, 0.0])
    log_var = jnp.array([0.0, np.log(4.0), np.log(0.25)])
    z = np.asarray(
        vae.sample_latent(jax.random.key(5), jnp.broadcast_to(mean, (n, 3)), jnp.broadcast_to(log_var, (n, 3)))
    )
    sd = np.exp(np.asarray(log_var) / 2)
    # Means within 4 standard errors; variances within 4 standard errors of a Gaussian variance (sqrt(2/n)).
    np.testing.assert_array_less(np.abs(z.mean(axis=0) - mean), 4 * sd / np.sqrt(n))
    np.testing.assert_array_less(np.abs(z.var(axis=0) / sd**2 - 1), 4 * np.sqrt(2 / n))


def test_sampler_is_deterministic_per_key_and_reparameterised():
    mean, log_var = jnp.ones((2, 10)), jnp.zeros((2, 10))
    a = vae.sample_latent(jax.random.key(6), mean, log_var)
    chex.assert_trees_all_equal(a, vae.sample_latent(jax.random.key(6), mean, log_var))
    assert not np.allclose(a, vae.sample_latent(jax.random.key(7), mean, log_var))
    d_mean, d_log_var = jax.grad(lambda m, lv: jnp.sum(vae.sample_latent(jax.random.key(6), m, lv)), argnums=(0, 1))(
        mean, log_var
    )
    np.testing.assert_allclose(d_mean, 1.0)  # dz/dmean = 1
    eps = np.asarray(a - mean)  # log_var = 0, so z - mean = eps
    np.testing.assert_allclose(d_log_var, eps / 2, rtol=1e-6)  # dz/dlog_var = eps * exp(lv/2) / 2


# ----- loss -----


def _selu(x):
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return scale * np.where(x > 0, x, alpha * np.expm1(x))


def _numpy_chapter_loss(params, x, eps):
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    dense = lambda layer, h: h @ layer["kernel"] + layer["bias"]  # noqa: E731
    h = x.reshape(len(x), 784)
    h = _selu(dense(p["encoder"]["hidden_0"], h))
    h = _selu(dense(p["encoder"]["hidden_1"], h))
    mean, log_var = dense(p["encoder"]["mean"], h), dense(p["encoder"]["log_var"], h)
    z = mean + np.exp(log_var / 2) * eps
    h = _selu(dense(p["decoder"]["hidden_0"], z))
    h = _selu(dense(p["decoder"]["hidden_1"], h))
    probs = 1 / (1 + np.exp(-dense(p["decoder"]["logits"], h)))
    bce = -np.mean(x.reshape(len(x), 784) * np.log(probs) + (1 - x.reshape(len(x), 784)) * np.log(1 - probs))
    latent_loss = -0.5 * np.sum(1 + log_var - np.exp(log_var) - mean**2, axis=-1)
    return bce + np.mean(latent_loss) / 784.0


def test_loss_equals_numpy_chapter_formula(subset_dir):
    images, _ = data.load_fashion_mnist("test", subset_dir)
    x = data.to_unit_float(images[:16]).astype(np.float64)
    key = jax.random.key(8)
    eps = np.asarray(jax.random.normal(key, (16, 10)), np.float64)  # the draw sample_latent makes
    expected = _numpy_chapter_loss(PARAMS, x, eps)
    # float32 forward pass vs float64 reference: relative 1e-5 is ~100 ulps of float32.
    assert float(vae.loss(MODEL, PARAMS, x.astype(np.float32), key)) == pytest.approx(expected, rel=1e-5)


def test_rounded_accuracy_matches_the_chapter_definition():
    targets = jnp.array([[[0.2, 0.7], [0.5, 1.0]]])
    probs = jnp.array([[[0.4, 0.6], [0.51, 0.49]]])
    # round: targets -> 0, 1, 0 (half to even), 1; probs -> 0, 1, 1, 0: two of four agree.
    logits = jnp.log(probs) - jnp.log1p(-probs)
    np.testing.assert_allclose(vae._rounded_accuracy(targets, logits, (-2, -1)), [0.5])
    metrics = vae.batch_metrics(MODEL, PARAMS, targets.repeat(14, 1).repeat(14, 2), jax.random.key(0))
    assert metrics["rounded_accuracy"].shape == (1,)


def test_configs_are_validated():
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        fit.Config().replace(beta=-0.5)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        mlp.MLP(latent_dim=0)


# ----- interpolation, generation -----


def test_interpolate_codings_is_half_pixel_bilinear():
    # Grid value 4*row + col is linear, so bilinear interpolation returns 4*r + c at the clamped
    # source coordinates r = (i + 0.5) * 3/5 - 0.5, c = (j + 0.5) * 4/7 - 0.5 (TF2's half-pixel rule).
    codings = jnp.arange(12.0)[:, None]
    rows = np.clip((np.arange(5) + 0.5) * 3 / 5 - 0.5, 0, 2)
    cols = np.clip((np.arange(7) + 0.5) * 4 / 7 - 0.5, 0, 3)
    expected = (4 * rows[:, None] + cols[None, :]).reshape(35, 1)
    np.testing.assert_allclose(vae.interpolate_codings(codings), expected, atol=1e-5)


def test_interpolate_codings_keeps_the_corner_columns():
    codings = jax.random.normal(jax.random.key(9), (12, 10))
    grid = np.asarray(vae.interpolate_codings(codings)).reshape(5, 7, 10)
    original = np.asarray(codings).reshape(3, 4, 10)
    # Rows 0, 2, 4 sample source rows 0, 1, 2 exactly; only columns 0 and 6 hit source columns.
    np.testing.assert_allclose(grid[::2, 0], original[:, 0], atol=1e-6)
    np.testing.assert_allclose(grid[::2, 6], original[:, 3], atol=1e-6)
    assert not np.allclose(grid[::2, 2], original[:, 1])
    with pytest.raises(ValueError, match=r"codings must have shape \(12, latent_dim\)"):
        vae.interpolate_codings(codings[:11])


def test_generate_is_deterministic_per_key():
    a = vae.generate(MODEL, PARAMS, jax.random.key(10), 12)
    chex.assert_shape(a, (12, 28, 28))
    chex.assert_trees_all_equal(a, vae.generate(MODEL, PARAMS, jax.random.key(10), 12))


# ----- training -----


def test_short_training_on_real_subset_lowers_validation_loss(subset_dir):
    images, _ = data.load_fashion_mnist("train", subset_dir)
    val = jnp.asarray(data.train_validation_split(data.to_unit_float(images), 120)[1])
    before = float(
        vae.evaluate(MODEL, MODEL.init(population.member_keys([11])["init"][0]), val, jax.random.key(12))["loss"]
    )
    result = fit.fit(fit.Config().replace(epochs=8, batch_size=64, num_validation=120, seed=11), images, progress=False)
    after = vae.evaluate(MODEL, result.member_params(0), val, jax.random.key(12))
    # Measured 0.70 -> ~0.42 on this subset; 0.55 leaves margin yet fails if nothing is learned.
    assert before > 0.65 and float(after["loss"]) < 0.55
    assert float(after["rounded_accuracy"]) > 0.75
    chex.assert_tree_all_finite(result.params)


def test_a_training_step_is_deterministic_per_key():
    x = jax.random.uniform(jax.random.key(13), (8, 28, 28))
    tx = recipes.chapter_optimizer()

    @jax.jit
    def step(params, key):
        value, grads = jax.value_and_grad(vae.loss, argnums=1)(MODEL, params, x, key)
        return TrainState.create(params, tx).apply_gradients(grads, tx).params, value

    a, loss_a = step(PARAMS, jax.random.key(14))
    b, loss_b = step(PARAMS, jax.random.key(14))
    chex.assert_trees_all_equal((a, loss_a), (b, loss_b))
    assert not np.array_equal(step(PARAMS, jax.random.key(15))[1], loss_a)


# ----- beta-VAE -----


def test_beta_zero_is_reconstruction_only_and_gradients_flow():
    x = jax.random.uniform(jax.random.key(15), (6, 28, 28))
    key = jax.random.key(16)
    terms = vae.batch_metrics(MODEL, PARAMS, x, key)
    np.testing.assert_allclose(vae.loss(MODEL, PARAMS, x, key, beta=0.0), jnp.mean(terms["reconstruction"]), rtol=1e-6)
    np.testing.assert_allclose(
        vae.loss(MODEL, PARAMS, x, key, beta=4.0),
        jnp.mean(terms["reconstruction"] + 4.0 * terms["kl"] / 784),
        rtol=1e-6,
    )
    gradient = jax.jit(jax.grad(vae.loss, argnums=1), static_argnums=0)  # one compilation for every beta
    for beta in (0.0, 0.5, 1.0, 4.0):
        grads = gradient(MODEL, PARAMS, x, key, beta)
        chex.assert_tree_all_finite(grads)
        # Every layer, encoder included, gets a gradient (through the reconstruction term at beta = 0).
        assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        vae.loss(MODEL, PARAMS, x, key, beta=-1.0)


# ----- the domain is guarded where it costs nothing after compilation -----


@pytest.mark.parametrize(
    "call",
    [
        lambda x: vae.encode(MODEL, PARAMS, x),
        lambda x: vae.loss(MODEL, PARAMS, x, jax.random.key(0)),
        lambda x: metrics.elbo(MODEL, PARAMS, x, jax.random.key(0)),
        lambda x: population.train_step(
            TrainState.create(PARAMS, recipes.chapter_optimizer()),
            x,
            jax.random.key(0),
            {"beta": 1.0, "learning_rate": 1e-3},
        ),
    ],
    ids=["encode", "loss", "elbo", "train_step"],
)
def test_uint8_images_and_wrong_shapes_are_refused_at_trace_time(call):
    with pytest.raises(TypeError, match="images must be floating-point pixels in \\[0, 1\\], got dtype uint8"):
        call(jnp.zeros((2, 28, 28), jnp.uint8))
    with pytest.raises(
        ValueError, match=r"images must have shape \(\.\.\., 28, 28\) for this model, got \(2, 56, 14\)"
    ):
        call(jnp.zeros((2, 56, 14)))


def test_codings_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match=r"codings must have shape \(\.\.\., 10\) for this model, got \(3, 12\)"):
        vae.decode(MODEL, PARAMS, jnp.zeros((3, 12)))


def _edited(edit):
    params = jax.tree.map(np.array, PARAMS)  # writable copies
    edit(params)
    return params


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"encoder": {"kernel": np.zeros((3, 2)), "bias": np.zeros(2)}, "decoder": {}},
            "encoder/bias is unexpected; encoder/kernel is unexpected; decoder/hidden_0/bias is missing",
        ),
        (
            _edited(lambda p: p["decoder"].update(hidden_0={"kernel": np.zeros((12, 100)), "bias": np.zeros(100)})),
            r"decoder/hidden_0/kernel has shape \(12, 100\), expected \(10, 100\)",
        ),
        (
            _edited(lambda p: p["encoder"]["log_var"].update(kernel=np.zeros((100, 8)))),
            r"encoder/log_var/kernel has shape \(100, 8\), expected \(100, 10\)",
        ),
        (_edited(lambda p: p["decoder"].pop("logits")), "decoder/logits/kernel is missing"),
        (
            _edited(lambda p: p["encoder"]["mean"].update(bias=np.zeros(10, np.int32))),
            "encoder/mean/bias has dtype int32, expected floating point",
        ),
    ],
)
def test_params_are_checked_as_a_whole_tree(params, message):
    with pytest.raises(ValueError, match=message):
        vae.check_params(MODEL, params)


def test_non_finite_params_are_named_and_the_checked_mode_catches_values():
    bad = _edited(lambda p: p["decoder"]["logits"]["bias"].__setitem__(3, np.nan))
    with pytest.raises(ValueError, match=r"decoder/logits/bias holds 1 NaN/inf value"):
        vae.check_params(MODEL, bad)
    vae.check_params(MODEL, PARAMS)
    loss = checks.checked(functools.partial(vae.loss, MODEL))
    with pytest.raises(checkify.JaxRuntimeError, match=r"images must lie in \[0, 1\]"):
        loss(PARAMS, jnp.full((2, 28, 28), 255.0), jax.random.key(0))
    with pytest.raises(checkify.JaxRuntimeError, match="params decoder/logits/bias must be finite"):
        loss(jax.tree.map(jnp.asarray, bad), jnp.zeros((2, 28, 28)), jax.random.key(0))
    assert float(loss(PARAMS, jnp.zeros((2, 28, 28)), jax.random.key(0))) > 0  # valid input passes
    # Outside checked mode the value checks compile away: nothing is raised (and such input gives garbage).
    assert jnp.shape(vae.loss(MODEL, PARAMS, jnp.full((2, 28, 28), 255.0), jax.random.key(0))) == ()


def test_gated_hidden_units():
    model = mlp.MLP(hidden_sizes=(6, 5), latent_dim=3, activation="gated")
    params = model.init(jax.random.key(3))
    assert set(params["encoder"]) == {"hidden_0", "gate_0", "hidden_1", "gate_1", "mean", "log_var"}
    x = jax.random.uniform(jax.random.key(4), (2, 28, 28))
    layer, gate = params["encoder"]["hidden_0"], params["encoder"]["gate_0"]
    flat = x.reshape(2, 784)
    expected = (flat @ layer["kernel"] + layer["bias"]) * jax.nn.sigmoid(flat @ gate["kernel"] + gate["bias"])
    h = (expected @ params["encoder"]["hidden_1"]["kernel"] + params["encoder"]["hidden_1"]["bias"]) * jax.nn.sigmoid(
        expected @ params["encoder"]["gate_1"]["kernel"] + params["encoder"]["gate_1"]["bias"]
    )
    mean = h @ params["encoder"]["mean"]["kernel"] + params["encoder"]["mean"]["bias"]
    chex.assert_trees_all_close(vae.encode(model, params, x)[0], mean, rtol=1e-5, atol=1e-6)
    del params["decoder"]["gate_1"]
    with pytest.raises(ValueError, match="decoder/gate_1/kernel is missing"):
        vae.check_params(model, params)
