"""NeuralField and activations: shapes, static fields under jax transformations, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj


@pytest.mark.parametrize("name", sorted(mfj.ACTIVATIONS))
def test_activation_derivative_matches_autodiff(name):
    act = mfj.get_activation(name)
    z = jnp.linspace(-3.0, 3.0, 41) + 0.013  # avoid relu's kink at 0
    auto = jax.vmap(jax.grad(act.fn))(z)
    np.testing.assert_allclose(act.derivative(z), auto, rtol=1e-12, atol=1e-14)


def test_activation_values():
    z = jnp.array([-2.0, 0.0, 1.5])
    np.testing.assert_allclose(mfj.get_activation("identity").fn(z), z)
    np.testing.assert_allclose(mfj.get_activation("relu").fn(z), [0.0, 0.0, 1.5])
    np.testing.assert_allclose(mfj.get_activation("sigmoid").fn(z), 1 / (1 + np.exp(-np.array(z))))
    np.testing.assert_allclose(mfj.get_activation("tanh").fn(z), np.tanh(np.array(z)))


def test_unknown_activation_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown activation 'softplus'.*identity, relu, sigmoid, tanh"):
        mfj.get_activation("softplus")
    with pytest.raises(ValueError, match="softplus"):
        mfj.NeuralField(1.0, 0.0, activation="softplus")


def test_shapes_scalars_and_constant_layers():
    f = mfj.NeuralField(-1.0, 0.5)
    assert f.W.shape == (1, 1, 1) and f.b.shape == (1, 1) and f.d == 1 and f.num_layers == 1
    g = mfj.NeuralField.constant([[1.0, 0.0], [0.0, -1.0]], [-1.0, 0.0], num_layers=20, T=2.0)
    assert g.W.shape == (20, 2, 2) and g.b.shape == (20, 2)
    assert g.dt == pytest.approx(0.1)
    h = mfj.NeuralField(jnp.ones((2, 2)), jnp.zeros((7, 2)), T=7.0)  # constant W broadcast over b's layers
    assert h.num_layers == 7 and h.W.shape == (7, 2, 2) and h.dt == pytest.approx(1.0)
    k = mfj.NeuralField(jnp.full((5, 1, 1), 2.0), jnp.arange(5.0))  # per-layer scalar biases for d = 1
    np.testing.assert_array_equal(k.b[:, 0], np.arange(5.0))


@pytest.mark.parametrize(
    ("W", "b", "match"),
    [
        (np.ones((2, 3)), np.zeros(2), r"W must have shape .* got shape \(2, 3\)"),
        (np.ones((2, 2)), np.zeros(3), r"b must have shape .* d = 2 .* got shape \(3,\)"),
        (np.ones((3, 2, 2)), np.zeros((4, 2)), r"disagree on the number of layers"),
        (np.ones((2, 2)), 0.0, r"b must have shape"),
    ],
)
def test_bad_shapes_name_the_argument(W, b, match):
    with pytest.raises(ValueError, match=match):
        mfj.NeuralField(W, b)


def test_bad_scalars():
    with pytest.raises(ValueError, match="T must be"):
        mfj.NeuralField(1.0, 0.0, T=0.0)
    with pytest.raises(ValueError, match="num_layers"):
        mfj.NeuralField.constant(1.0, 0.0, num_layers=0)
    with pytest.raises(TypeError, match="W must be real"):
        mfj.NeuralField(jnp.array([[1j]]), [0.0])


def test_velocity_follows_layers_and_feedback():
    W = jnp.arange(1.0, 5.0).reshape(4, 1, 1)
    f = mfj.NeuralField(W, jnp.zeros((4, 1)), T=2.0)  # layer l on [0.5 l, 0.5 (l + 1))
    x = jnp.array([[2.0]])
    for t, w in [(0.0, 1.0), (0.49, 1.0), (0.5, 2.0), (1.7, 4.0), (2.0, 4.0)]:
        np.testing.assert_allclose(f.velocity(t, x), [[2.0 * w]])
    fb = mfj.NeuralField(-1.0, 1.0, feedback=-1.0)
    np.testing.assert_allclose(fb.velocity(0.0, x, mean=jnp.array([3.0])), [[-2.0 + 1.0 - 3.0]])
    with pytest.raises(ValueError, match="mean"):
        fb.velocity(0.0, x)


def test_field_is_a_pytree_for_jit_grad_vmap():
    f = mfj.NeuralField.constant(-0.5, 0.2, num_layers=3, activation="tanh", T=1.5)
    leaves = jax.tree_util.tree_leaves(f)
    assert len(leaves) == 2  # only W and b
    g = jax.grad(lambda fl: jnp.sum(fl.velocity(0.1, jnp.ones((4, 1)))))(f)
    assert isinstance(g, mfj.NeuralField) and g.W.shape == f.W.shape and g.activation == "tanh"
    batch = jax.vmap(lambda b: mfj.NeuralField(-1.0, b))(jnp.arange(3.0))
    assert batch.b.shape == (3, 1, 1)
    out = jax.jit(lambda fl: fl.velocity(0.0, jnp.ones((2, 1))))(f)
    np.testing.assert_allclose(out, np.tanh(-0.5 + 0.2) * np.ones((2, 1)))


@pytest.mark.parametrize("activation", ["identity", "tanh", "relu", "sigmoid"])
def test_velocity_on_mesh_is_the_velocity_at_the_mesh_points(activation):
    """NeuralField's separable evaluation on a tensor mesh equals σ(W_l x + b_l) at the stacked points,
    component by component, per layer, with and without a feedback mean; the default of AbstractField (used
    by other fields) evaluates the points themselves."""
    key1, key2 = jax.random.split(jax.random.PRNGKey(3))
    W = jax.random.normal(key1, (3, 2, 2))
    b = jax.random.normal(key2, (3, 2))
    coords = (jnp.linspace(-2.0, 3.0, 7), jnp.linspace(-1.5, 1.0, 5))
    points = jnp.stack(jnp.meshgrid(*coords, indexing="ij"), axis=-1)
    for feedback, mean in [(None, None), (-0.7, jnp.array([0.3, -0.4]))]:
        field = mfj.NeuralField(W, b, activation=activation, feedback=feedback)
        for l in range(3):
            expected = field.layer_velocity(l, points, mean)
            for a in range(2):
                mesh = field.layer_velocity_on_mesh(l, coords, a, mean)
                assert mesh.shape == (7, 5)
                np.testing.assert_allclose(mesh, expected[..., a], rtol=1e-14, atol=1e-15)
                default = mfj.AbstractField.layer_velocity_on_mesh(field, l, coords, a, mean)
                np.testing.assert_array_equal(default, expected[..., a])
    one_d = mfj.NeuralField(jnp.array([[1.5]]), jnp.array([0.2]), activation=activation)
    x = jnp.linspace(-4.0, 4.0, 9)
    np.testing.assert_allclose(
        one_d.layer_velocity_on_mesh(0, (x,), 0), one_d.layer_velocity(0, x[:, None])[:, 0], rtol=1e-15
    )


def test_non_finite_weights_no_layers_and_numpy_integer_counts():
    """A concrete W or b with NaN / inf is refused when the field is made (a traced one is not read), so is
    a field without layers; a NumPy integer is a valid layer count."""
    two_nans = jnp.asarray([[1.0, np.nan]] * 2)
    cases = ((np.nan, 0.0, "W", 1), (1.0, np.inf, "b", 1), (two_nans, jnp.zeros(2), "W", 2))
    for W, b, name, count in cases:
        message = f"{name} must be finite, got {count} non-finite values \\(NaN or inf\\)"
        with pytest.raises(ValueError, match=message):
            mfj.NeuralField(W, b)
    traced = jax.jit(lambda W: mfj.NeuralField(W, 0.0).W.sum())(jnp.asarray(np.nan))  # a tracer is not read
    assert np.isnan(traced)
    with pytest.raises(ValueError, match="at least one layer"):
        mfj.NeuralField(jnp.zeros((0, 2, 2)), jnp.zeros((0, 2)))
    field = mfj.NeuralField.constant(-1.0, 0.0, num_layers=np.int64(4))
    assert field.num_layers == 4
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        mfj.NeuralField.constant(-1.0, 0.0, num_layers=np.int64(0))
