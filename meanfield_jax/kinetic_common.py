"""Finite-volume building blocks shared by the kinetic solvers (continuity and Fokker–Planck equations).

Both solvers advance cell averages f_i of a density by the conservative update

    d f_i / dt = −Σ_axes (G_{i+1/2} − G_{i−1/2}) / h_axis,

with a numerical flux G at the cell faces, on a :class:`~meanfield_jax.grid.Grid1D` or
:class:`~meanfield_jax.grid.Grid2D`. This module holds what does not depend on the flux: the drift
F(t, x) = σ(W(t) x + b(t) [+ β m1/m0]) sampled at the faces (u at x-faces (x_{i±1/2}, y_j), v at y-faces
(x_i, y_{j±1/2})) with the wall conditions built in, the Courant bound of the drift over all layers (and
over every feedback mean a non-negative density on the grid can have), the forward-Euler increment from
Courant-scaled face fluxes (G Δt/h_axis, so that a step is f_i − Σ_axes (G_{i+1/2} − G_{i−1/2})), the mass
leaving through each wall, the feedback mean m1/m0, the layer boundaries the time loop must land on, and
the strong-stability-preserving Runge–Kutta steps.

Walls: ``outflow`` (nothing enters; mass leaves where F points outward), ``zero_flux`` (F = 0 on the
walls, so G = 0 there) and ``periodic`` (the wrap face carries one flux, with F taken at the lower wall,
so whatever leaves at one end enters at the other).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .arguments import finite_values, whole_number
from .conditional import batch_cond
from .field import AbstractField
from .grid import Grid1D, Grid2D
from .timestepping import landing_times, steps_needed

__all__ = [
    "BOUNDARIES",
    "GHOST_PAD_MODES",
    "SSP_STEPPERS",
    "advection_rate_bound",
    "cell_face_velocities",
    "check_choice",
    "check_max_steps",
    "courant_velocities",
    "density_mean",
    "face_velocities",
    "flux_difference",
    "grid_axes",
    "is_traced",
    "largest_over_corner_means",
    "largest_over_layers",
    "layer_lookup",
    "layer_stops",
    "maps_between_layers",
    "pad_axis",
    "push_forward_cells",
    "scan_length",
    "shared_scan_length",
    "ssp_rk_stages",
    "ssp_rk_step",
    "ssp_stage_weights",
    "steps_per_save_interval",
    "validate_density",
    "validate_field_and_grid",
    "wall_faces",
    "wall_masses",
    "with_wall_faces",
]

BOUNDARIES = ("outflow", "zero_flux", "periodic")
# the ghost cells beyond each wall, as jnp.pad modes: zero (nothing enters), a mirror image, the wrap
GHOST_PAD_MODES = {"outflow": "constant", "zero_flux": "symmetric", "periodic": "wrap"}

# Shu–Osher form: u1 = E(u0), u_{k+1} = a_k u0 + c_k E(u_k), with E the forward-Euler step. Every stage is
# a convex combination of Euler steps of size Δt, so each keeps the Euler step's positivity (SSP
# coefficient 1): "ssprk2" is Heun's method, "ssprk3" the third-order scheme of Shu and Osher (1988).
SSP_STEPPERS: dict[str, tuple[tuple[float, float], ...]] = {
    "euler": (),
    "ssprk2": ((0.5, 0.5),),
    "ssprk3": ((0.75, 0.25), (1.0 / 3.0, 2.0 / 3.0)),
}


# ---- validation -----------------------------------------------------------------------------------------
def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a ValueError naming the argument and the choices."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name}={value!r}; allowed values: {', '.join(map(repr, allowed))}")
    return value


def check_max_steps(max_steps: Any) -> None:
    """A ValueError unless ``max_steps`` is None or a positive integer (not a bool)."""
    if max_steps is not None:
        whole_number(max_steps, "max_steps")


def is_traced(tree: Any) -> bool:
    """Whether any array in ``tree`` is a tracer (under jax.jit / jax.grad), i.e. has no concrete value."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def validate_field_and_grid(field: Any, grid: Any) -> None:
    """TypeError/ValueError unless ``field`` is a velocity field of the grid's dimension."""
    if not isinstance(field, AbstractField):
        raise TypeError(f"field must be a NeuralField (or another AbstractField), got {type(field).__name__}")
    if not isinstance(grid, Grid1D | Grid2D):
        raise TypeError(f"grid must be a Grid1D or a Grid2D, got {type(grid).__name__}")
    if field.d != grid.d:
        raise ValueError(f"field.d={field.d} must equal grid.d={grid.d} (the field acts on the grid's space)")


