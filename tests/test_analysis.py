"""Steady states and sensitivities against the exact results of MODEL.md §5 and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj
from meanfield_jax.analysis import sensitivity, sensitivity_equations, steady_state


def _sorted_real(eigenvalues):
    return np.sort(np.asarray(eigenvalues).real)


# ---- steady states -----------------------------------------------------------------------------------


def test_fig4_threshold_is_a_repelling_rest_point():
    """w = 1, b = −5: x* = −b/w = 5, eigenvalue σ'(0) w = 1 > 0 (vehicles move away from 5)."""
    for activation in ("identity", "tanh"):
        s = steady_state(mfj.NeuralField(1.0, -5.0, activation=activation))
        np.testing.assert_allclose(s.x, [5.0], rtol=1e-15)
        np.testing.assert_allclose(s.eigenvalues, [1.0], rtol=1e-15)
        assert s.kind == "repelling"
        assert not bool(s.stable)


def test_fig6_rest_point_is_a_saddle():
    """W = diag(1, −1), b = (−1, 0): x* = (1, 0), eigenvalues ±1 (MODEL.md §7.3)."""
    s = steady_state(mfj.NeuralField(jnp.diag(jnp.array([1.0, -1.0])), jnp.array([-1.0, 0.0])))
    np.testing.assert_allclose(s.x, [1.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(_sorted_real(s.eigenvalues), [-1.0, 1.0], rtol=1e-15)
    assert s.kind == "saddle"
    assert not bool(s.stable)


@pytest.mark.parametrize(("w", "b"), [(-1.0, 0.0), (-0.5, 2.0), (-3.0, -1.5)])
def test_negative_weight_attracts_at_minus_b_over_w(w, b):
    s = steady_state(mfj.NeuralField(w, b, activation="tanh"))
    np.testing.assert_allclose(s.x, [-b / w], rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(s.eigenvalues, [w], rtol=1e-15)
    assert s.kind == "attracting"
    assert bool(s.stable)


W_FULL = jnp.array([[-1.0, 0.8], [-0.6, -0.4]])  # eigenvalues −0.7 ± 0.62i
B_FULL = jnp.array([0.3, -0.2])


@pytest.mark.parametrize(("sign", "kind"), [(1.0, "attracting"), (-1.0, "repelling")])
def test_full_2d_tanh_rest_point_and_linearisation(sign, kind):
    """x* is a zero of the velocity; the Jacobian is jacfwd of the velocity there; particles near x* go
    to x* (attracting) or leave it (repelling)."""
    field = mfj.NeuralField.constant(sign * W_FULL, B_FULL, num_layers=200, T=20.0, activation="tanh")
    s = steady_state(field)
    np.testing.assert_allclose(field.velocity(0.0, s.x), [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(s.jacobian, jax.jacfwd(lambda x: field.velocity(0.0, x))(s.x), rtol=1e-14)
    assert s.kind == kind
    offsets = 1e-2 * jnp.array([[1.0, 0.0], [0.0, -1.0], [0.7, 0.7]])
    distance = jnp.linalg.norm(mfj.resnet_forward(field, s.x[None, :] + offsets) - s.x[None, :], axis=1)
    if kind == "attracting":  # |x_T − x*| ≈ e^{−0.7 T} |x_0 − x*|
        assert float(jnp.max(distance)) < 1e-7
    else:
        assert float(jnp.min(distance)) > 1.0


def test_feedback_moves_the_rest_point_to_the_closed_mean_equation():
    """b + β m1/m0 with identity σ: dμ/dt = (w + β) μ + b, so x* = −b/(w + β), not −b/w."""
    w, b, beta = -1.0, 2.0, -1.0
    s = steady_state(mfj.NeuralField(w, b, feedback=beta))
    np.testing.assert_allclose(s.x, [1.0], rtol=1e-15)
    assert float(steady_state(mfj.NeuralField(w, b)).x[0]) == pytest.approx(2.0, rel=1e-15)
    # the exact moment dynamics go there: mean → x*, variance → 0
    m = mfj.moment_ode(w, b, jnp.array([1.0, 5.0, 28.0]), jnp.array([40.0]), feedback=beta)[0]
    np.testing.assert_allclose(m[1] / m[0], s.x[0], rtol=1e-12)
    # mean mode w + β = −2, relative mode w = −1
    np.testing.assert_allclose(_sorted_real(s.eigenvalues), [-2.0, -1.0], rtol=1e-15)
    assert s.kind == "attracting"
    # a frozen mean μ: one particle rests where w x + b + β μ = 0
    frozen = steady_state(mfj.NeuralField(w, b, feedback=beta), mean=0.5)
    np.testing.assert_allclose(frozen.x, [-(b + beta * 0.5) / w], rtol=1e-15)
    np.testing.assert_allclose(frozen.eigenvalues, [w], rtol=1e-15)


def test_feedback_can_destabilise_the_mean_but_not_the_spread():
    """w = −1, β = 2: the mean mode (w + β = 1) repels, the relative mode (w = −1) attracts."""
    w, b, beta = -1.0, 2.0, 2.0
    s = steady_state(mfj.NeuralField(w, b, feedback=beta))
    np.testing.assert_allclose(s.x, [-b / (w + beta)], rtol=1e-15)
    assert s.kind == "saddle"
    mu0, var0, t = float(s.x[0]) + 0.1, 0.5, 3.0
    m = mfj.moment_ode(w, b, jnp.array([1.0, mu0, var0 + mu0**2]), jnp.array([t]), feedback=beta)[0]
    mean, var = m[1] / m[0], m[2] / m[0] - (m[1] / m[0]) ** 2
    assert float(mean - s.x[0]) == pytest.approx(0.1 * np.exp((w + beta) * t), rel=1e-12)
    assert float(var) == pytest.approx(var0 * np.exp(2 * w * t), rel=1e-10)


def test_relu_returns_the_vertex_of_the_cone_of_rest_points():
    W = jnp.array([[-1.0, 0.5], [0.2, -2.0]])
    b = jnp.array([0.4, 1.0])
    field = mfj.NeuralField(W, b, activation="relu")
    s = steady_state(field)
    np.testing.assert_allclose(W @ s.x + b, [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(_sorted_real(s.eigenvalues), np.sort(np.linalg.eigvals(np.asarray(W)).real))
    # every point x* + W⁻¹(−c), c ≥ 0, is also at rest: a continuum
    inside = s.x + jnp.linalg.solve(W, -jnp.array([0.3, 1.2]))
    np.testing.assert_allclose(field.velocity(0.0, inside), [0.0, 0.0], atol=0)


def test_rotation_is_a_centre_and_layers_are_selectable():
    s = steady_state(mfj.NeuralField(jnp.array([[0.0, 1.0], [-1.0, 0.0]]), jnp.array([1.0, 2.0])))
    np.testing.assert_allclose(s.x, [2.0, -1.0], rtol=1e-15)
    assert s.kind == "centre/degenerate"
    assert not bool(s.stable)
    field = mfj.NeuralField(jnp.array([[[-1.0]], [[2.0]]]), jnp.array([[1.0], [4.0]]))
    assert float(steady_state(field, layer=1).x[0]) == pytest.approx(-2.0, rel=1e-15)
    assert steady_state(field, layer=1).kind == "repelling"
    assert steady_state(field, layer=0).kind == "attracting"


@pytest.mark.parametrize(
    ("field", "match"),
    [
        (mfj.NeuralField(0.0, 1.0), r"W of layer 0 is singular .*det = 0.*condition number = inf.*affine"),
        (mfj.NeuralField(jnp.array([[1.0, 2.0], [2.0, 4.0]]), jnp.ones(2)), r"singular.*W x \+ b = 0"),
        (mfj.NeuralField(1.0, 1.0, feedback=-1.0), r"W \+ β I of layer 0 is singular"),
        (mfj.NeuralField(-1.0, 1.0, activation="sigmoid"), r"sigmoid.*no rest point.*> 0"),
    ],
)
def test_steady_state_without_isolated_rest_point_is_an_error(field, match):
    with pytest.raises(ValueError, match=match):
        steady_state(field)


def test_steady_state_rejects_bad_arguments():
    field = mfj.NeuralField(-1.0, 1.0)
    with pytest.raises(ValueError, match=r"layer must be an integer in \[0, 1\), got layer=1"):
        steady_state(field, layer=1)
    with pytest.raises(ValueError, match="no feedback"):
        steady_state(field, mean=0.0)
    with pytest.raises(ValueError, match=r"mean must have shape \(1,\)"):
        steady_state(mfj.NeuralField(-1.0, 1.0, feedback=0.5), mean=jnp.zeros(3))
    with pytest.raises(TypeError, match="NeuralField"):
        steady_state("field")


# ---- sensitivities: identity 1-D ResNet and flow -----------------------------------------------------

W1, B1, T1 = -0.7, 0.4, 1.5
X0_1D = jnp.array([-1.0, 0.3, 2.0])


def _resnet_sensitivity(field, x0, method):
    if method == "jacfwd":
        return sensitivity(lambda f: mfj.resnet_forward(f, x0), field)
    return sensitivity_equations(field, x0)[1]


@pytest.mark.parametrize("method", ["jacfwd", "variational"])
def test_discrete_identity_resnet_derivatives_are_exact(method):
    """X_l = a^l x0 + b Δt Σ_{k<l} a^k with a = 1 + Δt w, so ∂X_L/∂b_l = Δt a^{L−1−l},
    ∂X_L/∂w_l = Δt a^{L−1−l} X_l, and for shared (w, b): ∂X_L/∂b = Δt Σ_{k<L} a^k,
    ∂X_L/∂w = L Δt a^{L−1} x0 + b Δt² Σ_{k<L} k a^{k−1}."""
    L = 12
    field = mfj.NeuralField.constant(W1, B1, num_layers=L, T=T1)
    dt, a, x0 = T1 / L, 1 + T1 / L * W1, np.asarray(X0_1D)[:, None]
    k = np.arange(L)
    X_l = a**k * x0 + B1 * dt * np.concatenate([[0.0], np.cumsum(a ** k[:-1])])  # (n, L)
    s = _resnet_sensitivity(field, X0_1D, method)
    assert s.W.shape == (3, L, 1, 1) and s.b.shape == (3, L, 1)
    np.testing.assert_allclose(s.b[..., 0], np.broadcast_to(dt * a ** (L - 1 - k), (3, L)), rtol=1e-12)
    np.testing.assert_allclose(s.W[..., 0, 0], dt * a ** (L - 1 - k) * X_l, rtol=1e-12)
    db_shared = dt * np.sum(a**k)
    dw_shared = L * dt * a ** (L - 1) * x0[:, 0] + B1 * dt**2 * np.sum(k * a ** (k - 1.0))
    np.testing.assert_allclose(s.b.sum(axis=(1, 2)), np.full(3, db_shared), rtol=1e-12)
    np.testing.assert_allclose(s.W.sum(axis=(1, 2, 3)), dw_shared, rtol=1e-12)


def test_resnet_sensitivity_converges_at_first_order_to_the_flow():
    """∂X_T/∂b = (e^{wT} − 1)/w, ∂X_T/∂w = T e^{wT} x0 + b [T e^{wT}/w − (e^{wT} − 1)/w²] (MODEL.md §5.2)."""
    e = np.exp(W1 * T1)
    db_exact = (e - 1) / W1
    dw_exact = T1 * e * np.asarray(X0_1D) + B1 * (T1 * e / W1 - (e - 1) / W1**2)
    errors = []
    for L in (25, 50, 100, 200):
        s = sensitivity(lambda f: mfj.resnet_forward(f, X0_1D), mfj.NeuralField.constant(W1, B1, L, T=T1))
        errors.append(max(np.max(np.abs(s.b.sum(axis=(1, 2)) - db_exact)),
                          np.max(np.abs(s.W.sum(axis=(1, 2, 3)) - dw_exact))))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 1e-2
    np.testing.assert_allclose(orders, 1.0, atol=0.05)


@pytest.mark.parametrize(("w", "b"), [(-2.0, 3.0), (1.0, -5.0)])
def test_steady_state_sensitivity(w, b):
    """∂x*/∂b = −1/w, ∂x*/∂w = b/w²."""
    s = sensitivity(lambda f: steady_state(f).x, mfj.NeuralField(w, b))
    assert float(s.b[0, 0, 0]) == pytest.approx(-1.0 / w, rel=1e-14)
    assert float(s.W[0, 0, 0, 0]) == pytest.approx(b / w**2, rel=1e-14)


def test_steady_state_sensitivity_2d_matches_central_differences():
    field = mfj.NeuralField(W_FULL, B_FULL, activation="tanh")
    s = sensitivity(lambda f: steady_state(f).x, field)
    h = 1e-6
    for i, j in np.ndindex(2, 2):
        dW = jnp.zeros((2, 2)).at[i, j].set(h)
        fd = (steady_state(mfj.NeuralField(W_FULL + dW, B_FULL, activation="tanh")).x
              - steady_state(mfj.NeuralField(W_FULL - dW, B_FULL, activation="tanh")).x) / (2 * h)
        np.testing.assert_allclose(s.W[:, 0, i, j], fd, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(s.b[:, 0, :], -np.linalg.inv(np.asarray(W_FULL)), rtol=1e-13)


@pytest.mark.parametrize(("w", "b"), [(-1.0, 0.5), (0.8, -2.0)])
def test_moment_sensitivities_match_closed_forms(w, b):
    """MODEL.md §5.2: ∂m1/∂b = m0 (e^{wT} − 1)/w, ∂m1/∂w = T e^{wT}(m1(0) + b m0/w) − (b m0/w²)(e^{wT} − 1),
    ∂V/∂w = 2T V(T), ∂V/∂b = 0 (uniform data on [2, 8]: m0 = 1, m1 = 5, V = 3)."""
    T, m0, m1_0, V0 = 2.0, 1.0, 5.0, 3.0
    m_init = jnp.array([m0, m1_0, m0 * (V0 + (m1_0 / m0) ** 2)])

    def mean_and_variance(f):
        m = mfj.moment_ode(f.W[0, 0, 0], f.b[0, 0], m_init, jnp.array([T]))[0]
        return {"m1": m[1], "V": m[2] / m[0] - (m[1] / m[0]) ** 2}

    s = sensitivity(mean_and_variance, mfj.NeuralField(w, b, T=T))
    e = np.exp(w * T)
    assert float(s.b["m1"][0, 0]) == pytest.approx(m0 * (e - 1) / w, rel=1e-12)
    assert float(s.W["m1"][0, 0, 0]) == pytest.approx(T * e * (m1_0 + b * m0 / w) - b * m0 / w**2 * (e - 1),
                                                      rel=1e-12)
    assert float(s.W["V"][0, 0, 0]) == pytest.approx(2 * T * V0 * np.exp(2 * w * T), rel=1e-12)
    assert abs(float(s.b["V"][0, 0])) < 1e-12 * V0 * max(1.0, np.exp(2 * w * T))


# ---- the variational equations against jacfwd and finite differences ---------------------------------

L2D = 6
KEY_W, KEY_B, KEY_X = jax.random.split(jax.random.key(0), 3)
W_LAYERS = jax.random.normal(KEY_W, (L2D, 2, 2))
B_LAYERS = jax.random.normal(KEY_B, (L2D, 2))
X0_2D = jax.random.normal(KEY_X, (4, 2))


@pytest.mark.parametrize("feedback", [None, -0.5])
def test_variational_equations_equal_jacfwd_tanh_2d(feedback):
    field = mfj.NeuralField(W_LAYERS, B_LAYERS, activation="tanh", T=1.2, feedback=feedback)
    xL, s = sensitivity_equations(field, X0_2D)
    jac = sensitivity(lambda f: mfj.resnet_forward(f, X0_2D), field)
    assert s.W.shape == (4, 2, L2D, 2, 2) and s.b.shape == (4, 2, L2D, 2)
    np.testing.assert_allclose(xL, mfj.resnet_forward(field, X0_2D), rtol=0, atol=1e-14)
    np.testing.assert_allclose(s.W, jac.W, rtol=0, atol=1e-12)
    np.testing.assert_allclose(s.b, jac.b, rtol=0, atol=1e-12)
    assert float(jnp.max(jnp.abs(s.W))) > 0.1  # the comparison is not between zeros


def test_variational_equations_equal_central_differences():
    field = mfj.NeuralField(W_LAYERS, B_LAYERS, activation="tanh", T=1.2)
    _, s = sensitivity_equations(field, X0_2D)
    num_w = W_LAYERS.size
    theta = jnp.concatenate([W_LAYERS.ravel(), B_LAYERS.ravel()])

    def output(th):
        f = mfj.NeuralField(th[:num_w].reshape(W_LAYERS.shape), th[num_w:].reshape(B_LAYERS.shape),
                            activation="tanh", T=1.2)
        return mfj.resnet_forward(f, X0_2D)

    h = 1e-5
    steps = h * jnp.eye(theta.size)
    fd = jax.vmap(lambda e: (output(theta + e) - output(theta - e)) / (2 * h))(steps)  # (P, n, d)
    fd = jnp.moveaxis(fd, 0, -1)
    np.testing.assert_allclose(s.W.reshape(4, 2, num_w), fd[..., :num_w], rtol=0, atol=1e-9)
    np.testing.assert_allclose(s.b.reshape(4, 2, -1), fd[..., num_w:], rtol=0, atol=1e-9)


def test_sensitivity_selects_parameters_and_accepts_pytree_outputs():
    field = mfj.NeuralField(W_LAYERS, B_LAYERS, activation="tanh")
    s = sensitivity(lambda f: {"sum_w": jnp.sum(f.W), "b2": f.b**2}, field, wrt="b")
    assert s.W is None
    np.testing.assert_allclose(s.b["sum_w"], jnp.zeros((L2D, 2)))
    expected = jnp.einsum("li,lm,ij->limj", 2 * B_LAYERS, jnp.eye(L2D), jnp.eye(2))
    np.testing.assert_allclose(s.b["b2"], expected, rtol=1e-15)


def test_sensitivity_rejects_bad_arguments():
    field = mfj.NeuralField(-1.0, 1.0)
    with pytest.raises(TypeError, match="fn must be a callable"):
        sensitivity(1.0, field)
    with pytest.raises(ValueError, match=r"wrt must be .*got wrt='K'"):
        sensitivity(lambda f: f.W, field, wrt="K")
    with pytest.raises(ValueError, match="wrt must be"):
        sensitivity(lambda f: f.W, field, wrt=("b", "b"))
    with pytest.raises(TypeError, match="field must be a NeuralField"):
        sensitivity(lambda f: f, {"W": 1.0})
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, d\) with d = 2"):
        sensitivity_equations(mfj.NeuralField(W_FULL, B_FULL), jnp.zeros((3, 1)))
    with pytest.raises(TypeError, match="field must be a NeuralField"):
        sensitivity_equations("field", X0_2D)
