"""The Fokker–Planck time loop run layer piece by layer piece (timestepping.integrate's piece_constant).

Oracles: the pieces of each save interval are those of the stops, counted by hand; the loop by pieces and
the loop over all steps with the coefficients carried (kinetic_common.layer_lookup) take the same steps
with the same face fluxes, so their solutions and gradients agree to round-off, with save times inside
layers, a start inside a layer, and a traced step (under jax.grad); the gradient by pieces matches central
finite differences; a piece that runs out of max_steps is an error, as the whole loop is.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj
from meanfield_jax import fokker_planck, timestepping
from meanfield_jax.timestepping import piece_table, steps_per_piece

GRID = mfj.Grid1D(-4.0, 4.0, 48)
F0 = GRID.project(lambda x: jnp.exp(-2.0 * (x - 0.5) ** 2))
W = jnp.array([[[0.8]], [[-1.1]], [[0.5]]])  # three different layers on [0, 1]
B = jnp.array([[0.3], [-0.2], [0.6]])


def test_piece_table_and_steps_per_piece_by_hand():
    table = piece_table([0.0, 0.2, 1.0], [1 / 3, 2 / 3])
    np.testing.assert_allclose(table, [[0.0, 0.2, 0.2, 0.2], [0.2, 1 / 3, 2 / 3, 1.0]])
    # concrete step 0.05: the longest piece (1/3) takes 7 steps
    assert steps_per_piece(table, 30, 0.05) == 7
    # from max_steps = 30 per interval: the first interval is one piece (30), the second's longest
    # piece is 1/3 of its 0.8 (⌈12.5⌉ = 13), so 30
    assert steps_per_piece(table, 30) == 30
    assert steps_per_piece(piece_table([0.0, 1.0], [1 / 3, 2 / 3]), 30) == 10
    # a start inside the first layer
    np.testing.assert_allclose(piece_table([0.1, 1.0], [1 / 3, 2 / 3], t0=0.1), [[0.1, 1 / 3, 2 / 3, 1.0]])


def solve(W, b, adjoint, pieces, monkeypatch, save_at, t0, max_steps):
    monkeypatch.setattr(fokker_planck, "PIECE_MIN_STEPS", 1 if pieces else 10**9)
    field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
    return mfj.solve_fokker_planck(
        field, F0, GRID, diffusion=0.4, save_at=save_at, t0=t0, max_steps=max_steps, adjoint=adjoint
    )


CASES = {
    "saves on layer boundaries": ([0.0, 1 / 3, 2 / 3, 1.0], 0.0),
    "saves inside layers": ([0.0, 0.2, 0.5, 0.9, 1.0], 0.0),
    "start inside a layer": ([0.1, 0.45, 1.0], 0.1),
}


@pytest.mark.parametrize("adjoint", ["checkpointed", "discrete"])
@pytest.mark.parametrize("case", list(CASES))
def test_pieces_and_the_carried_loop_agree(monkeypatch, case, adjoint):
    save_at, t0 = CASES[case]
    calls = []
    table = timestepping.piece_table
    monkeypatch.setattr(timestepping, "piece_table", lambda *a: calls.append(1) or table(*a))

    def moment(W, b, pieces):
        sol = solve(W, b, adjoint, pieces, monkeypatch, save_at, t0, max_steps=200)
        return jnp.sum(sol.f * GRID.x[None]) * GRID.dx, sol

    results = {}
    for pieces in (True, False):
        before = len(calls)
        (_, sol), grads = jax.value_and_grad(moment, argnums=(0, 1), has_aux=True)(W, B, pieces)
        assert (len(calls) > before) == pieces  # the path under test is the one taken
        results[pieces] = (sol, grads)
    (by_pieces, g_pieces), (carried, g_carried) = results[True], results[False]
    assert int(by_pieces.num_steps) == int(carried.num_steps)
    np.testing.assert_allclose(by_pieces.f, carried.f, rtol=0, atol=1e-13)
    for a, b in zip(g_pieces, g_carried):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert float(jnp.abs(g_pieces[0]).min()) > 1e-4  # every layer moves the moments


def test_gradient_by_pieces_matches_finite_differences(monkeypatch):
    save_at, t0 = CASES["saves inside layers"]

    def loss(b):
        sol = solve(W, b, "discrete", True, monkeypatch, save_at, t0, max_steps=200)
        return jnp.sum(sol.f[-1] * GRID.x**2) * GRID.dx

    grad = jax.grad(loss)(B)
    eps = 1e-6
    for layer in range(3):
        e = jnp.zeros_like(B).at[layer, 0].set(eps)
        fd = (loss(B + e) - loss(B - e)) / (2 * eps)
        np.testing.assert_allclose(grad[layer, 0], fd, rtol=1e-6)


def test_a_piece_out_of_steps_is_an_error(monkeypatch):
    """About 60 steps are needed per interval: with max_steps=20 each piece runs out."""

    @jax.jit
    def final(b):
        return solve(W, b, "checkpointed", True, monkeypatch, [0.0, 1.0], 0.0, max_steps=20).f[-1]

    with pytest.raises((eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError), match="ran out of steps"):
        final(B).block_until_ready()
    assert int(solve(W, B, "checkpointed", True, monkeypatch, [0.0, 1.0], 0.0, max_steps=200).num_steps) > 20
