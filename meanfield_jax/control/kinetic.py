"""The costate of the 1-D mean-field control problem on a grid: backward transport of the value function.

For data x ∈ R with static labels y, transported by the continuity equation ∂_t μ + ∂_x(F(t, x) μ) = 0, the
adjoint of the terminal cost ∫ |x − y|² dμ_T(x, y) is the value function ψ(t, x, y), which solves the backward
transport equation

    −∂_t ψ − F(t, x) ∂_x ψ = 0,   ψ(T, x, y) = |x − y|²,

i.e. ψ(t, x, y) = |X_{t→T}(x) − y|² along the exact flow. Its gradient ∂_x ψ(t, x(t), y) at the particles is
the mean-field costate, the continuous counterpart of the particle costate p_l of :mod:`.pmp`.

Scheme (as in the reference shooting-method code of Bonnet–Cipriani–Fornasier–Huang): ψ lives on the cell
centres of a :class:`~meanfield_jax.grid.Grid2D` over (x, y); y is only a parameter. On layer l the velocity
F_l(x) is frozen, and ψ is stepped backward from t_{l+1} to t_l in m_l equal sub-steps τ = Δt / m_l with the
first-order upwind scheme

    ψ_i ← ψ_i + τ [F⁺_i (ψ_{i+1} − ψ_i) + F⁻_i (ψ_i − ψ_{i−1})] / Δx,   F^± = max/min(F, 0),

a convex combination (monotone, first order in Δx) under τ max|F_l| ≤ cfl Δx, which fixes
m_l = ⌈Δt max|F_l| / (cfl Δx)⌉. The ghost values outside the domain are copies of the edge values (inflow
error travels inward at speed |F| only, so keep the data at distance ≥ T max|F| from the walls). The scheme
acts linearly and separately on each y, so the discrete ψ stays exactly quadratic in y and ∂_x ψ exactly
linear in y: bilinear interpolation in (x, y) of the centred difference ∂_x ψ is exact in y.

Under tracing m_l is not known, so each layer runs a fixed-length scan of ``max_substeps`` sub-steps and the
unused ones have τ = 0; ``ok`` reports whether ``max_substeps`` sufficed on every layer.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array

from ..field import AbstractField
from ..grid import Grid2D

__all__ = [
    "default_costate_grid",
    "kinetic_costate",
    "required_substeps",
    "substep_bound",
    "transport_value_function",
]


def default_costate_grid() -> Grid2D:
    """141 × 141 cells on [−7, 7]², the grid of the reference code."""
    return Grid2D((-7.0, 7.0, 141), (-7.0, 7.0, 141))


def _layer_speeds(field: AbstractField, grid: Grid2D) -> Array:
    """F_l at the x cell centres for every layer, shape (L, nx)."""
    xc = grid.x[:, None]
    return jax.vmap(lambda l: field.layer_velocity(l, field.enter_layer(l, xc))[:, 0])(
        jnp.arange(field.num_layers)
    )


def _substeps(speeds: Array, dt: float, dx: float, cfl: float) -> Array:
    """m_l = ⌈Δt max|F_l| / (cfl Δx)⌉ ≥ 1 for each layer."""
    return jnp.maximum(jnp.ceil(dt * jnp.max(jnp.abs(speeds), axis=-1) / (cfl * dx)), 1.0)


def required_substeps(field: AbstractField, grid: Grid2D, cfl: float) -> int:
    """The largest number of upwind sub-steps any layer of a concrete ``field`` needs on ``grid``."""
    return int(jnp.max(_substeps(_layer_speeds(field, grid), field.dt, grid.dx, cfl)))


def _upwind_step(psi: Array, speed: Array, tau: Array, dx: float) -> Array:
    """One backward step ψ(t − τ) = ψ(t) + τ F ∂_x ψ with upwind differences; psi (nx, ny), speed (nx,)."""
    padded = jnp.concatenate([psi[:1], psi, psi[-1:]], axis=0)
    forward = (padded[2:] - psi) / dx
    backward = (psi - padded[:-2]) / dx
    f_plus = jnp.maximum(speed, 0.0)[:, None]
    f_minus = jnp.minimum(speed, 0.0)[:, None]
    return psi + tau * (f_plus * forward + f_minus * backward)


def transport_value_function(
    field: AbstractField, grid: Grid2D, cfl: float, max_substeps: int
) -> tuple[Array, Array]:
    """ψ(t_l, x, y) at the layer times t_0, …, t_L on the grid, shape (L + 1, nx, ny), and ``ok``."""
    X, Y = grid.mesh()
    psi_T = (X - Y) ** 2
    speeds = _layer_speeds(field, grid)
    steps = _substeps(speeds, field.dt, grid.dx, cfl)

    def layer(psi: Array, inputs: tuple[Array, Array]) -> tuple[Array, Array]:
        speed, m = inputs
        tau = field.dt / m

        def substep(psi: Array, k: Array) -> tuple[Array, None]:
            return _upwind_step(psi, speed, jnp.where(k < m, tau, 0.0), grid.dx), None

        psi, _ = jax.lax.scan(substep, psi, jnp.arange(max_substeps))
        return psi, psi

    _, psis = jax.lax.scan(layer, psi_T, (speeds, steps), reverse=True)
    ok = jnp.all(steps <= max_substeps)
    return jnp.concatenate([psis, psi_T[None]], axis=0), ok


def kinetic_costate(
    field: AbstractField, states: Array, y: Array, grid: Grid2D, cfl: float, max_substeps: int
) -> tuple[Array, Array]:
    """∂_x ψ(t_l, x_{l,i}, y_i) for the particle states (L + 1, n, 1) and labels (n, 1), and ``ok``.

    ∂_x ψ is the centred difference on the grid (one-sided at the walls), interpolated bilinearly in
    (x, y); particles outside the grid see the value at the nearest wall.
    """
    psis, ok = transport_value_function(field, grid, cfl, max_substeps)
    dpsi = jnp.gradient(psis, grid.dx, axis=1)
    y_index = (y[:, 0] - grid.y[0]) / grid.dy

    def at_particles(dpsi_l: Array, x_l: Array) -> Array:
        x_index = (x_l[:, 0] - grid.x[0]) / grid.dx
        return map_coordinates(dpsi_l, [x_index, y_index], order=1, mode="nearest")[:, None]

    return jax.vmap(at_particles)(dpsi, states), ok


def substep_bound(field: AbstractField, grid: Grid2D, cfl: float) -> int:
    """A default ``max_substeps``: four times what the initial field needs (weights may grow), at least 8."""
    return max(8, 4 * required_substeps(field, grid, cfl), math.ceil(field.dt / (cfl * grid.dx)))
