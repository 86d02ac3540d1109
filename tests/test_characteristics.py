"""Exact characteristics X_t(x0) of dx/dt = σ(w x + b): against an ODE solver, NumPy where it does not
overflow, the log-space identity where it does, and under jit, vmap and grad."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from meanfield_jax.characteristics import characteristic

SIGMA = {"identity": lambda z: z, "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}


@pytest.mark.parametrize("activation", sorted(SIGMA))
def test_characteristics_solve_the_ode_forwards_and_backwards(activation):
    rng = np.random.default_rng(4)
    for w, b, x0, t in rng.uniform([-1.5, -1.0, -3.0, -1.5], [1.5, 1.0, 3.0, 1.5], size=(20, 4)):
        def rhs(s, x, w=w, b=b):
            return SIGMA[activation](w * x + b)

        ode = solve_ivp(rhs, (0.0, t), [x0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(float(characteristic(activation, w, b, x0, t)), ode.y[0, -1], rtol=1e-9,
                                   atol=1e-10)


@pytest.mark.parametrize("activation", sorted(SIGMA))
def test_characteristics_under_jit_vmap_and_grad_in_the_weight(activation):
    """`if w == 0` refused a traced w (TracerBoolConversionError under jit and vmap)."""
    x0, b, t = jnp.array([0.3, -1.2, 2.0]), 0.4, 0.8
    ws = jnp.array([0.7, -0.9])
    eager = np.stack([np.asarray(characteristic(activation, float(w), b, x0, t)) for w in ws])
    np.testing.assert_allclose(jax.vmap(lambda w: characteristic(activation, w, b, x0, t))(ws), eager,
                               rtol=1e-14)
    np.testing.assert_allclose(jax.jit(lambda w: characteristic(activation, w, b, x0, t))(ws[0]), eager[0],
                               rtol=1e-14)
    def at(w):
        return characteristic(activation, w, b, x0, t)

    h = 1e-6
    np.testing.assert_allclose(jax.jacfwd(at)(0.7), (at(0.7 + h) - at(0.7 - h)) / (2 * h), rtol=1e-7)


def test_identity_at_zero_weight_and_its_derivative_there():
    """X = e^{wt} x0 + b t φ₁(wt): x0 + b t at w = 0, and ∂X/∂w = t x0 + b t²/2 there."""
    x0, b, t = 1.3, -0.6, 2.0
    np.testing.assert_allclose(characteristic("identity", 0.0, b, x0, t), x0 + b * t, rtol=1e-15)
    np.testing.assert_allclose(jax.grad(lambda w: characteristic("identity", w, b, x0, t))(0.0),
                               t * x0 + b * t**2 / 2, rtol=1e-14)
    with pytest.raises(ValueError, match="needs w != 0"):
        characteristic("tanh", 0.0, b, x0, t)


def test_tanh_characteristic_where_sinh_times_the_growth_overflows():
    """arcsinh(sinh(z0) e^{wt}) came out inf past |z0| + wt ≈ 710 (float64) or 89 (float32); it is
    log|sinh z0| + wt + log 2 there, and the two forms meet at the switch."""
    np.testing.assert_allclose(characteristic("tanh", 1.0, 0.0, 800.0, 1.0), 801.0, rtol=1e-15)
    exact = math.log(math.sinh(5.0)) + 710.0 + math.log(2.0)
    np.testing.assert_allclose(characteristic("tanh", 1.0, 0.0, 5.0, 710.0), exact, rtol=1e-15)
    x32 = characteristic("tanh", jnp.float32(1.0), jnp.float32(0.0), jnp.float32(90.0), jnp.float32(0.5))
    assert x32.dtype == jnp.float32 and abs(float(x32) - 90.5) < 1e-5
    for wt in np.linspace(18.0, 22.0, 41):  # both sides of the switch, where NumPy's form is still finite
        np.testing.assert_allclose(characteristic("tanh", 1.0, 0.0, 1.0, wt),
                                   np.arcsinh(np.sinh(1.0) * np.exp(wt)), rtol=2e-15)
    grad = jax.grad(lambda x: characteristic("tanh", 1.0, 0.0, x, 710.0))(5.0)
    np.testing.assert_allclose(grad, 1.0 / math.tanh(5.0), rtol=1e-14)
    # sinh(z0) alone overflows, the product does not: arcsinh(e^{10}/2) = 10 + e^{-20}, to the rounding of
    # 800 − 790 (1e-13 of 800)
    np.testing.assert_allclose(characteristic("tanh", -1.0, 0.0, -800.0, 790.0), -(10.0 + math.exp(-20.0)),
                               rtol=1e-14)
    # at the threshold z0 = 0 itself ∂X/∂x0 = e^{wt} (a mask of e^{wt} there gave 1)
    at_threshold = jax.grad(lambda x: characteristic("tanh", 1.0, -5.0, x, 2.0))(5.0)
    np.testing.assert_allclose(at_threshold, math.exp(2.0), rtol=1e-14)