def validate_density(f0: ArrayLike, grid: Grid1D | Grid2D, name: str = "f0") -> Array:
    """``f0`` as a floating array of the grid's shape; a concrete one must be finite and non-negative."""
    try:
        f = f0 if isinstance(f0, jax.Array) else jnp.asarray(f0)
    except (TypeError, ValueError) as exc:  # jnp.asarray(None) is a ValueError
        raise TypeError(f"{name} must be an array of cell averages, got {type(f0).__name__}") from exc
    if not jnp.issubdtype(f.dtype, jnp.number) or jnp.issubdtype(f.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real-valued, got dtype {f.dtype}")
    if tuple(f.shape) != tuple(grid.shape):
        raise ValueError(f"{name} has shape {tuple(f.shape)} but the grid has shape {tuple(grid.shape)}")
    if not jnp.issubdtype(f.dtype, jnp.floating):
        f = f.astype(jnp.result_type(float))
    values = finite_values(f, name)  # None while traced
    if values is not None and np.any(values < 0):
        raise ValueError(f"{name} must be a non-negative density, got min({name})={values.min():.6g}")
    return f


# ---- geometry -------------------------------------------------------------------------------------------
def pad_axis(x: Array, axis: int, before: int, after: int, mode: str = "constant") -> Array:
    """``x`` padded along one axis (``jnp.pad``'s ``mode``; zeros by default)."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (before, after)
    return jnp.pad(x, widths, mode=mode)


def grid_axes(grid: Grid1D | Grid2D) -> tuple[Grid1D, ...]:
    """The 1-D axes of a grid: (grid,) in 1-D, (xaxis, yaxis) in 2-D."""
    return (grid,) if isinstance(grid, Grid1D) else (grid.xaxis, grid.yaxis)


def layer_stops(field: AbstractField) -> np.ndarray:
    """The interior layer boundaries l Δt, l = 1, …, L − 1, where the drift may jump."""
    return np.arange(1, field.num_layers) * field.dt


def steps_per_save_interval(save_at: np.ndarray, stops: np.ndarray, dt: float, t0: float = 0.0) -> int:
    """Steps of size ≤ dt, landing on every stop and save time, that the longest save interval takes."""
    targets = [s for s in np.ravel(save_at).tolist() if s > t0]
    return steps_needed(targets, landing_times(targets, np.ravel(stops).tolist(), t0), t0, dt)


def shared_scan_length(steps: int) -> int:
    """``steps`` rounded up to three significant bits (at most 1/8 more), the scan length of a loop whose
    step count was computed from a concrete step: the steps past the end of a save interval have length 0
    and are skipped, and nearby step counts (a sweep over weights or diffusions) share one compilation."""
    shift = max(0, steps.bit_length() - 3)
    return -(-steps >> shift) << shift


def scan_length(
    save: np.ndarray, stops: np.ndarray, step: float | None, max_steps: int | None, t0: float
) -> int:
    """The scan length per save interval of a kinetic solve: ``max_steps`` if given (checked against the
    steps counted from a concrete ``step``), else that count rounded up by :func:`shared_scan_length`. The
    count needs no margin: the time loop takes exactly as many steps as in exact arithmetic, in float32 as in
    float64 (:mod:`meanfield_jax.timestepping`)."""
    if step is None:
        return max_steps
    steps = steps_per_save_interval(save, stops, step, t0)
    if max_steps is None:
        return shared_scan_length(steps)
    if steps > max_steps:
        raise ValueError(f"max_steps={max_steps} is too small: {steps} steps are needed per save interval")
    return max_steps


def layer_lookup(
    compute: Callable[[Array], Any], num_layers: int, first: Array
) -> tuple[Any, Callable[[Any, Array], tuple[Any, Any]]]:
    """How the time loop reads a quantity q(l) of the field's layer l (face velocities, flux coefficients).

    Returns ``(carry0, get)`` with ``get(carry, l) -> (q(l), carry)``. With a single layer q is computed
    once, before the loop, and nothing is carried: reverse mode adds each step's cotangent into it, instead of
    threading q and its cotangent through every step (a third of the gradient's time and half its memory,
    measured). With several layers q is carried from step to step and recomputed (a conditional) when a step
    enters a new layer. A table of q over the layers, indexed by the step's layer, would make reverse mode
    write a cotangent of the whole table's size at every step: measured on Fokker–Planck (10⁴ cells), the
    discrete-adjoint gradient took 1.1x the carried one's time at 3 layers, 1.4x at 10 and 3.1x at 50 (the
    checkpointed one 9x at 50 layers).
    """
    if num_layers == 1:
        q = compute(first)
        return (), lambda carry, l: (q, carry)

    def get(carry, l):
        cached, q = carry
        q = batch_cond(l != cached, lambda: compute(l), lambda: q)
        return q, (l, q)

    return (first, compute(first)), get


def maps_between_layers(field: AbstractField) -> bool:
    """Whether the field changes the data as they enter a layer (``enter_layer`` is not the identity)."""
    return type(field).enter_layer is not AbstractField.enter_layer


def push_forward_cells(f: Array, grid: Grid1D | Grid2D, transform: Callable[[Array], Array]) -> Array:
    """T#f on the grid: the mass of each cell moves to the image T(x_c) of its centre, shared out among the
    (up to 2^d) nearest cell centres with the linear (cloud-in-cell) weights.

    ``transform`` maps points of shape (..., d) to points of the same shape. The weights sum to one (mass is
    conserved; images beyond the outer centres go to the wall cells) and reproduce the image's position,
    so the first moment is exact away from the walls; a centre mapped onto a centre stays in one cell.
    For a coordinate projection (dropped components set to 0) the mass collapses onto the one or two rows
    of cells next to the hyperplane.
    """
    axes = grid_axes(grid)
    centres = jnp.stack(jnp.meshgrid(*[ax.x for ax in axes], indexing="ij"), axis=-1)
    image = transform(centres)
    lower, frac = [], []
    for a, ax in enumerate(axes):
        s = jnp.clip((image[..., a] - ax.x[0]) / ax.dx, 0.0, ax.n - 1.0)  # in units of cells from the 1st
        i = jnp.minimum(jnp.floor(s), ax.n - 2.0)
        lower.append(i.astype(jnp.int32))
        frac.append(s - i)
    out = jnp.zeros_like(f)
    for corner in itertools.product((0, 1), repeat=len(axes)):
        weight = f
        for c, fr in zip(corner, frac):
            weight = weight * (fr if c else 1.0 - fr)
        out = out.at[tuple(i + c for i, c in zip(lower, corner))].add(weight)
    return out


def density_mean(f: Array, grid: Grid1D | Grid2D) -> Array:
    """The mean m1/m0 of cell averages f (shape (d,)); the centre of the domain when the mass is zero."""
    mass = jnp.sum(f)
    axes = grid_axes(grid)
    first = [
        jnp.sum(f, axis=tuple(b for b in range(len(axes)) if b != a)) @ ax.x for a, ax in enumerate(axes)
    ]
    centre = jnp.array([(ax.lo + ax.hi) / 2 for ax in axes], f.dtype)
    safe = jnp.where(mass > 0, mass, 1.0)
    return jnp.where(mass > 0, jnp.stack(first) / safe, centre)


def wall_faces(
    first: Array,
    last: Array,
    boundary: str,
    walls: tuple[ArrayLike, ArrayLike] = (True, True),
    wrap: Callable[[Array], Array] = lambda first: first,
) -> tuple[Array | None, Array | None]:
    """The wall condition on the normal velocity of an axis's first and last faces: their new values, None
    for a face that keeps its own. Zero on a zero-flux wall; on a periodic axis the last face is the first
    (its values ``wrap(first)``: on a grid split over devices, the first face of the next block); nothing at
    an outflow wall. ``walls`` tells whether each face is a wall of the domain (a block of a split grid has
    inner faces). An unchanged face is not written back: XLA keeps such a write, which stops it fusing the
    velocity's evaluation into its readers."""
    if boundary == "zero_flux":
        return jnp.where(walls[0], 0.0, first), jnp.where(walls[1], 0.0, last)
    if boundary == "periodic":
        return None, wrap(first)
    return None, None


