"""The Fokker–Planck time loop run layer piece by layer piece (timestepping.integrate's piece_constant).

Oracles: the pieces of each save interval are those of the stops, counted by hand; the loop by pieces and
the loop over all steps with the coefficients carried (kinetic_common.layer_lookup) take the same steps
with the same face fluxes, so their solutions and gradients agree to round-off, in 1-D (one-pass steps by
pieces, two stages carried) and 2-D (two stages both ways), with save times inside layers, a start inside
a layer, and a traced step (under jax.grad); the gradient by pieces matches central finite differences; a
piece that runs out of max_steps is an error, as the whole loop is.
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
GRID_2D = mfj.Grid2D((-3.0, 3.0, 16), (-2.5, 2.5, 12))
F0_2D = GRID_2D.project(lambda x, y: jnp.exp(-2.0 * ((x - 0.4) ** 2 + (y + 0.3) ** 2)))
W_2D = jnp.array([[[0.8, 0.3], [-0.2, -0.6]], [[-1.1, 0.0], [0.4, 0.7]], [[0.5, -0.4], [0.2, -0.9]]])
B_2D = jnp.array([[0.3, -0.1], [-0.2, 0.4], [0.6, 0.2]])
PROBLEMS = {"1d": (GRID, F0, W, B), "2d": (GRID_2D, F0_2D, W_2D, B_2D)}


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


def solve(W, b, adjoint, pieces, monkeypatch, save_at, t0, max_steps, dim="1d"):
    least = 1 if pieces else 10**9
    monkeypatch.setattr(fokker_planck, "PIECE_MIN_STEPS", {1: least, 2: least})
    grid, f0 = PROBLEMS[dim][:2]
    field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
    return mfj.solve_fokker_planck(
        field, f0, grid, diffusion=0.4, save_at=save_at, t0=t0, max_steps=max_steps, adjoint=adjoint
    )


def moment(f, dim, power=1):
    """∫ x^power f (1-D) or ∫ (x + y/2)^power f (2-D), summed over densities f (..., *grid.shape)."""
    if dim == "1d":
        weight, volume = GRID.x**power, GRID.dx
    else:
        X, Y = GRID_2D.mesh()
        weight, volume = (X + 0.5 * Y) ** power, GRID_2D.cell_volume
    return jnp.sum(f * jnp.broadcast_to(weight, f.shape)) * volume


CASES = {
    "saves on layer boundaries": ([0.0, 1 / 3, 2 / 3, 1.0], 0.0),
    "saves inside layers": ([0.0, 0.2, 0.5, 0.9, 1.0], 0.0),
    "start inside a layer": ([0.1, 0.45, 1.0], 0.1),
}


# every case in 1-D; in 2-D (the same two stages either way) saves inside layers and a start inside one
AGREEMENT_CASES = [(case, adjoint, "1d") for case in CASES for adjoint in ("checkpointed", "discrete")] + [
    ("saves inside layers", "checkpointed", "2d"), ("saves inside layers", "discrete", "2d"),
    ("start inside a layer", "discrete", "2d"),
]


@pytest.mark.parametrize(("case", "adjoint", "dim"), AGREEMENT_CASES)
def test_pieces_and_the_carried_loop_agree(monkeypatch, case, adjoint, dim):
    save_at, t0 = CASES[case]
    calls = []
    table = timestepping.piece_table
    monkeypatch.setattr(timestepping, "piece_table", lambda *a: calls.append(1) or table(*a))

    def first_moment(W, b, pieces):
        sol = solve(W, b, adjoint, pieces, monkeypatch, save_at, t0, max_steps=200, dim=dim)
        return moment(sol.f, dim), sol

    results = {}
    for pieces in (True, False):
        before = len(calls)
        value_and_grad = jax.value_and_grad(first_moment, argnums=(0, 1), has_aux=True)
        (_, sol), grads = value_and_grad(*PROBLEMS[dim][2:], pieces)
        assert (len(calls) > before) == pieces  # the path under test is the one taken
        results[pieces] = (sol, grads)
    (by_pieces, g_pieces), (carried, g_carried) = results[True], results[False]
    assert int(by_pieces.num_steps) == int(carried.num_steps)
    np.testing.assert_allclose(by_pieces.f, carried.f, rtol=0, atol=1e-13)
    for a, b in zip(g_pieces, g_carried):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert float(jnp.abs(g_pieces[0]).reshape(3, -1).max(axis=1).min()) > 1e-4  # every layer moves them


@pytest.mark.parametrize("dim", list(PROBLEMS))
def test_gradient_by_pieces_matches_finite_differences(monkeypatch, dim):
    save_at, t0 = CASES["saves inside layers"]
    W, B = PROBLEMS[dim][2:]

    def loss(b):
        sol = solve(W, b, "discrete", True, monkeypatch, save_at, t0, max_steps=200, dim=dim)
        return moment(sol.f[-1], dim, power=2)

    grad = jax.grad(loss)(B)
    eps = 1e-6
    for index in np.ndindex(B.shape):
        e = jnp.zeros_like(B).at[index].set(eps)
        fd = (loss(B + e) - loss(B - e)) / (2 * eps)
        np.testing.assert_allclose(grad[index], fd, rtol=1e-6)


def test_a_piece_out_of_steps_is_an_error(monkeypatch):
    """About 60 steps are needed per interval: with max_steps=20 each piece runs out."""

    @jax.jit
    def final(b):
        return solve(W, b, "checkpointed", True, monkeypatch, [0.0, 1.0], 0.0, max_steps=20).f[-1]

    with pytest.raises((eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError), match="ran out of steps"):
        final(B).block_until_ready()
    assert int(solve(W, B, "checkpointed", True, monkeypatch, [0.0, 1.0], 0.0, max_steps=200).num_steps) > 20
