"""Multi-device execution: particles sharded over a device mesh, and a 2-D grid split along one axis.

Particles. The ResNet x_{l+1} = x_l + Δt σ(W_l x_l + b_l) acts on every sample on its own, so particles
x of shape (n, d) whose rows are split over the devices of a mesh (``NamedSharding(mesh, P(axis))``, see
:func:`shard_particles`) go through :func:`~meanfield_jax.resnet_forward` with no data moving between
devices, and the result keeps the input's sharding. A loss that averages over particles becomes a local
sum per device and one all-reduce (inserted by XLA), and so does its gradient with respect to W and b:
:func:`~meanfield_jax.fit` trains on sharded data unchanged. On several hosts each process contributes its
own rows (:func:`particles_from_local`); see docs/scaling.md.

Grid. :func:`sharded_vlasov_2d` solves the continuity equation of :func:`~meanfield_jax.solve_vlasov`,

    ∂_t f + ∇·(σ(W(t) x + b(t) [+ β m1/m0]) f) = 0   on a Grid2D,

with the cells split along x (the first array axis) into p equal blocks of nx/p rows, one per device of
the mesh axis. The scheme is the single-device one: the face flux G = F⁺ f^− + F⁻ f^+ of the reconstructed
face values (:func:`~meanfield_jax.transport.upwind_flux`), the conservative update, the SSP Runge–Kutta
stages and the time loop of :mod:`meanfield_jax.timestepping`. Within a step (under ``jax.shard_map``):

* halo exchange: the reconstruction at a face reads two cells on each side, so every device receives the
  two boundary rows of each neighbour (``jax.lax.ppermute`` one step up and one step down the ring) and
  computes the x-fluxes of its own nx/p + 1 faces from the halo-extended block; at the domain's walls the
  halo is the boundary condition's ghost rows (zero for outflow, the mirror image for zero flux) and, for
  periodic walls, the rows wrapped round the ring. The y-fluxes need no exchange;
* face velocities are evaluated by each device on its own faces, at the global face coordinates
  (computed from the device's index exactly as the single-device grid computes them);
* the mass leaving through each wall is summed over the devices (``psum``); a feedback mean m1/m0 is
  reduced over the whole sharded density before the step.

So the sharded solve equals the single-device one up to round-off (summation order). Per step and stage
each device sends 2 · 2 · ny values to its neighbours, against (nx/p) · ny cells of work.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike

from .dispatch import filter_jit
from .field import AbstractField
from .grid import Grid2D
from .kinetic_common import (
    GHOST_PAD_MODES,
    courant_velocities,
    density_mean,
    face_velocities,
    flux_difference,
    layer_stops,
    maps_between_layers,
    pad_axis,
    ssp_rk_step,
    validate_field_and_grid,
    wall_masses,
    with_wall_faces,
)
from .solution import KineticSolution
from .timestepping import ADJOINTS, integrate, non_finite_message, ran_out_message
from .transport import (
    _Config,
    cfl_time_step,
    prepare_vlasov,
    upwind_flux,
)

__all__ = ["SHARDED_SCHEMES", "particle_mesh", "particles_from_local", "shard_particles", "sharded_vlasov_2d"]

# CWENO3 sets its weights' ε from max|f| over the array it is given, which would be a block's maximum here.
SHARDED_SCHEMES = ("upwind", "muscl")
HALO = 2  # cells on each side that the reconstruction of a face reads


# ---- particles -------------------------------------------------------------------------------------------
def particle_mesh(devices=None, axis_name: str = "particles") -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process) with one axis ``axis_name``."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must hold at least one device, got an empty list")
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name must be a non-empty string, got axis_name={axis_name!r}")
    return Mesh(np.asarray(devices), (axis_name,))


def _mesh_axis(mesh: Mesh, axis_name: str | None) -> str:
    """The mesh axis to split along (the first one by default), checked."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis_name is None:
        return mesh.axis_names[0]
    if axis_name not in mesh.axis_names:
        raise ValueError(f"axis_name={axis_name!r} is not a mesh axis; the axes are {mesh.axis_names}")
    return axis_name