def with_wall_faces(
    v: Array,
    boundary: str,
    axis: int = 0,
    walls: tuple[ArrayLike, ArrayLike] = (True, True),
    wrap: Callable[[Array], Array] = lambda first: first,
) -> Array:
    """Face values along ``axis`` with :func:`wall_faces` applied to its first and last entries."""
    v = jnp.moveaxis(v, axis, 0)
    first, last = wall_faces(v[0], v[-1], boundary, walls, wrap)
    v = v if first is None else v.at[0].set(first)
    v = v if last is None else v.at[-1].set(last)
    return jnp.moveaxis(v, 0, axis)


def face_velocities(
    field: AbstractField, l: ArrayLike, grid: Grid1D | Grid2D, boundary: str, mean: ArrayLike | None = None
) -> tuple[Array, ...]:
    """The normal drift on the faces of layer l: 1-D F(x_{i+1/2}) of shape (n + 1,); 2-D u(x_{i+1/2}, y_j)
    of shape (nx + 1, ny) and v(x_i, y_{j+1/2}) of shape (nx, ny + 1). ``mean`` is the feedback mean."""
    axes = grid_axes(grid)
    out = []
    for a in range(len(axes)):
        coords = [ax.faces if b == a else ax.x for b, ax in enumerate(axes)]
        out.append(with_wall_faces(field.layer_velocity_on_mesh(l, coords, a, mean), boundary, a))
    return tuple(out)


