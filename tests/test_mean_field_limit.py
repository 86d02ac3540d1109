"""The mean-field limit (MODEL.md §3.2, check 7 of §11): the empirical measure of n ResNet outputs approaches
the solution of the continuity equation as n → ∞ and Δt, Δx → 0, in the Wasserstein-1 distance.

W1(μ, ν) = ∫ |F_μ(x) − F_ν(x)| dx in 1-D, with the CDF of the particles (a step function) and that of the
finite-volume solution (piecewise linear between faces, since the density is constant in each cell). The
error budget is O(n^{−1/2}) (sampling) + O(Δt) (the ResNet is explicit Euler) + O(Δx) (the PDE scheme).
"""

import jax
import jax.numpy as jnp
import numpy as np

import meanfield_jax as mfj
from meanfield_jax.transport import solve_vlasov


def wasserstein1(particles, f, outflow_left, grid, points=20001):
    """∫ |F_n − F_PDE| dx over the grid's domain, by the trapezoidal rule on a fine mesh."""
    x = np.linspace(grid.lo, grid.hi, points)
    cdf_faces = np.concatenate([[0.0], np.cumsum(np.asarray(f)) * grid.dx]) + outflow_left
    cdf_pde = np.interp(x, np.asarray(grid.faces), cdf_faces)
    cdf_particles = np.searchsorted(np.sort(np.asarray(particles)), x, side="right") / particles.size
    gap = np.abs(cdf_particles - cdf_pde)
    return float(np.sum(0.5 * (gap[1:] + gap[:-1]) * np.diff(x)))


def test_particles_converge_to_the_pde_solution():
    """Classification field (tanh, w = 1, b = −5), f0 = U[2, 8], T = 1 on [0, 10] (nothing reaches the walls).

    Each refinement takes 16 times the particles (sampling error / 4), 4 times the layers (Euler error / 4)
    and twice the cells; W1 is averaged over 16 independent samples so that its spread is small.
    """
    draws = 16
    distances = []
    for n, layers, cells in [(100, 8, 100), (1600, 32, 200), (25600, 128, 400)]:
        field = mfj.NeuralField.constant(1.0, -5.0, num_layers=layers, T=1.0, activation="tanh")
        x0 = jax.random.uniform(jax.random.PRNGKey(n), (draws * n, 1), minval=2.0, maxval=8.0)
        xT = np.asarray(mfj.resnet_forward(field, x0)[:, 0]).reshape(draws, n)
        grid = mfj.Grid1D(0.0, 10.0, cells)
        f0 = jnp.where(jnp.abs(grid.x - 5.0) < 3.0, 1.0 / 6.0, 0.0)  # [2, 8] is a union of cells
        sol = solve_vlasov(field, f0, grid)
        np.testing.assert_allclose(np.asarray(sol.outflow), 0.0, atol=1e-12)
        distances.append(np.mean([wasserstein1(sample, sol.f[-1], 0.0, grid) for sample in xT]))
    distances = np.array(distances)
    assert np.all(distances[1:] < distances[:-1] / 2.5), distances
    assert distances[-1] < 0.03, distances