def shard_particles(x: ArrayLike, mesh: Mesh, axis_name: str | None = None) -> Array:
    """Particles x of shape (n, ...) with their rows split evenly over the mesh axis ``axis_name``.

    n must be a multiple of the number of devices along that axis (pad, or drop the remainder, first).
    """
    axis = _mesh_axis(mesh, axis_name)
    x = jnp.asarray(x)
    parts = mesh.shape[axis]
    if x.ndim < 1 or x.shape[0] % parts:
        raise ValueError(
            f"x must have a leading particle axis whose length is a multiple of the {parts} devices of mesh "
            f"axis {axis!r}, got shape {tuple(x.shape)}"
        )
    return jax.device_put(x, NamedSharding(mesh, PartitionSpec(axis)))


def particles_from_local(x_local: ArrayLike, mesh: Mesh, axis_name: str | None = None) -> Array:
    """The global particle array of a multi-process run, from each process's own rows ``x_local``.

    Every process calls this with its share (the same shape in every process, a multiple of its local
    devices along the axis); the result has the rows of process 0 first, then those of process 1, ….
    In a single process it is :func:`shard_particles`.
    """
    axis = _mesh_axis(mesh, axis_name)
    x_local = np.asarray(x_local)
    local_parts = mesh.shape[axis] // jax.process_count()
    if x_local.ndim < 1 or x_local.shape[0] % max(local_parts, 1):
        raise ValueError(
            f"x_local must have a leading particle axis whose length is a multiple of this process's "
            f"{local_parts} devices along mesh axis {axis!r}, got shape {tuple(x_local.shape)}"
        )
    return jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec(axis)), x_local)


# ---- a block of the grid ---------------------------------------------------------------------------------
class _AxisBlock(NamedTuple):
    """Faces and centres of a run of consecutive cells of one axis (what face_velocities reads)."""

    faces: Array
    x: Array


class _GridBlock(NamedTuple):
    """The cells of one device: a block of x rows, the whole y axis."""

    xaxis: _AxisBlock
    yaxis: object


def _block(grid: Grid2D, start: Array, rows: int) -> _GridBlock:
    """Rows start … start + rows − 1 of ``grid``, with coordinates computed as Grid1D computes them."""
    ax = grid.xaxis
    index = (start + jnp.arange(rows + 1)).astype(jnp.result_type(float))
    faces = ax.lo + ax.dx * index
    return _GridBlock(_AxisBlock(faces, ax.lo + ax.dx * (index[:-1] + 0.5)), grid.yaxis)


def _ring(parts: int, shift: int) -> list[tuple[int, int]]:
    """ppermute pairs sending each device's value to the device ``shift`` places further round the ring."""
    return [(i, (i + shift) % parts) for i in range(parts)]


def _halo_rows(f: Array, k: Array, axis: str, parts: int, boundary: str) -> Array:
    """The block f (rows, ny) with HALO rows of each neighbour above and below (ghost rows at the walls)."""
    from_below = jax.lax.ppermute(f[-HALO:], axis, _ring(parts, 1))
    from_above = jax.lax.ppermute(f[:HALO], axis, _ring(parts, -1))
    if boundary != "periodic":
        mode = GHOST_PAD_MODES[boundary]
        wall_below = pad_axis(f[:HALO], 0, HALO, 0, mode)[:HALO]
        wall_above = pad_axis(f[-HALO:], 0, 0, HALO, mode)[-HALO:]
        from_below = jnp.where(k == 0, wall_below, from_below)
        from_above = jnp.where(k == parts - 1, wall_above, from_above)
    return jnp.concatenate([from_below, f, from_above], axis=0)


def _x_face_velocity(u: Array, k: Array, axis: str, parts: int, boundary: str) -> Array:
    """The x-face velocities of a block (rows + 1, ny) with the global walls' conditions: a block's first
    and last faces are walls only at the ends of the grid; on a periodic axis its top face is the bottom
    face of the block above (for the last block, the wrap face F(x_lo))."""
    def from_block_above(first: Array) -> Array:
        return jax.lax.ppermute(first, axis, _ring(parts, -1))

    return with_wall_faces(u, boundary, walls=(k == 0, k == parts - 1), wrap=from_block_above)