def cell_face_velocities(
    field: AbstractField, l: ArrayLike, grid: Grid1D | Grid2D, boundary: str, mean: ArrayLike | None = None
) -> tuple[tuple[Array, Array], ...]:
    """Per axis, the normal drift on the upper face and on the lower face of every cell (two arrays of the
    grid's shape), with the walls of :func:`face_velocities`.

    Each is evaluated on a mesh of its own (faces 1, …, n and 0, …, n − 1 along the axis), not sliced out
    of the face array, so that XLA fuses the evaluation into the kernel that reads it (the reduction of the
    rate bound) instead of writing the face arrays to memory and reading them back through slices:
    measured at 1024² cells, the bound took 3 ms with no temporaries against 23 ms with 40 MB of them
    (and a page fault per 4 KiB of those at every call).
    """
    axes = grid_axes(grid)
    out = []
    for a, ax in enumerate(axes):

        def on(faces: Array, a: int = a) -> Array:
            coords = [faces if b == a else other.x for b, other in enumerate(axes)]
            return field.layer_velocity_on_mesh(l, coords, a, mean)

        upper, lower = on(ax.faces[1:]), on(ax.faces[:-1])
        first, last = (slice(None),) * a + (0,), (slice(None),) * a + (-1,)  # faces 0 and n
        first_face, last_face = wall_faces(lower[first], upper[last], boundary)
        lower = lower if first_face is None else lower.at[first].set(first_face)
        upper = upper if last_face is None else upper.at[last].set(last_face)
        out.append((upper, lower))
    return tuple(out)


def mean_box_corners(grid: Grid1D | Grid2D) -> Array:
    """Corners (2^d, d) of the box of cell centres, which holds the mean of every non-negative density."""
    return jnp.array(list(itertools.product(*[(ax.x[0], ax.x[-1]) for ax in grid_axes(grid)])))


def largest_over_corner_means(fn: Callable[[Array | None], Any], field: AbstractField, grid: Grid1D | Grid2D):
    """fn(None) for a field without feedback bias; with one, fn at each corner of the box of cell centres
    (:func:`mean_box_corners`, which holds the data's mean), every leaf maximised over the corners entry by
    entry."""
    if field.feedback is None:
        return fn(None)
    return jax.tree_util.tree_map(lambda v: jnp.max(v, axis=0), jax.vmap(fn)(mean_box_corners(grid)))


