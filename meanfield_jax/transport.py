"""Finite-volume solver of the continuity (Vlasov-type) equation of the data density (MODEL.md §3).

    ∂_t f + ∇·(F(t, x) f) = 0,   F(t, x) = σ(W(t) x + b(t) [+ β m1/m0]),   f(0) = f0,

on a Grid1D or Grid2D. Semi-discretisation (method of lines), dimension by dimension:

    d f_i / dt = −Σ_axes (G_{i+1/2} − G_{i−1/2}) / h_axis,
    G_{i+1/2} = F⁺_{i+1/2} f^−_{i+1/2} + F⁻_{i+1/2} f^+_{i+1/2},

the upwind flux of the reconstructed face values (F^± = max/min(F, 0); f^− from the cell below the face,
f^+ from the cell above; see :mod:`meanfield_jax.reconstruction`) with the drift sampled at the face centre:
F(x_{i+1/2}) in 1-D, u(x_{i+1/2}, y_j) on x-faces and v(x_i, y_{j+1/2}) on y-faces in 2-D. Schemes:
``upwind`` (first order), ``muscl`` with a ``minmod`` / ``vanleer`` / ``mc`` limiter (second order), and
``cweno3`` (third order in 1-D; the face-midpoint flux makes it formally second order in 2-D). Time
stepping: forward Euler, SSP-RK2 (Heun) or SSP-RK3 (Shu–Osher). The layer of the drift is that of the
step's midpoint, and the steps land on every layer boundary and save time
(:func:`meanfield_jax.timestepping.integrate`); a feedback bias uses the mean m1/m0 of each Runge–Kutta
stage's own density. A field that maps the data as
they enter a layer (``enter_layer``, e.g. the AutoencODE's projection onto its active components) has the
density pushed forward by that map at the start of each layer, cell by cell
(:func:`~meanfield_jax.kinetic_common.push_forward_cells`).

Courant number and positivity. The step is Δt = cfl / R, where R is the largest rate at which a cell can
empty, R = max over layers and cells of Σ_axes (F⁺ on the upper face + F⁻ on the lower face)/h_axis
(:func:`~meanfield_jax.kinetic_common.advection_rate_bound`; it reduces to max |F|/Δx where the flow
passes through a cell and is the sharp bound where it diverges from one, as around the repelling point of
the classification field). A forward-Euler step of f ≥ 0 keeps f ≥ 0 when the outflow of each cell,
Δt Σ F^out f^face/h, is at most f̄: with f^face = f̄ (upwind) that is cfl ≤ 1; with face values in
[0, 2 f̄] (every MUSCL limiter here, and CWENO3 after its scaling limiter) it is cfl ≤ 1/2. The SSP
steppers are convex combinations of such Euler steps, so the limits — ``CFL_LIMITS`` — hold for all of
them, and a larger cfl is rejected. With zero-flux or periodic walls the scheme conserves mass to round-off;
with outflow walls (no inflow) the mass that leaves is integrated alongside f by the same Runge–Kutta
stages and returned as ``KineticSolution.outflow``, so mass + outflow is conserved to round-off.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .adjoint import KINETIC_ADJOINTS, forward_sensitivities, loop_adjoint, materialised_vjp
from .arguments import number
from .conditional import batch_cond
from .dispatch import jit_arrays
from .field import AbstractField
from .grid import Grid1D, Grid2D
from .kinetic_common import (
    BOUNDARIES,
    GHOST_PAD_MODES,
    SSP_STEPPERS,
    advection_rate_bound,
    check_choice,
    check_max_steps,
    courant_velocities,
    density_mean,
    face_velocities,
    flux_difference,
    grid_axes,
    is_traced,
    layer_lookup,
    layer_stops,
    maps_between_layers,
    pad_axis,
    push_forward_cells,
    scan_length,
    ssp_rk_stages,
    ssp_rk_step,
    validate_density,
    validate_field_and_grid,
    wall_masses,
)
from .muscl_adjoint import ssp_step_adjoint
from .reconstruction import LIMITERS, cweno3, muscl, piecewise_constant
from .solution import KineticSolution
from .timestepping import integrate, resolve_save_times

__all__ = ["CFL_LIMITS", "SCHEMES", "cfl_time_step", "solve_vlasov", "upwind_flux"]

SCHEMES = ("upwind", "muscl", "cweno3")
CFL_LIMITS = {"upwind": 1.0, "muscl": 0.5, "cweno3": 0.5}


# From this many bytes a 2-D density is padded once along both axes per stage, where each axis's stencil
# takes its slice, and the MUSCL slopes are fused into their readers (`reconstruction.muscl`): a stage's
# arrays no longer stay in the 32 MB L3 cache between its kernels, and the second pad and the written slopes
# went to memory and back. One 2-D MUSCL solve of 50 steps, both versions compiled in one process, calls
# interleaved, bitwise the same densities: fused / written slopes float64 512² 1.17-1.23x, 544² 1.03x, 576²
# 0.86x, 640² 0.84x, 1024² 0.69x, 2048² 0.74x; float32 640² 1.22x, 800² 1.05x, 900² 0.92x, 1024² 0.78x; then
# one pad / two pads float64 640² 0.89x, 1024² 0.77-0.82x, 2048² 0.74x, float32 900² 0.88x, 1024² 0.87x (with
# the slopes written, 512² 1.07x, float32 724² 1.02x; 256² 1.17x, its discrete gradient 1.08x). In 1-D (one
# axis, one pad) fused slopes did not pay (float64 3·10⁵ cells 1.37x, 10⁶ 0.96x; float32 10⁶ 1.11x).
LARGE_2D_GRID_BYTES = 5 * 2**19


# Below this many cells a 1-D density's ghost cells beyond outflow walls (zeros) are joined to it by a
# concatenation, which XLA fuses, where its CPU backend writes a pad by a kernel of its own. Forward MUSCL
# solves of 200 steps, both versions compiled in one process, calls interleaved, bitwise the same densities:
# float64 10³ / 10⁴ / 2·10⁴ cells 0.84 / 0.86 / 0.85x the time, float32 10³ / 10⁴ / 3·10⁴ 0.79 / 0.83 /
# 0.93x; from 5·10⁴ cells slower (float64 5·10⁴ / 10⁵ / 3·10⁵ 1.04 / 1.09 / 1.03x). Gradients at 10³ / 10⁴
# cells: checkpointed 0.93 / 0.94x, discrete 0.97 / 0.94x, forward sensitivities 0.98 / 1.01x, whose
# tangents keep the pad (:func:`_zero_ghosts`; batched, a concatenated tangent made them 1.09 / 1.15x).
# Measured on CPU; other backends take the same path.
CONCATENATED_GHOSTS_BELOW = 2**15


def _large_2d(f: Array) -> bool:
    return f.ndim == 2 and f.size * f.dtype.itemsize >= LARGE_2D_GRID_BYTES


def _ghost_cells(f: Array, axis: int, boundary: str) -> Array:
    """``f`` with two ghost cells beyond each wall along ``axis`` (:data:`GHOST_PAD_MODES`): by
    :func:`_zero_ghosts` (a concatenation) for a 1-D density with outflow walls below
    ``CONCATENATED_GHOSTS_BELOW`` cells, otherwise by a pad."""
    mode = GHOST_PAD_MODES[boundary]
    if mode == "constant" and f.ndim == 1 and f.size < CONCATENATED_GHOSTS_BELOW:
        return _zero_ghosts(f)
    return pad_axis(f, axis, 2, 2, mode)


@jax.custom_jvp
def _zero_ghosts(f: Array) -> Array:
    """A 1-D ``f`` with two zeros beyond each end, by a concatenation (see ``CONCATENATED_GHOSTS_BELOW``);
    its tangent is the tangent padded."""
    zeros = jnp.zeros(2, f.dtype)
    return jnp.concatenate([zeros, f, zeros])


@_zero_ghosts.defjvp
def _zero_ghosts_jvp(primals, tangents):
    (f,), (df,) = primals, tangents
    return _zero_ghosts(f), pad_axis(df, 0, 2, 2)


def _ghost_padded(f: Array, boundary: str) -> Array:
    """``f`` with two ghost cells beyond each wall along every axis (corners unused)."""
    return jnp.pad(f, 2, mode=GHOST_PAD_MODES[boundary])


class _Config(NamedTuple):
    """The static choices of a solve (hashable, so that compiled solvers are reused)."""

    scheme: str
    limiter: str
    boundary: str
    time_stepper: str
    cfl: float
    adjoint: str


def upwind_flux(
    f: Array, velocity: Array, axis: int, scheme: str, limiter: str, boundary: str, h: float,
    padded: Array | None = None,
):
    """G = F⁺ f^− + F⁻ f^+ on the faces normal to ``axis`` (n + 1 of them) from cell averages ``f``.

    ``velocity`` holds F on those faces (or F Δt/h, which makes G Courant-scaled: G is linear in F). The
    ghost cells beyond the walls are zero (outflow: nothing enters), a mirror image (zero flux, where the
    wall velocity is zero anyway) or the periodic continuation. CWENO3 uses ε = (h · max|f|)² in its
    weights, which makes them invariant under scaling of f and keeps third order at smooth extrema. The
    stencils are slices along ``axis`` (no transposes), so both axes of a 2-D grid cost the same.
    ``padded`` (2-D only): ``f`` with two ghost cells beyond each wall along both axes, as
    ``jnp.pad(f, 2, mode=GHOST_PAD_MODES[boundary])`` gives it, shared by the two axes' fluxes.
    """
    axis = axis % f.ndim
    if padded is None:
        padded = _ghost_cells(f, axis, boundary)
    else:  # the inner cells along the other axis
        if f.ndim != 2:
            raise ValueError(f"padded= is for 2-D densities, got f of shape {tuple(f.shape)}")
        other = 1 - axis
        padded = jax.lax.slice_in_dim(padded, 2, 2 + f.shape[other], axis=other)
    if scheme == "upwind":
        lower, upper = piecewise_constant(padded, axis)
    elif scheme == "muscl":
        lower, upper = muscl(padded, LIMITERS[limiter], axis, written_slopes=not _large_2d(f))
    else:
        lower, upper = cweno3(padded, (h * jnp.max(jnp.abs(f))) ** 2, axis)
    faces = f.shape[axis] + 1
    below = jax.lax.slice_in_dim(upper, 0, faces, axis=axis)  # f^− of each face: upper edge of the cell below
    above = jax.lax.slice_in_dim(lower, 1, faces + 1, axis=axis)  # f^+: lower edge of the cell above
    outgoing, incoming = _upwind_parts(velocity)
    return outgoing * below + incoming * above


@jax.custom_jvp
def _upwind_parts(velocity: Array) -> tuple[Array, Array]:
    """(max(F, 0), min(F, 0)), with JAX's derivative (each takes half of δF where F = 0) written as selects
    on F, which XLA fuses into the flux's tangent; JAX's own (a quotient of selects) was a kernel of its own
    per part and stage, written to memory under forward sensitivities."""
    return jnp.maximum(velocity, 0.0), jnp.minimum(velocity, 0.0)


@_upwind_parts.defjvp
def _upwind_parts_jvp(primals, tangents):
    (velocity,), (d_velocity,) = primals, tangents
    tie = jnp.where(velocity == 0, 0.5 * d_velocity, jnp.zeros_like(d_velocity))
    return _upwind_parts(velocity), (
        jnp.where(velocity > 0, d_velocity, tie),
        jnp.where(velocity < 0, d_velocity, tie),
    )


def cfl_time_step(
    field: AbstractField, grid: Grid1D | Grid2D, boundary: str, cfl: float, t_end: float
) -> Array:
    """Δt = cfl / R with the rate bound R of the module docstring (t_end when the drift vanishes)."""
    return _step_from_rate(advection_rate_bound(field, grid, boundary), cfl, t_end)


def _step_from_rate(rate: ArrayLike, cfl: float, t_end: float) -> Array:
    return cfl / jnp.maximum(rate, cfl / t_end)


def _increment(
    field: AbstractField, grid, config: _Config, layer: Array, velocities: tuple[Array, ...] | None, dt, state
):
    """The forward-Euler increment (Δt df/dt, mass leaving through each wall in Δt) on the given layer; the
    face velocities are the layer's (None with a feedback bias: computed here from the density's own mean)."""
    if field.feedback is not None:
        velocities = face_velocities(field, layer, grid, config.boundary, density_mean(state[0], grid))
    materialise = config.adjoint == "discrete" and grid.d == 1  # measured: faster in 1-D, no gain in 2-D
    return _flux_increment(grid, config, velocities, dt, state, materialise)


def _flux_increment(grid, config: _Config, velocities: tuple[Array, ...], dt, state, materialise: bool):
    """:func:`_increment` with the face velocities given; ``materialise``: the face fluxes' cotangents by
    :func:`~meanfield_jax.adjoint.materialised_vjp`."""
    f, _ = state
    axes = grid_axes(grid)

    def face_fluxes(f, *courant):
        padded = _ghost_padded(f, config.boundary) if _large_2d(f) else None
        return [
            upwind_flux(f, c, a, config.scheme, config.limiter, config.boundary, ax.dx, padded)
            for a, (c, ax) in enumerate(zip(courant, axes))
        ]

    if materialise:
        face_fluxes = materialised_vjp(face_fluxes)
    fluxes = face_fluxes(f, *courant_velocities(velocities, grid, dt))
    return flux_difference(fluxes), wall_masses(fluxes, grid, config.boundary)


def _has_written_adjoint(field: AbstractField, grid, config: _Config) -> bool:
    """Whether the steps take :func:`_muscl_step`: the discrete adjoint of MUSCL with face velocities fixed
    on each layer (no feedback bias, no map between layers)."""
    return (
        config.adjoint == "discrete" and config.scheme == "muscl" and field.feedback is None
        and not maps_between_layers(field)
    )


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _muscl_step(config: _Config, grid, velocities: tuple[Array, ...], f: Array, outflow: Array, dt: Array):
    """One SSP step of MUSCL with the face velocities of one layer, (f, outflow) → (f, outflow), with its
    adjoint written out (:mod:`meanfield_jax.muscl_adjoint`; reverse mode only, for the discrete adjoint).
    A step of length zero leaves the state as it is, and its adjoint passes the cotangents through.

    The time loop calls it for every step (``integrate(self_masking=True)``), and the step skips itself
    past the end of a save interval, behind a conditional in the value only. Reverse mode then transposes
    no conditional around the step, whose linearisation copied the face velocities out of it at every
    reverse step."""
    increment = _layer_increment(config, grid, velocities, dt)
    return batch_cond(
        dt != 0, lambda u: ssp_rk_step(increment, u, dt, config.time_stepper), lambda u: u, (f, outflow)
    )


def _layer_increment(config: _Config, grid, velocities: tuple[Array, ...], dt: Array):
    """The forward-Euler increment of :func:`_muscl_step` (its cotangents are the written ones)."""
    return partial(_flux_increment, grid, config, velocities, dt, materialise=False)


def _muscl_step_fwd(config, grid, velocities, f, outflow, dt):
    return _muscl_step(config, grid, velocities, f, outflow, dt), (velocities, f, outflow, dt)


def _muscl_step_bwd(config, grid, residuals, cotangents):
    velocities, f, outflow, dt = residuals
    p, q = cotangents
    spacing = tuple(ax.dx for ax in grid_axes(grid))

    def adjoint(p, q):
        increment = _layer_increment(config, grid, velocities, dt)
        stages = ssp_rk_stages(increment, (f, outflow), dt, config.time_stepper)[:-1]
        return ssp_step_adjoint(
            config.limiter, config.boundary, spacing, config.time_stepper, velocities, dt, stages, p, q
        )

    def still(p, q):
        return p, q, jax.tree.map(jnp.zeros_like, velocities), jnp.zeros_like(dt)

    g_f, g_outflow, g_velocities, g_dt = batch_cond(dt != 0, adjoint, still, p, q)
    g_velocities = tuple(g.astype(v.dtype) for g, v in zip(g_velocities, velocities))
    return g_velocities, g_f, g_outflow, g_dt.astype(dt.dtype)


_muscl_step.defvjp(_muscl_step_fwd, _muscl_step_bwd)


@partial(jit_arrays, static_argnames=("save_at", "config", "steps", "t0"))
def _solve(
    field: AbstractField,
    f0: Array,
    grid,
    save_at: tuple[float, ...],
    config: _Config,
    steps: int,
    t0: float,
    dt_max: Array | None = None,
):
    """The compiled solve; ``dt_max`` is the CFL step when :func:`prepare_vlasov` has computed it (a concrete
    field), else it is computed here (from the traced field, so that it is differentiated)."""
    save = np.asarray(save_at)
    if dt_max is None:
        dt_max = cfl_time_step(field, grid, config.boundary, config.cfl, save[-1] - t0)

    first = field.layer_index(jnp.asarray(t0))
    if field.feedback is None:  # the face velocities change only between layers
        carry0, velocities_at = layer_lookup(
            lambda l: face_velocities(field, l, grid, config.boundary), field.num_layers, first
        )
    else:  # recomputed from each stage's own mean (in _increment)
        carry0, velocities_at = (), lambda carry, l: (None, carry)

    written = _has_written_adjoint(field, grid, config)

    def step(state, t, dt, full=None):  # ``full``: integrate's flag for self-masking steps, not needed here
        f, outflow, entered, carry = state
        layer = field.layer_index(t + 0.5 * dt)
        if maps_between_layers(field):
            f = batch_cond(
                layer != entered,
                lambda g: push_forward_cells(g, grid, lambda x: field.enter_layer(layer, x)),
                lambda g: g,
                f,
            )
        velocities, carry = velocities_at(carry, layer)
        if written:
            f, outflow = _muscl_step(config, grid, tuple(velocities), f, outflow, dt)
        else:
            increment = partial(_increment, field, grid, config, layer, velocities, dt)
            f, outflow = ssp_rk_step(increment, (f, outflow), dt, config.time_stepper)
        return f, outflow, layer, carry

    state0 = (f0, jnp.zeros(2 * grid.d, f0.dtype), jnp.asarray(-1, jnp.int32), carry0)
    (f, outflow), info = integrate(  # the layer index and the carried velocities are not saved
        step, state0, save, dt_max, layer_stops(field), t0=t0, max_steps=steps,
        adjoint=loop_adjoint(config.adjoint), saved=lambda state: state[:2], self_masking=written,
    )
    return KineticSolution(
        ts=jnp.asarray(save, f0.dtype), f=f, grid=grid, outflow=outflow, num_steps=info["num_steps"]
    )


# one compiled call for counting the steps of a concrete field (op by op it took ~0.1 ms on 10³ cells)
_compiled_time_step = jit_arrays(cfl_time_step, static_argnames=("boundary", "cfl", "t_end"))


def _check_cfl(cfl, scheme: str) -> float:
    cfl = number(cfl, "cfl")
    limit = CFL_LIMITS[scheme]
    if not (np.isfinite(cfl) and 0 < cfl <= limit):
        raise ValueError(
            f"cfl={cfl} is outside (0, {limit}], the range in which scheme {scheme!r} keeps the density "
            "non-negative (see CFL_LIMITS)"
        )
    return cfl


def prepare_vlasov(
    field: AbstractField,
    f0: ArrayLike,
    grid: Grid1D | Grid2D,
    t_final: float | None,
    save_at: ArrayLike | None,
    scheme: str,
    limiter: str,
    cfl: float,
    boundary: str,
    time_stepper: str,
    max_steps: int | None,
    adjoint: str,
    t0: float = 0.0,
    schemes: tuple[str, ...] = SCHEMES,
) -> tuple[Array, _Config, np.ndarray, int, float, Array | None]:
    """Validate the arguments of :func:`solve_vlasov` (before compiling) and count the steps.

    Returns (f0 cast to the field's dtype, the solver's static configuration, the save times, the scan length
    per save interval, t0, the CFL step). The step is None for a traced field; for a concrete one it is the
    step the count was made with, which the solve then takes instead of evaluating the rate bound again.
    Shared by :func:`solve_vlasov` and the multi-device solve, which allows fewer ``schemes``.
    """
    validate_field_and_grid(field, grid)
    f0 = validate_density(f0, grid)
    config = _Config(
        check_choice("scheme", scheme, schemes),
        check_choice("limiter", limiter, tuple(LIMITERS)),
        check_choice("boundary", boundary, BOUNDARIES),
        check_choice("time_stepper", time_stepper, tuple(SSP_STEPPERS)),
        _check_cfl(cfl, scheme),
        check_choice("adjoint", adjoint, KINETIC_ADJOINTS),
    )
    check_max_steps(max_steps)
    save = resolve_save_times(t_final, save_at, field.T, t0)
    t0 = float(t0)
    if is_traced(field):
        if max_steps is None:
            raise ValueError(
                "the field is traced (under jax.jit / jax.grad), so the number of CFL steps cannot be "
                "computed: pass max_steps= (a bound on the steps between two save times)"
            )
        steps, dt_max = max_steps, None
    else:  # a concrete field (closed over by an outer jax.jit, say): count the steps now
        with jax.ensure_compile_time_eval():
            dt_max = _compiled_time_step(field, grid, boundary, config.cfl, float(save[-1]) - t0)
        steps = scan_length(save, layer_stops(field), float(dt_max), max_steps, t0)
    dtype = jnp.result_type(f0.dtype, *[leaf.dtype for leaf in jax.tree_util.tree_leaves(field)])
    return f0.astype(dtype), config, save, steps, t0, dt_max


def solve_vlasov(
    field: AbstractField,
    f0: ArrayLike,
    grid: Grid1D | Grid2D,
    t_final: float | None = None,
    save_at: ArrayLike | None = None,
    scheme: str = "muscl",
    limiter: str = "mc",
    cfl: float = 0.5,
    boundary: str = "outflow",
    time_stepper: str = "ssprk2",
    max_steps: int | None = None,
    adjoint: str = "checkpointed",
    t0: float = 0.0,
) -> KineticSolution:
    """Solve ∂_t f + ∇·(σ(W(t) x + b(t)) f) = 0 from f0 (cell averages on ``grid``); see the module docstring.

    Args:
        field: the :class:`~meanfield_jax.NeuralField` (its d must equal grid.d; W may be any d × d matrix
            per layer, and a feedback β adds β m1/m0 of the current density to the bias).
        f0: non-negative, finite cell averages of shape ``grid.shape``.
        grid: a Grid1D or Grid2D. On CPU give it an even number of cells: XLA neither vectorises nor
            splits across threads a kernel over an odd count of values (10⁵ + 1 cells took 1.9x the time
            of 10⁵, measured).
        t_final: final time (default ``field.T``); ignored when ``save_at`` is given.
        save_at: increasing times at which f is returned (default [0, t_final]).
        scheme: ``"upwind"``, ``"muscl"`` or ``"cweno3"``.
        limiter: MUSCL slope limiter, ``"minmod"``, ``"vanleer"`` or ``"mc"``.
        cfl: Courant number, at most ``CFL_LIMITS[scheme]``.
        boundary: ``"outflow"``, ``"zero_flux"`` or ``"periodic"``.
        time_stepper: ``"euler"``, ``"ssprk2"`` or ``"ssprk3"``.
        max_steps: bound on the steps between two save times. Needed when the field is traced (under
            jax.jit / jax.grad w.r.t. it); otherwise the count is computed from the CFL step.
        adjoint: how reverse mode differentiates the time loop: ``"checkpointed"`` (memory ~ √steps),
            ``"direct"`` (every step stored) or ``"discrete"`` (the discrete adjoint of the steps: same
            gradient, less memory; reverse mode only, so not for ``jax.jvp``/``jacfwd``), or ``"forward"``
            (forward sensitivities, :func:`~meanfield_jax.adjoint.forward_sensitivities`: the P parameters
            of the field carried as P tangents through the loop, memory independent of the steps, the
            fastest gradient when P is a handful; f0 by reverse mode; reverse mode only); see
            :mod:`meanfield_jax.timestepping`.
        t0: the time of f0 (default 0); the field's layers keep their absolute times, so a solve can be
            continued from any saved time (see :mod:`meanfield_jax.streaming`).

    Returns:
        A :class:`~meanfield_jax.KineticSolution`: ``ts``, ``f`` (k, *grid.shape), ``outflow`` (k, 2 d), the
        cumulative mass that left through [left, right] (1-D) or [x_lo, x_hi, y_lo, y_hi] (2-D).

    Many fields at once: ``jax.vmap`` over them works, each field with its own CFL step; the loop's
    conditionals (:func:`~meanfield_jax.conditional.batch_cond`) run a branch only when some field takes
    it. A vmap of a gradient through a field of several layers recomputes the layer's coefficients at every
    step; ``jax.lax.map`` avoids that (docs/scaling.md).

    Raises (before anything is compiled):
        TypeError: a field, grid, f0 or cfl of the wrong type.
        ValueError: f0 of the wrong shape, negative or not finite; field.d ≠ grid.d; an unknown scheme,
            limiter, boundary, time_stepper or adjoint; cfl outside (0, CFL_LIMITS[scheme]]; max_steps not a
            positive integer, too small, or missing for a traced field; bad t_final / save_at.
    """
    f0, config, save, steps, t0, dt_max = prepare_vlasov(
        field, f0, grid, t_final, save_at, scheme, limiter, cfl, boundary, time_stepper, max_steps, adjoint,
        t0,
    )
    save_times = tuple(float(s) for s in save)
    if adjoint == "forward":
        def run(fld: AbstractField, f: Array, mode: str = adjoint) -> KineticSolution:
            return _solve(fld, f, grid, save_times, config._replace(adjoint=mode), steps, t0, dt_max)

        return forward_sensitivities(run, field, f0, partial(run, mode="checkpointed"))
    return _solve(field, f0, grid, save_times, config, steps, t0, dt_max)
