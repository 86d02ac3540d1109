"""The result of a kinetic (PDE) solve: densities at the save times, with mass and moment diagnostics."""

from __future__ import annotations

import equinox as eqx
from jaxtyping import Array

from .grid import Grid1D, Grid2D
from .moments import moments

__all__ = ["KineticSolution"]


class KineticSolution(eqx.Module):
    """Cell averages f(t_k) on ``grid`` at the save times ``ts``.

    Attributes:
        ts: save times, shape (k,).
        f: densities, shape (k, *grid.shape).
        grid: the grid.
        outflow: cumulative mass that left through each boundary up to each save time, shape (k, 2 d):
            [left, right] in 1-D, [x_lo, x_hi, y_lo, y_hi] in 2-D (zero for zero-flux and periodic walls;
            negative where mass flowed in).
        num_steps: number of time steps taken.
    """

    ts: Array
    f: Array
    grid: Grid1D | Grid2D
    outflow: Array
    num_steps: Array

    def mass(self) -> Array:
        """m0(t_k) = ∫ f(t_k) dx, shape (k,)."""
        return self.grid.integrate(self.f)

    def total_mass(self) -> Array:
        """Mass in the domain plus the mass that left it: constant for a conservative scheme."""
        return self.mass() + self.outflow.sum(axis=-1)

    def moments(self, order: int = 2):
        """Raw moments of f(t_k); see :func:`meanfield_jax.moments`."""
        return moments(self.f, self.grid, order)
