"""Per-layer quantities of the kinetic solvers: a table over the layers, or carried and refreshed at layer
changes (grids too large for the table). Both must give the same solution and the same gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj
from meanfield_jax import kinetic_common

GRID = mfj.Grid1D(-4.0, 4.0, 40)
F0 = GRID.project(lambda x: jnp.exp(-2.0 * (x - 0.5) ** 2))


def solve(solver, field):
    if solver == "vlasov":
        return mfj.solve_vlasov(field, F0, GRID, save_at=[0.0, 0.45, 1.0], max_steps=60)
    return mfj.solve_fokker_planck(field, F0, GRID, diffusion=0.4, save_at=[0.0, 0.45, 1.0], max_steps=400)


def solution_and_gradient(solver, W, b):
    def first_moment(W, b):
        field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
        return jnp.sum(solve(solver, field).f[-1] * GRID.x)

    field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
    return solve(solver, field).f, jax.grad(first_moment, argnums=(0, 1))(W, b)


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_table_and_carried_layer_quantities_agree(solver, monkeypatch):
    W = jnp.array([[[1.2]], [[-0.7]], [[0.4]]])  # three layers, a save time inside the second
    b = jnp.array([[0.3], [-0.2], [0.1]])
    jax.clear_caches()
    table_f, table_grad = solution_and_gradient(solver, W, b)
    monkeypatch.setattr(kinetic_common, "LAYER_TABLE_BYTES", 0)
    jax.clear_caches()
    carried_f, carried_grad = solution_and_gradient(solver, W, b)
    jax.clear_caches()
    np.testing.assert_allclose(carried_f, table_f, rtol=0, atol=1e-14)
    for carried, table in zip(carried_grad, table_grad):
        np.testing.assert_allclose(carried, table, rtol=1e-12, atol=1e-14)
    assert float(jnp.max(jnp.abs(table_grad[0]))) > 1e-3  # the layers do move the first moment