def _sharded_rhs(field: AbstractField, grid: Grid2D, config: _Config, mesh: Mesh, axis: str):
    """(layer, feedback mean, Δt, f) ↦ (Δt df/dt, mass through the 4 walls in Δt) for f split along x over
    ``axis``: the halo exchange, the face velocities of each block, and the single-device flux."""
    parts = mesh.shape[axis]
    rows = grid.shape[0] // parts

    def local(
        field: AbstractField, layer: Array, mean: Array | None, dt: Array, f: Array
    ) -> tuple[Array, Array]:
        k = jax.lax.axis_index(axis)
        block = _block(grid, k * rows, rows)
        u, v = face_velocities(field, layer, block, "outflow", mean)  # walls applied below
        u = _x_face_velocity(u, k, axis, parts, config.boundary)
        u, v = courant_velocities((u, with_wall_faces(v, config.boundary, 1)), grid, dt)
        extended = _halo_rows(f, k, axis, parts, config.boundary)
        u_extended = pad_axis(u, 0, HALO, HALO)  # faces of the halo rows: their fluxes are dropped
        flux_x = upwind_flux(extended, u_extended, 0, config.scheme, config.limiter, config.boundary, grid.dx)
        flux_x = flux_x[HALO : HALO + rows + 1]
        flux_y = upwind_flux(f, v, 1, config.scheme, config.limiter, config.boundary, grid.dy)
        fluxes = [flux_x, flux_y]
        on_wall = jnp.stack([k == 0, k == parts - 1, True, True]).astype(f.dtype)
        masses = jax.lax.psum(wall_masses(fluxes, grid, config.boundary) * on_wall, axis)
        return flux_difference(fluxes), masses

    # the field is an argument, not closed over: shard_map refuses to close over arrays of an Explicit mesh
    block_spec, replicated = PartitionSpec(axis, None), PartitionSpec()
    mapped = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(replicated, replicated, replicated, replicated, block_spec),
        out_specs=(block_spec, replicated),
    )
    return functools.partial(mapped, field)


def _split_rows(f: Array, mesh: Mesh, axis: str) -> Array:
    """``f`` with its rows split over the mesh axis: a sharding constraint for an Auto axis; for an Explicit
    one (where a constraint only asserts the sharding the type already has) a reshard."""
    sharding = NamedSharding(mesh, PartitionSpec(axis, None))
    if mesh.axis_types[mesh.axis_names.index(axis)] == AxisType.Explicit:
        return jax.sharding.reshard(f, sharding)
    return jax.lax.with_sharding_constraint(f, sharding)


@filter_jit
def _solve_sharded(
    field: AbstractField,
    f0: Array,
    grid: Grid2D,
    save_at: tuple[float, ...],
    config: _Config,
    steps: int,
    mesh: Mesh,
    axis: str,
    dt_max: Array | None = None,
) -> KineticSolution:
    """The time loop of solve_vlasov with the right-hand side of :func:`_sharded_rhs` (``dt_max`` as in
    :func:`meanfield_jax.transport._solve`), and whether it ran out of steps or became non-finite: raised by
    the caller, not from the program (a device raising in a check's callback while the others waited in the
    halo exchange hung, then aborted the process)."""
    save = np.asarray(save_at)
    if dt_max is None:
        dt_max = cfl_time_step(field, grid, config.boundary, config.cfl, save[-1])
    rhs = _sharded_rhs(field, grid, config, mesh, axis)

    def step(state, t, dt):
        layer = field.layer_index(t + 0.5 * dt)

        def stage(u):
            f, _ = u
            mean = density_mean(f, grid) if field.feedback is not None else None
            return rhs(layer, mean, dt, f)

        return ssp_rk_step(stage, state, dt, config.time_stepper)

    f0 = _split_rows(f0, mesh, axis)
    state0 = (f0, jnp.zeros(4, f0.dtype))
    (f, outflow), info = integrate(
        step, state0, save, dt_max, layer_stops(field), max_steps=steps, adjoint=config.adjoint,
        runtime_checks=False,
    )
    solution = KineticSolution(
        ts=jnp.asarray(save, f0.dtype), f=f, grid=grid, outflow=outflow, num_steps=info["num_steps"]
    )
    return solution, info["ran_out"], info["non_finite"]


