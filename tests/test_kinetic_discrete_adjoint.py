"""The discrete adjoint of the kinetic solvers' time loop (``adjoint="discrete"``).

It must give the gradient of the same discrete solver as plain reverse mode: against the checkpointed
adjoint to round-off (w.r.t. W, b and f0, with layer boundaries and a save time inside the loop, so that
steps are cut short and Δt depends on the field), and against a central difference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj

GRID_1D = mfj.Grid1D(-4.0, 4.0, 48)
GRID_2D = mfj.Grid2D((-3.0, 3.0, 16), (-2.5, 2.5, 12))
W_1D = jnp.array([[[1.2]], [[-0.7]], [[0.4]]])
B_1D = jnp.array([[0.3], [-0.2], [0.1]])
W_2D = jnp.array([[[1.0, -1.5], [1.2, 0.4]], [[-0.6, 0.8], [-1.0, 0.3]]])
B_2D = jnp.array([[0.1, -0.2], [0.3, 0.2]])
SAVES = [0.0, 0.45, 1.0]


def initial(grid):
    if grid.d == 1:
        return grid.project(lambda x: jnp.exp(-2.0 * (x - 0.5) ** 2))
    return grid.project(lambda x, y: jnp.exp(-2.0 * ((x - 0.6) ** 2 + (y + 0.3) ** 2)))


CASES = {
    # name: (grid, W, b, feedback, solve(field, f0, adjoint))
    "vlasov_muscl_1d": (GRID_1D, W_1D, B_1D, None, lambda fld, f0, adjoint: mfj.solve_vlasov(
        fld, f0, GRID_1D, save_at=SAVES, max_steps=60, adjoint=adjoint)),
    "vlasov_cweno3_ssprk3_periodic_2d": (GRID_2D, W_2D, B_2D, None, lambda fld, f0, adjoint: mfj.solve_vlasov(
        fld, f0, GRID_2D, save_at=SAVES, scheme="cweno3", time_stepper="ssprk3", boundary="periodic",
        max_steps=40, adjoint=adjoint)),
    "vlasov_feedback_1d": (GRID_1D, W_1D, B_1D, -0.5, lambda fld, f0, adjoint: mfj.solve_vlasov(
        fld, f0, GRID_1D, save_at=SAVES, boundary="zero_flux", max_steps=60, adjoint=adjoint)),
    "fokker_planck_explicit_1d": (GRID_1D, W_1D, B_1D, None, lambda fld, f0, adjoint: mfj.solve_fokker_planck(
        fld, f0, GRID_1D, diffusion=0.4, save_at=SAVES, max_steps=300, adjoint=adjoint)),
    "fokker_planck_implicit_2d": (GRID_2D, W_2D, B_2D, None, lambda fld, f0, adjoint: mfj.solve_fokker_planck(
        fld, f0, GRID_2D, diffusion=0.3, save_at=SAVES, method="implicit", max_steps=30, adjoint=adjoint)),
}


def loss(case, W, b, f0, adjoint):
    """A weighted sum of both saved densities (so the save inside the loop gets a cotangent too)."""
    grid, _, _, feedback, solve = CASES[case]
    field = mfj.NeuralField(W, b, activation="tanh", T=1.0, feedback=feedback)
    f = solve(field, f0, adjoint).f
    x = grid.x if grid.d == 1 else grid.xaxis.x[:, None] + 0.5 * grid.yaxis.x[None, :] ** 2
    return jnp.sum(f[1] * x) + 2.0 * jnp.sum(f[2] * x**2)


@pytest.mark.parametrize("case", list(CASES))
def test_discrete_adjoint_equals_checkpointed_gradient(case):
    grid, W, b, _, _ = CASES[case]
    f0 = initial(grid)
    grads = {
        adjoint: jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=(0, 4))(case, W, b, f0, adjoint)
        for adjoint in ("checkpointed", "discrete")
    }
    for discrete, checkpointed in zip(grads["discrete"], grads["checkpointed"]):
        scale = float(jnp.max(jnp.abs(checkpointed)))
        assert scale > 1e-4  # every argument moves the loss
        np.testing.assert_allclose(discrete, checkpointed, rtol=0, atol=1e-11 * scale)


def test_discrete_adjoint_matches_central_difference():
    """d/dε of the loss along a random direction of (W, b): the traced CFL step moves with W."""
    f0 = initial(GRID_1D)
    key_w, key_b = jax.random.split(jax.random.key(0))
    dW, db = jax.random.normal(key_w, W_1D.shape), jax.random.normal(key_b, B_1D.shape)
    case = "vlasov_muscl_1d"
    gW, gb = jax.grad(loss, argnums=(1, 2))(case, W_1D, B_1D, f0, "discrete")
    forward = jax.jit(lambda eps: loss(case, W_1D + eps * dW, B_1D + eps * db, f0, "discrete"))
    eps = 1e-6
    central = (forward(eps) - forward(-eps)) / (2 * eps)
    derivative = jnp.vdot(gW, dW) + jnp.vdot(gb, db)
    np.testing.assert_allclose(derivative, central, rtol=1e-6)


def test_discrete_adjoint_is_reverse_mode_only():
    f0 = initial(GRID_1D)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(loss, argnums=2)("vlasov_muscl_1d", W_1D, B_1D, f0, "discrete")
