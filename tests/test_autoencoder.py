"""AutoencODE: an exact bottleneck, inert masked parameters, and a curve in R³ through a width-1 neck."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj
from meanfield_jax.control import AutoencODE, train_autoencoder

WIDTHS = (3, 2, 1, 2, 3)


def _stage_widths(model):
    """The width of the stage of each layer l = 0..L−1."""
    return np.repeat(model.widths, model.layers_per_stage)


def _fill_masked_entries(model, key):
    """The same model with random values in every stored entry, the masked ones included."""
    kW, kb = jax.random.split(key)
    return eqx.tree_at(
        lambda m: (m.W, m.b),
        model,
        (jax.random.normal(kW, model.W.shape), jax.random.normal(kb, model.b.shape)),
    )


@pytest.fixture(scope="module")
def curve():
    """(cos s, sin s, s/3), s ∈ [0.2, 2.9]: a 1-D manifold in R³, parametrised monotonically by x₁ = cos s."""
    s = jnp.linspace(0.2, 2.9, 200)
    return jnp.stack([jnp.cos(s), jnp.sin(s), s / 3], axis=1)


def test_dropped_components_are_exactly_zero_through_the_bottleneck():
    model = AutoencODE(WIDTHS, layers_per_stage=3, T=1.0, activation="sigmoid", key=jax.random.PRNGKey(0))
    model = _fill_masked_entries(model, jax.random.PRNGKey(1))  # σ(0) ≠ 0 and W, b dense: masks must act
    x = jax.random.normal(jax.random.PRNGKey(2), (50, 3))
    states = np.asarray(mfj.resnet_forward(model, x, save_every=1))
    widths = _stage_widths(model)
    for l, width in enumerate(widths):
        # the state leaving layer l has no component outside the active set of its stage
        assert np.all(states[l + 1, :, width:] == 0.0)
        assert np.all(np.abs(states[l + 1, :, :width]) > 0)
    # entering a wider stage, the revived components restart from zero and then move
    first_wide = int(np.argmax((np.arange(len(widths)) > np.argmin(widths)) & (widths == 3)))
    assert np.all(states[first_wide, :, 2] == 0.0)
    assert np.all(states[first_wide + 1, :, 2] != 0.0)


def test_gradient_with_respect_to_masked_parameters_is_exactly_zero(curve):
    model = AutoencODE(WIDTHS, layers_per_stage=2, T=2.0, key=jax.random.PRNGKey(3), init_scale=0.5)
    filled = _fill_masked_entries(model, jax.random.PRNGKey(4))

    def reconstruction(m):
        return jnp.mean(jnp.sum((mfj.resnet_forward(m, curve) - curve) ** 2, axis=-1))

    grad = eqx.filter_grad(reconstruction)(filled)
    widths = _stage_widths(model)
    active = np.arange(3)[None, :] < widths[:, None]  # (L, d)
    W_active = active[:, :, None] & active[:, None, :]
    assert np.all(np.asarray(grad.W)[~W_active] == 0.0)
    assert np.all(np.asarray(grad.b)[~active] == 0.0)
    # while every layer has active weights that move the output
    assert all(np.any(np.asarray(grad.W)[l][W_active[l]] != 0.0) for l in range(model.num_layers))
    # the flow does not see the masked entries at all
    np.testing.assert_array_equal(
        mfj.resnet_forward(filled, curve),
        mfj.resnet_forward(
            eqx.tree_at(lambda m: (m.W, m.b), filled, (filled.W * W_active, filled.b * active)), curve
        ),
    )


def test_constructor_stores_zeros_outside_the_active_sets():
    model = AutoencODE(WIDTHS, layers_per_stage=2, key=jax.random.PRNGKey(5), init_scale=1.0)
    widths = _stage_widths(model)
    for l, width in enumerate(widths):
        W = np.asarray(model.W[l])
        assert np.all(W[width:, :] == 0) and np.all(W[:, width:] == 0)
        assert np.all(np.asarray(model.b[l])[width:] == 0)
        assert np.all(W[:width, :width] != 0)


def test_constant_width_is_the_plain_resnet():
    model = AutoencODE((2, 2), layers_per_stage=3, T=1.5, activation="tanh", key=jax.random.PRNGKey(6),
                       init_scale=0.7)
    field = mfj.NeuralField(model.W, model.b, activation="tanh", T=1.5)
    x = jax.random.normal(jax.random.PRNGKey(7), (20, 2))
    np.testing.assert_array_equal(mfj.resnet_forward(model, x), mfj.resnet_forward(field, x))
    assert model.num_layers == 6 and model.d == 2 and model.dt == pytest.approx(0.25)


@pytest.mark.parametrize(("method", "steps"), [("gradient", 800), ("pmp", 150)])
def test_curve_in_r3_is_reconstructed_through_a_width_one_bottleneck(curve, method, steps):
    model = AutoencODE(WIDTHS, layers_per_stage=3, T=5.0, activation="tanh", key=jax.random.PRNGKey(0))
    res = train_autoencoder(model, curve, reg=1e-4, steps=steps, method=method)
    assert res.history.shape == (steps + 1,)
    if method == "pmp":
        assert np.all(np.diff(res.history) <= 0.0)
    states = mfj.resnet_forward(res.model, curve, save_every=1)
    neck = np.asarray(states[7:10])  # the states leaving the width-1 stage (layers 6, 7, 8)
    assert np.all(neck[:, :, 1:] == 0.0)
    mse = float(jnp.mean(jnp.sum((states[-1] - curve) ** 2, axis=-1)))
    total_variance = float(jnp.sum(jnp.var(curve, axis=0)))
    # the 2nd and 3rd coordinates are lost in the neck: a decoder that cannot rebuild them from x₁ has
    # error mean(x₂² + x₃²) > total variance; a working one is far below 10 %
    assert float(jnp.mean(curve[:, 1] ** 2 + curve[:, 2] ** 2)) > total_variance
    assert mse < 0.1 * total_variance
    penalty = float(mfj.control.tikhonov(res.model))
    np.testing.assert_allclose(res.history[-1], mse + 1e-4 * penalty, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"widths": ()}, ValueError, "widths must be a non-empty sequence"),
        ({"widths": (3, 0, 3)}, ValueError, "widths must be a non-empty sequence"),
        ({"widths": 3}, TypeError, "widths must be a sequence"),
        ({"layers_per_stage": 0}, ValueError, "layers_per_stage must be a positive integer"),
        ({"activation": "softplus"}, ValueError, "unknown activation"),
        ({"T": -1.0}, ValueError, "T must be a finite positive"),
    ],
)
def test_bad_model_arguments_are_rejected(kwargs, error, match):
    args = {"widths": WIDTHS, "key": jax.random.PRNGKey(0), **kwargs}
    with pytest.raises(error, match=match):
        AutoencODE(**args)


def test_bad_training_arguments_are_rejected(curve):
    model = AutoencODE(WIDTHS, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="method must be 'gradient' or 'pmp'"):
        train_autoencoder(model, curve, method="newton")
    with pytest.raises(ValueError, match=r"shape \(n, d\) with n >= 1 and d = 3"):
        train_autoencoder(model, curve[:, :2])
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_autoencoder(model, curve, steps=0)
    with pytest.raises(TypeError, match="model must be an AutoencODE"):
        train_autoencoder(mfj.NeuralField(np.eye(3), np.zeros(3)), curve)