def sharded_vlasov_2d(
    field: AbstractField,
    f0: ArrayLike,
    grid: Grid2D,
    mesh: Mesh,
    axis_name: str | None = None,
    t_final: float | None = None,
    save_at: ArrayLike | None = None,
    scheme: str = "muscl",
    limiter: str = "mc",
    cfl: float = 0.5,
    boundary: str = "outflow",
    time_stepper: str = "ssprk2",
    max_steps: int | None = None,
    adjoint: str = "checkpointed",
) -> KineticSolution:
    """:func:`~meanfield_jax.solve_vlasov` on a Grid2D split along x over the mesh axis ``axis_name``.

    Same equation, scheme, time steps and result as the single-device solver (to round-off); see the
    module docstring for the halo exchange. ``f`` of the result is sharded along x.

    Args:
        field: a 2-D velocity field (feedback allowed; fields with an ``enter_layer`` map are not).
        f0: non-negative, finite cell averages of shape ``grid.shape`` (any placement).
        grid: a Grid2D whose nx is a multiple of the devices along the axis, with at least 2 rows each.
        mesh: a ``jax.sharding.Mesh``; other mesh axes, if any, hold replicas.
        axis_name: the mesh axis the x rows are split over (default: the mesh's first axis).
        t_final, save_at, limiter, cfl, boundary, time_stepper, max_steps, adjoint: as in solve_vlasov.
        scheme: ``"upwind"`` or ``"muscl"``.

    Raises (before anything is compiled):
        TypeError: a field, grid, f0, cfl or mesh of the wrong type.
        ValueError: anything solve_vlasov rejects; a scheme not in SHARDED_SCHEMES; an axis_name the mesh
            lacks; nx not a multiple of the devices along it, or fewer than 2 rows per device; a field
            that maps the data between layers; adjoint="forward".
        RuntimeError (after the solve, as solve_vlasov's runtime errors): the time loop ran out of
            max_steps, or the solution became non-finite. Under jax.jit or jax.grad they cannot be raised:
            the states of a loop that ran out are NaN, and so are its derivatives.
    """
    validate_field_and_grid(field, grid)
    if not isinstance(grid, Grid2D):
        raise TypeError(f"grid must be a Grid2D (split along its x axis), got {type(grid).__name__}")
    axis = _mesh_axis(mesh, axis_name)
    parts = mesh.shape[axis]
    if grid.shape[0] % parts or grid.shape[0] // parts < HALO:
        raise ValueError(
            f"grid has nx={grid.shape[0]} rows, which must be a multiple of the {parts} devices of mesh axis "
            f"{axis!r} with at least {HALO} rows per device"
        )
    if maps_between_layers(field):
        raise ValueError(
            f"field of type {type(field).__name__} maps the data between layers (enter_layer); "
            "sharded_vlasov_2d supports fields without such a map: use solve_vlasov"
        )
    if adjoint == "forward":
        raise ValueError(f"adjoint={adjoint!r} is not available split over devices; allowed: "
                         f"{', '.join(map(repr, ADJOINTS))}")
    f0, config, save, steps, _, dt_max = prepare_vlasov(
        field, f0, grid, t_final, save_at, scheme, limiter, cfl, boundary, time_stepper, max_steps, adjoint,
        schemes=SHARDED_SCHEMES,
    )
    if not isinstance(f0, jax.core.Tracer):  # wherever f0 was committed, it goes to the mesh's devices
        f0 = jax.device_put(f0, NamedSharding(mesh, PartitionSpec(axis, None)))
    save_times = tuple(float(s) for s in save)
    solution, ran_out, non_finite = _solve_sharded(
        field, f0, grid, save_times, config, steps, mesh, axis, dt_max
    )
    if isinstance(ran_out, jax.core.Tracer):  # under jit or grad: NaN states and derivatives tell instead
        return solution
    if bool(ran_out):
        raise RuntimeError(ran_out_message(steps))
    first = int(non_finite)
    if first >= 0:
        raise RuntimeError(non_finite_message([t for t in save_times if t > 0.0][first]))
    return solution