def largest_over_layers(value: Callable[[Any, Array], Array], operands: Any, num_layers: int) -> Array:
    """max_l value(operands, l) over the layers l = 0, …, L − 1 (a ``lax.map``), e.g. a CFL rate bound.

    Its derivative is that of the layer attaining the maximum (the first at a tie): a small change of any
    other layer does not move it. Reverse mode then differentiates one layer's value instead of all L
    (a 50-layer Fokker–Planck bound on 10⁴ cells: the gradient of ``jnp.max`` of the map took 6.7x the
    value's time). ``value`` must be a function of the arrays in ``operands`` only.
    """
    if num_layers == 1:
        return value(operands, jnp.asarray(0))
    return _largest_over_layers(value, operands, num_layers)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 2))
def _largest_over_layers(value, operands, num_layers):
    return jnp.max(jax.lax.map(lambda l: value(operands, l), jnp.arange(num_layers)))


@_largest_over_layers.defjvp
def _largest_over_layers_jvp(value, num_layers, primals, tangents):
    (operands,), (d_operands,) = primals, tangents
    values = jax.lax.map(lambda l: value(operands, l), jnp.arange(num_layers))
    worst = jnp.argmax(values)
    _, d_value = jax.jvp(lambda o: value(o, worst), (operands,), (d_operands,))
    return values[worst], d_value


def advection_rate_bound(field: AbstractField, grid: Grid1D | Grid2D, boundary: str) -> Array:
    """max over layers and cells of the rate at which a cell empties (:func:`_layer_outflow_bound`), the
    inverse of the largest positive upwind step (:func:`largest_over_layers`).

    With a feedback bias the drift depends on the data's mean, which lies in the box of cell centres; σ is
    non-decreasing and the mean enters its argument linearly, so F⁺ and F⁻ on each face are largest at a
    corner of that box, and the bound takes, face by face, the largest over the corners.
    """
    bound = functools.partial(_layer_outflow_bound, grid, boundary)
    return largest_over_layers(bound, field, field.num_layers)


def _layer_outflow_bound(grid: Grid1D | Grid2D, boundary: str, field: AbstractField, l: Array) -> Array:
    """max over cells of Σ_axes (F⁺ on the cell's upper face + F⁻ on its lower face) / h_axis: an explicit
    upwind step of size Δt keeps f ≥ 0 exactly when Δt times this rate is at most 1 in every cell."""

    def parts(mean: Array | None) -> list[tuple[Array, Array]]:  # per axis, F⁺ above and F⁻ below each cell
        faces = cell_face_velocities(field, l, grid, boundary, mean)
        return [(jnp.maximum(upper, 0.0), jnp.maximum(-lower, 0.0)) for upper, lower in faces]

    outward = largest_over_corner_means(parts, field, grid)
    rate = 0.0
    for (upper, lower), ax in zip(outward, grid_axes(grid)):
        rate = rate + (upper + lower) / ax.dx
    return jnp.max(rate)


# ---- conservative update --------------------------------------------------------------------------------
def courant_velocities(
    velocities: Sequence[Array], grid: Grid1D | Grid2D, dt: ArrayLike
) -> tuple[Array, ...]:
    """Face velocities times Δt/h_axis (Courant numbers): fluxes built from them are Courant-scaled."""
    return tuple(v * (dt / ax.dx) for v, ax in zip(velocities, grid_axes(grid)))


def flux_difference(fluxes: Sequence[Array]) -> Array:
    """−Σ_axes (G_{i+1/2} − G_{i−1/2}) for Courant-scaled face fluxes G = Δt/h_axis · (flux) (one array per
    axis, n + 1 faces along it): the forward-Euler increment Δt · df/dt of the cell averages."""
    out = 0.0
    for a, G in enumerate(fluxes):
        out = out - jnp.diff(G, axis=a)
    return out


def wall_masses(fluxes: Sequence[Array], grid: Grid1D | Grid2D, boundary: str) -> Array:
    """Mass leaving through each wall during the step, [lower, upper] per axis (shape (2 d,)).

    The flux through a face times Δt is a mass per unit transverse length, and a Courant-scaled flux is that
    divided by h_axis, so the mass through a wall is G summed over its faces times the cell volume.
    Periodic walls lose nothing (the wrap face is interior).
    """
    volume = float(np.prod([ax.dx for ax in grid_axes(grid)]))
    masses = []
    for a, G in enumerate(fluxes):
        G = jnp.moveaxis(G, a, 0)
        masses += [-jnp.sum(G[0]) * volume, jnp.sum(G[-1]) * volume]
    masses = jnp.stack(masses)
    return jnp.zeros_like(masses) if boundary == "periodic" else masses


# ---- time stepping --------------------------------------------------------------------------------------
def ssp_rk_step(increment: Callable[[Any], Any], u: Any, dt: Array, method: str) -> Any:
    """One step of an SSP Runge–Kutta method (see ``SSP_STEPPERS``) for du/dt = L(u), u a pytree, given the
    forward-Euler increment ``increment(v) = Δt · L(v)`` (the caller applies Δt, e.g. through Courant-scaled
    face velocities or as Δt · L v).

    Each stage but the last is computed behind a conditional whose two branches are the stage, with the
    predicate Δt == Δt (true unless Δt is NaN, but not a constant XLA could fold; a scalar, so also
    replicated on every device of a sharded solve; under ``jax.vmap`` it holds for every field, so
    :func:`~meanfield_jax.conditional.batch_cond` runs the stage once): its result is a materialised array
    that the next stage reads, which keeps XLA from fusing (and so re-evaluating) a stage's stencil into
    every later stage. An identity branch instead (the stage skipped when Δt = 0) made XLA copy the state
    once per step, since the conditional's result could then be its operand (measured: 1-D MUSCL at 10⁵
    cells 1.32–1.33x the time, 2-D Fokker–Planck at 256² 1.67–1.72x). The solvers call every step from the
    time loop of :func:`~meanfield_jax.timestepping.integrate`, whose conditional around the whole step skips
    steps of zero length (or the step's own, for a step that masks itself). The last stage has no later
    stage to be fused into, and behind its own conditional its result, the step's, was a conditional's
    output nested in the loop's, which XLA copied into the loop's state at every step; without it the
    stage's kernel writes the state in place (the field traced,
    old and new code in one process, calls interleaved: MUSCL 1-D 10³ / 10⁴ / 10⁵ cells 0.98 / 0.95 /
    0.80x the time, 2-D 256² / 512² 0.87 / 0.94x; checkpointed gradients 0.86–0.98x, discrete 0.95–1.03x,
    2-D Fokker–Planck's at 128² 0.97x / 0.91x; bitwise the same values). Each stage is under
    ``jax.checkpoint``: reverse mode recomputes its stencil instead of storing a dozen intermediates per
    cell.
    """
    return ssp_rk_stages(increment, u, dt, method)[-1]


def ssp_rk_stages(increment: Callable[[Any], Any], u: Any, dt: Array, method: str) -> list[Any]:
    """The stage values v₀ = u, v₁, …, v_m of :func:`ssp_rk_step` (v_m is the step's result), in the
    Shu–Osher form v_{k+1} = a_k u + c_k (v_k + increment(v_k)) with (a₀, c₀) = (0, 1) and the
    ``SSP_STEPPERS`` coefficients after it (``ssp_stage_weights``)."""
    dt = jnp.asarray(dt)

    def stage(a: float, c: float, last: bool):
        def advance(v):  # every leaf keeps its dtype (a float32 density on a float64 grid stays float32)
            new = jax.tree_util.tree_map(lambda x, dx: x + dx, v, increment(v))
            if a:
                new = jax.tree_util.tree_map(lambda x0, x1: a * x0 + c * x1, u, new)
            return jax.tree_util.tree_map(lambda x, y: y.astype(x.dtype), v, new)

        advance = jax.checkpoint(advance, prevent_cse=False)
        if last:
            return advance
        return lambda v: batch_cond(dt == dt, advance, advance, v)

    values = [u]
    weights = ssp_stage_weights(method)
    for k, (a, c) in enumerate(weights):
        values.append(stage(a, c, k == len(weights) - 1)(values[-1]))
    return values


def ssp_stage_weights(method: str) -> tuple[tuple[float, float], ...]:
    """(a_k, c_k) of every stage of the SSP method, the first (0, 1): v₁ = v₀ + increment(v₀)."""
    return ((0.0, 1.0), *SSP_STEPPERS[method])
