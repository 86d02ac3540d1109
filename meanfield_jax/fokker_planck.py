"""The Fokker–Planck equation of the stochastic ResNet: time stepping and the steady state.

The density f(t, x) of the data pushed through dX = F(t, X) dt + sqrt(2 K(X)) dB, F = σ(W(t) x + b(t)),
solves on a box with zero-flux walls

    ∂_t f + ∇·(F f) = Δ(K f),   n·J = 0 on the walls,   J = a f − K ∇f,   a = F − ∇K,

with K ≥ 0 a constant or a function of x. Space: cell-centred finite volumes with the exponentially fitted
face flux of :mod:`meanfield_jax.chang_cooper` (a, K and the centred difference ∂K ≈ (K_{i+1} − K_i)/h
taken on the faces), which conserves mass, keeps f ≥ 0, reduces to upwinding for K = 0, and whose zero-flux
steady state is exact at the nodes for F = w x + b and constant K. Write d f/dt = L f.

Time (the field is constant on each layer; steps land on layer boundaries and save times, see
:mod:`meanfield_jax.timestepping`):

* ``method="explicit"``: Heun's SSP-RK2, f* = f + Δt L f, f_new = (f + f* + Δt L f*)/2. Each stage is a
  forward-Euler step whose matrix I + Δt L has non-negative off-diagonal entries and unit column sums; its
  diagonal 1 − Δt (α_{i+1/2} + β_{i−1/2})/h (summed over axes) is non-negative iff Δt ≤ 1/max_i(−L_ii). So
  Δt = cfl / max(−L_ii), the maximum over the layers, with cfl ∈ (0, 1], keeps f ≥ 0 and the mass exactly.
  Since α ≤ K/h + a⁺ and β ≤ K/h + a⁻ (as B(−u) ≤ 1 + u and B(u) ≤ 1 for u ≥ 0), in 1-D this is at least
  cfl · h² / (2 K_max + 2 |a|_max h), and about cfl · h² / (2 K_max + |a|_max h) for smooth drifts (in 2-D
  the rates of the two axes add). In 1-D without feedback L is fixed on each layer, and the step is
  computed in one pass as f_new = f + τ L (f + τ L f / 2), a conservative update with four-point face
  fluxes whose coefficients are prepared once per layer
  (:func:`~meanfield_jax.chang_cooper.heun_flux_coefficients`): the same numbers up to round-off,
  2.2–2.7x faster at 10⁵ cells (measured); in a solve that is not differentiated (default adjoint), a step
  of the whole length Δt takes those fluxes as one four-point stencil
  (:func:`~meanfield_jax.chang_cooper.heun_whole_step`, four coefficient arrays instead of six). Its
  forward-mode derivative is that of the two stages, the discrete adjoint differentiates it by its written
  adjoint, and forward sensitivities (``adjoint="forward"``) by the four-point stencil's tangent
  (:func:`_heun_update_1d_forward`). In 2-D the step is the two stages with the
  layer's (α, β). With several layers the loop runs layer piece by layer piece
  (:func:`~meanfield_jax.timestepping.integrate`'s ``piece_constant``: each piece makes its layer's
  coefficients before its steps) when the pieces have at least :data:`PIECE_MIN_STEPS` steps (16 in 1-D,
  any number in 2-D); otherwise (α, β) are carried through the loop and made again on entering a layer.
* ``method="implicit"``: the θ-scheme (I − θ Δt L) Δf = Δt L f, f_new = f + Δf (θ = 1 backward Euler,
  θ = 1/2 Crank–Nicolson), solved directly: a tridiagonal solve in 1-D, the block Thomas algorithm in 2-D
  (:mod:`meanfield_jax.block_tridiagonal`, O(n_long · n_short³) per step). I − θΔtL is a non-singular M-matrix
  with unit column sums, so backward Euler is positive and mass-preserving for every Δt, and Crank–Nicolson
  for Δt ≤ 2 / max(−L_ii). The default Δt is the advective limit cfl / Σ_axes max|a|/h.

Both have exactly the null vector of L as their fixed point, i.e. they converge to the discrete steady state
computed directly by :func:`fokker_planck_steady_state`. The drift of a step on [t, t + Δt] is that of layer
``field.layer_index(t + Δt/2)``; a feedback bias uses the mean m1/m0 of the density the drift acts on (each
RK stage; the old density in the implicit step). With feedback the time-step bound is taken over every mean
a non-negative density can have (a corner of the box of cell centres suffices since σ is monotone).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .adjoint import KINETIC_ADJOINTS, forward_sensitivities, loop_adjoint
from .arguments import concrete_scalar, number
from .block_tridiagonal import block_tridiagonal_solve
from .chang_cooper import (
    apply_fitted_operator,
    fitted_flux_coefficients,
    fitted_operator_vjp,
    flux_update,
    heun_flux_coefficients,
    heun_update,
    heun_update_flux,
    heun_update_s_vjp,
    heun_update_vjp,
    heun_whole_step_flux,
    heun_whole_step_stencil,
    inner_flux,
    outflow_rate,
    pad_cells,
    tridiagonal_bands,
)
from .conditional import batch_cond, behind_conditional
from .dispatch import jit_arrays
from .field import AbstractField
from .grid import Grid1D, Grid2D
from .kinetic_common import (
    check_choice,
    check_max_steps,
    density_mean,
    grid_axes,
    is_traced,
    largest_over_corner_means,
    largest_over_layers,
    layer_lookup,
    layer_stops,
    maps_between_layers,
    scan_length,
    ssp_rk_step,
    validate_density,
    validate_field_and_grid,
)
from .solution import KineticSolution
from .timestepping import integrate, piece_table, resolve_save_times, steps_per_piece

__all__ = ["BOUNDARIES", "METHODS", "SCHEMES", "fokker_planck_steady_state", "solve_fokker_planck"]

SCHEMES = ("chang_cooper", "scharfetter_gummel")  # one flux: see meanfield_jax.chang_cooper
METHODS = ("explicit", "implicit")
BOUNDARIES = ("zero_flux",)

Diffusion = float | ArrayLike | Callable[..., Array]


# ---- the discretisation: interior faces with K and ∂K on them ----------------------------------------------
def _points(coords: list[Array]) -> Array:
    """Points (*shape, d) of the tensor grid of 1-D coordinates."""
    return jnp.stack(jnp.meshgrid(*coords, indexing="ij"), axis=-1)


class _Discretisation(eqx.Module):
    """The grid, with the interior faces normal to each axis and K, ∂K on them, and the cell centres."""

    grid: Grid1D | Grid2D
    face_coords: tuple[tuple[Array, ...], ...]  # per axis, the 1-D coordinates of its faces' tensor mesh
    face_diffusion: tuple[Array, ...]  # K on those faces
    face_diffusion_gradient: tuple[Array, ...]  # (K_{i+1} − K_i)/h from the cell-centre values
    centres: Array  # (*grid.shape, d)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(ax.dx for ax in grid_axes(self.grid))


def _diffusion_at(diffusion: Diffusion, points: Array) -> Array:
    """K at points (*shape, d): K(x) in 1-D, K(X, Y) in 2-D, a constant broadcast."""
    shape = points.shape[:-1]
    if callable(diffusion):
        values = jnp.asarray(diffusion(*[points[..., k] for k in range(points.shape[-1])]))
        try:
            return jnp.broadcast_to(values, shape)
        except ValueError as exc:
            raise ValueError(
                f"diffusion(...) must return one value per point, shape {shape}, got shape {values.shape}"
            ) from exc
    return jnp.full(shape, diffusion, jnp.result_type(diffusion, float))


def _diffusion_rule(strict: bool) -> str:
    return f"diffusion must be finite and {'> 0 on the interior faces' if strict else '>= 0'} on the grid"


def _checked_diffusion(diffusion: Any, strict: bool) -> Diffusion:
    """A callable K as it is; a constant K as a 0-d array, checked here if concrete (before compiling)."""
    if callable(diffusion):
        return diffusion
    try:
        K = jnp.asarray(diffusion)
    except (TypeError, ValueError) as exc:  # None is a ValueError ("not a valid value for jnp.array")
        raise TypeError(
            f"diffusion must be a number, a 0-d array or a callable K(x), got {type(diffusion).__name__}"
        ) from exc
    if K.ndim != 0 or not (jnp.issubdtype(K.dtype, jnp.integer) or jnp.issubdtype(K.dtype, jnp.floating)):
        raise ValueError(
            "diffusion must be a real number, a 0-d array or a callable K(x) (K(X, Y) in 2-D), "
            f"got an array of shape {K.shape} and dtype {K.dtype}"
        )
    # a Python number is checked as it is (reading the device array back costs a transfer per call)
    value = float(diffusion) if isinstance(diffusion, int | float) else concrete_scalar(K)
    if value is not None and not (math.isfinite(value) and (value > 0 if strict else value >= 0)):
        raise ValueError(f"{_diffusion_rule(strict)}, got diffusion={value}")
    return K


def _discretise(grid: Grid1D | Grid2D, diffusion: Diffusion) -> tuple[_Discretisation, tuple[Array, ...]]:
    """The discretisation, and the check of K: (K negative or not finite somewhere on the grid, K = 0 on
    an interior face, the smallest K)."""
    axes = grid_axes(grid)
    centres = _points([ax.x for ax in axes])
    K_centres = _diffusion_at(diffusion, centres)
    face_coords, K_faces, gradients = [], [], []
    for k, ax in enumerate(axes):
        coords = tuple(a.faces[1:-1] if j == k else a.x for j, a in enumerate(axes))
        face_coords.append(coords)
        K_faces.append(_diffusion_at(diffusion, _points(coords)))
        gradients.append(jnp.diff(K_centres, axis=k) / ax.dx)
    if callable(diffusion):
        K_all = jnp.concatenate([K_centres.ravel(), *[K.ravel() for K in K_faces]])
        vanishes = jnp.any(jnp.concatenate([(K <= 0).ravel() for K in K_faces]))
    else:  # one value everywhere: checked as a scalar (reductions over its broadcast run on one thread)
        K_all = jnp.asarray(diffusion, K_centres.dtype)
        vanishes = (K_all <= 0) & any(K.size > 0 for K in K_faces)
    check = (jnp.any(~jnp.isfinite(K_all) | (K_all < 0)), vanishes, jnp.min(K_all))
    return _Discretisation(grid, tuple(face_coords), tuple(K_faces), tuple(gradients), centres), check


def _guard(x: Any, check: tuple[Array, ...], strict: bool) -> Any:
    """``x``, once K has passed its check (> 0 on the interior faces too if ``strict``): a failed concrete
    check is a ValueError, a traced one a runtime error."""
    invalid, vanishes, lowest = check
    bad = (invalid | vanishes) if strict else invalid
    flag = concrete_scalar(bad)
    if flag is None:
        return eqx.error_if(x, bad, _diffusion_rule(strict))
    if flag:
        raise ValueError(f"{_diffusion_rule(strict)}, got min K = {float(lowest):.6g} (or non-finite values)")
    return x


@partial(jit_arrays, static_argnames=("method", "cfl", "span"))
def _prepare(
    grid: Grid1D | Grid2D, diffusion: Diffusion, field: AbstractField, method: str, cfl: float | None,
    span: float,
) -> tuple[tuple[Array, ...], Array | None, Any]:
    """The check of K, (unless ``cfl`` is None) the CFL step over ``span`` and, for explicit steps of one
    layer without feedback, that layer's face coefficients, in one compilation: the rate bound computes
    them anyway, and the time loop takes them from here (at 10⁵ cells each evaluation costs about 1 ms).
    The discretisation itself is not returned but formed again inside the solve: every array a compiled
    call returns is a new buffer, and on these machines its first write costs a page fault per 4 KiB
    (~2 µs each, measured), where the solve's own temporaries reuse their memory."""
    disc, check = _discretise(grid, diffusion)
    if cfl is None:
        return check, None, None
    if method == "explicit" and field.num_layers == 1 and field.feedback is None:
        coefficients = _coefficients(field, 0, None, disc)
        return check, _time_step(_outflow_bound(coefficients, disc), cfl, span), coefficients
    return check, _time_step(_rate_bound(field, disc, method), cfl, span), None


# ---- the drift and the operator of one layer ---------------------------------------------------------------
def _drift(
    field: AbstractField, l: ArrayLike, mean: Array | None, disc: _Discretisation
) -> tuple[Array, ...]:
    """a = F − ∂K on the interior faces normal to each axis (the normal component)."""
    return tuple(
        field.layer_velocity_on_mesh(l, coords, k, mean) - dK
        for k, (coords, dK) in enumerate(zip(disc.face_coords, disc.face_diffusion_gradient))
    )


def _coefficients(
    field: AbstractField, l: ArrayLike, mean: Array | None, disc: _Discretisation
) -> tuple[tuple[Array, Array], ...]:
    """The face coefficients (α, β) of every axis for layer l."""
    drift = _drift(field, l, mean, disc)
    return tuple(
        fitted_flux_coefficients(a, K, h) for a, K, h in zip(drift, disc.face_diffusion, disc.spacing)
    )


def _rate_bound(field: AbstractField, disc: _Discretisation, method: str) -> Array:
    """Inverse time scale of the step over all layers: max(−L_ii) (explicit), Σ_axes max|a|/h (implicit)
    (:func:`~meanfield_jax.kinetic_common.largest_over_layers`)."""
    return largest_over_layers(partial(_layer_rate, method), (field, disc), field.num_layers)


def _layer_rate(method: str, operands: tuple[AbstractField, _Discretisation], l: Array) -> Array:
    """The inverse time scale of layer l; with a feedback bias the largest over the corner means (which
    bound the data's mean), taken face by face."""
    field, disc = operands
    if method == "explicit":
        coefficients = largest_over_corner_means(lambda m: _coefficients(field, l, m, disc), field, disc.grid)
        return _outflow_bound(coefficients, disc)
    speeds = largest_over_corner_means(
        lambda m: tuple(jnp.abs(a) for a in _drift(field, l, m, disc)), field, disc.grid
    )
    return sum(jnp.max(s) / h for s, h in zip(speeds, disc.spacing))


def _outflow_bound(coefficients, disc: _Discretisation) -> Array:
    """max(−L_ii) of the explicit operator with face coefficients (α, β): the largest rate at which a cell
    empties."""
    return jnp.max(outflow_rate(coefficients, disc.spacing))


def _time_step(rate: Array, cfl: ArrayLike, span: float) -> Array:
    """cfl / rate, at most the whole time span (a field that does not move anything allows any step)."""
    moving = rate * span > cfl
    return jnp.where(moving, cfl / jnp.where(moving, rate, 1.0), span)


# ---- one time step -----------------------------------------------------------------------------------------
def _layer_coefficients(field: AbstractField, disc: _Discretisation, l: Array, f: Array):
    """The face coefficients (α, β) of layer l (with a feedback bias: at the mean of f)."""
    mean = density_mean(f, disc.grid) if field.feedback is not None else None
    return _coefficients(field, l, mean, disc)


def _explicit_step(
    field: AbstractField, disc: _Discretisation, adjoint: str, coefficients, f: Array, t: Array, dt: Array
) -> Array:
    """Heun's SSP-RK2 step with the layer's coefficients (recomputed per stage with a feedback bias); with
    ``adjoint="discrete"`` and no feedback, the step with its hand-written adjoint (:func:`_heun_step`),
    else, without feedback, the stages with their tangent written out (:func:`_heun_step_plain_tangent`)."""
    if field.feedback is None:
        step = _heun_step if adjoint == "discrete" else _heun_step_plain_tangent
        return step(coefficients, f, dt, disc.spacing)
    l = field.layer_index(t + dt / 2)

    def increment(g: Array) -> Array:
        return dt * apply_fitted_operator(_layer_coefficients(field, disc, l, g), g, disc.spacing)

    return ssp_rk_step(increment, f, dt, "ssprk2")


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _heun_step(coefficients, f: Array, dt: Array, spacing: tuple[float, ...]) -> Array:
    """Heun's step f₁ = f + Δt L f, f_new = (f + f₁ + Δt L f₁)/2 with fixed coefficients (α, β) of L.

    Its adjoint is written out (reverse mode only): for the cotangent p of f_new,

        p₁ = (p + Δt Lᵀ p)/2,   p_f = p/2 + p₁ + Δt Lᵀ p₁,
        ∂/∂Δt = ⟨p, L f₁⟩/2 + ⟨p₁, L f⟩,   ∂/∂(α, β) = Δt/2 ∂_c⟨p, L f₁⟩ + Δt ∂_c⟨p₁, L f⟩,

    with Lᵀ and ∂_c of :func:`~meanfield_jax.chang_cooper.fitted_operator_vjp` and ⟨p, L f₁⟩ = ⟨Lᵀ p, f₁⟩.
    The cotangents are computed behind a conditional (a step of length zero, skipped by the forward pass,
    passes p through), so that XLA writes them with kernels split across threads; the two reductions of
    ∂/∂Δt, which run on one thread, then read them from memory instead of re-evaluating the stencils.
    """

    def increment(g: Array) -> Array:  # Δt L g (Δt applied to L g: one product per cell, not two per face)
        return dt * apply_fitted_operator(coefficients, g, spacing)

    return ssp_rk_step(increment, f, dt, "ssprk2")


@partial(jax.custom_jvp, nondiff_argnums=(7,))
def _heun_update_1d(
    coefficients, update, stencil, f: Array, dt_k: Array, s: Array, full: Array, spacing: tuple[float]
) -> Array:
    """Heun's step of length Δt_k = s Δt with fixed coefficients (α, β) of L in 1-D, computed in one pass by
    :func:`~meanfield_jax.chang_cooper.heun_update` from ``update`` = ``heun_flux_coefficients(α, β, h, Δt)``
    (prepared once per layer), or by :func:`~meanfield_jax.chang_cooper.heun_whole_step` on a step of the
    whole length (below). The tangent is that of the two stages f₁ = f + Δt_k L f, (f + f₁ + Δt_k L f₁)/2
    (w.r.t. α, β, f and Δt_k): the same linear map of f, so the same derivative; reverse mode then
    transposes the two stencil passes, which was faster than JAX's transpose of the six-coefficient update
    (by 1–11 %, measured). The stages are written out here, without the conditional and the checkpoint
    that :func:`~meanfield_jax.kinetic_common.ssp_rk_step` puts around each stage (transposed at every
    step): the checkpointed gradient at 10³ / 3·10⁴ / 10⁵ cells 0.82 / 0.80 / 0.75x the time, at 10⁴ cells
    1.05x (measured, calls interleaved), and then 0.95 / 0.83 / 0.94x at 10³ / 10⁴ / 10⁵ with L g
    materialised (:func:`_applied`). ``update`` and s are functions of α, β, Δt and Δt_k and get no
    tangent of their own.

    The time loop calls it for every step (``integrate(self_masking=True)``): a step past the end of the
    save interval (s = Δt_k = 0) leaves f as it is, skipped by a conditional in the value only. Its tangent
    is computed without one, as the two stages give it at Δt_k = 0 (exactly df: t sits on the stop, so Δt_k
    has no tangent there), so that reverse mode transposes no conditional: the checkpointed gradient
    5–10 % faster at 10³–10⁵ cells than with the conditional around the whole step (measured, bitwise the
    same gradients), which in turn had been 1.2x faster than integrate's conditional around the step.

    Inside it, a second conditional on ``full`` (a step of the whole length Δt, as the time loop tells it)
    forms the face flux from the four-point ``stencil`` = ``heun_whole_step_stencil(update)``, made once per
    layer like ``update``, and a step landing on a stop forms it from the six coefficients; f is updated
    from the flux after that conditional (:func:`~meanfield_jax.chang_cooper.flux_update`, which says why).
    The four-point stencil alone, public solves, old and new code
    interleaved, float64, 200 steps: 10⁴ cells 0.96–1.00x the time, 3·10⁴ 0.88x, 10⁵ 0.89–0.93x; ten layers
    on 3·10⁴ cells 0.86x, five on 10⁴ 0.90x (measured). Under differentiation the value is the jvp rule's,
    the six-coefficient update at every step, so gradients compile and compute as before (bitwise); the
    densities a differentiated solve returns then differ from an undifferentiated one's by round-off."""
    del coefficients, dt_k, spacing

    def moving(g: Array) -> Array:  # the flux behind the conditional, the update after it (flux_update)
        flux = batch_cond(
            full, lambda h: heun_whole_step_flux(stencil, h), lambda h: heun_update_flux(update, h, s), g
        )
        return flux_update(g, flux).astype(g.dtype)

    return batch_cond(s != 0, moving, lambda g: g, f)


def _skipping_heun_update(update, f: Array, s: Array) -> Array:
    """heun_update(update, f, s), or f itself when s = 0."""
    return batch_cond(s != 0, lambda g: heun_update(update, g, s).astype(g.dtype), lambda g: g, f)


@_heun_update_1d.defjvp
def _heun_update_1d_jvp(spacing, primals, tangents):
    coefficients, update, _, f, dt_k, s, _ = primals  # the stencil and `full` serve the value only
    d_coefficients, _, _, df, d_dt_k, _, _ = tangents

    out = _skipping_heun_update(update, f, s)
    tangent = _heun_stages_tangent((coefficients, f, dt_k), (d_coefficients, df, d_dt_k), spacing)
    return out, tangent.astype(out.dtype)


@partial(jax.custom_jvp, nondiff_argnums=(7,))
def _heun_update_1d_forward(
    coefficients, update, stencil, f: Array, dt_k: Array, s: Array, full: Array, spacing: tuple[float]
) -> Array:
    """:func:`_heun_update_1d` (the same value) with a tangent for forward sensitivities
    (``adjoint="forward"``), which never transpose it: on a step of the whole length the tangent of the
    four-point update, δf − Δ(Σ_k c_k δf_{i+k} + δc_k f_{i+k}), one pass reading f, δf and the stencil
    with its tangent (made once per layer, like the stencil); on a step landing on a stop, or past the end,
    the two stages' tangent. The value's face flux is formed behind the same conditional (on a step past
    the end the six-coefficient flux at s = 0, which is zero for finite f), and f and δf are updated after
    it: with the value apart, behind the skip's conditional of its own, XLA copied f into the loop's state
    at every step. Gradients at 10³ / 10⁴ / 10⁵ cells 0.95 / 0.93 / 0.82x the time (measured, one process,
    calls interleaved, bitwise the same gradients)."""
    return _heun_update_1d.fun(coefficients, update, stencil, f, dt_k, s, full, spacing)


@_heun_update_1d_forward.defjvp
def _heun_update_1d_forward_jvp(spacing, primals, tangents):
    coefficients, update, stencil, f, dt_k, s, full = primals
    d_coefficients, _, d_stencil, df, d_dt_k, _, _ = tangents

    def whole(operands):  # (F, δF) of the four-point stencil, one pass over f, δf
        stencil_, d_stencil_, f_, df_ = operands[:4]
        return jax.jvp(heun_whole_step_flux, (stencil_, f_), (d_stencil_, df_))

    def stages(operands):  # the six-coefficient flux, and the flux whose differences are the stages' tangent
        _, _, f_, df_, coefficients_, d_coefficients_, dt_k_, d_dt_k_, update_, s_ = operands
        tangent = _heun_stages_tangent((coefficients_, f_, dt_k_), (d_coefficients_, df_, d_dt_k_), spacing)
        return heun_update_flux(update_, f_, s_), inner_flux(-jnp.cumsum(tangent - df_, axis=-1)[..., :-1])

    operands = (stencil, d_stencil, f, df, coefficients, d_coefficients, dt_k, d_dt_k, update, s)
    # value and tangent behind one conditional, both updates after it (flux_update): no copy per step;
    # batch_cond keeps the value unbatched under the vmap over tangent directions
    flux, d_flux = batch_cond(full, whole, stages, operands)
    return flux_update(f, flux).astype(f.dtype), flux_update(df, d_flux).astype(f.dtype)


def _heun_stages(coefficients, f: Array, dt: Array, spacing: tuple[float, ...]) -> Array:
    """Heun's two stages f₁ = f + Δt L f, (f + f₁ + Δt L f₁)/2 written out: no conditional, no checkpoint
    (the derivative of :func:`_heun_step` and of the one-pass step, see :func:`_heun_update_1d`)."""
    f1 = f + dt * _applied(coefficients, f, spacing)
    return 0.5 * (f + f1 + dt * _applied(coefficients, f1, spacing))


def _heun_stages_tangent(primals: tuple, tangents: tuple, spacing: tuple[float, ...]) -> Array:
    """The tangent of :func:`_heun_stages` at primals = (coefficients, f, Δt)."""
    return jax.jvp(lambda c, g, h: _heun_stages(c, g, h, spacing), primals, tangents)[1]


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _applied(coefficients, g: Array, spacing: tuple[float, ...]) -> Array:
    """L g, written to memory by kernels of its own (:func:`~meanfield_jax.conditional.behind_conditional`),
    with the plain tangent of L g (no conditional to transpose). In reverse mode the cotangent of Δt is a
    reduction ⟨p, L g⟩: it then reads L g from memory, where XLA had fused the stencil into the
    single-threaded reduction (a third of the checkpointed gradient at 10⁴ cells, profiled). Measured,
    calls interleaved: 10³ / 10⁴ / 10⁵ cells 0.95 / 0.83 / 0.94x the time, ten layers 0.975x, 2-D 128²
    1.0x."""
    return behind_conditional(lambda c, x: apply_fitted_operator(c, x, spacing), coefficients, g)


@_applied.defjvp
def _applied_jvp(spacing, primals, tangents):
    tangent = jax.jvp(lambda c, x: apply_fitted_operator(c, x, spacing), primals, tangents)[1]
    return _applied(*primals, spacing), tangent


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _heun_step_plain_tangent(coefficients, f: Array, dt: Array, spacing: tuple[float, ...]) -> Array:
    """:func:`_heun_step`'s stages (each behind its conditional, so that XLA evaluates every stencil once),
    differentiated as :func:`_heun_stages` (the same map), so that reverse mode transposes no conditional:
    the checkpointed gradient with ten layers 0.94x / 0.87x the time at 10⁴ / 10⁵ cells, in 2-D (128²)
    0.78x with one layer and 0.89x with ten (measured, calls interleaved; equal to round-off)."""
    return _heun_step.fun(coefficients, f, dt, spacing)


@_heun_step_plain_tangent.defjvp
def _heun_step_plain_tangent_jvp(spacing, primals, tangents):
    out = _heun_step_plain_tangent(*primals, spacing)
    return out, _heun_stages_tangent(primals, tangents, spacing).astype(out.dtype)


@jax.custom_vjp
def _heun_update_written(update, f: Array, s: Array, full: Array) -> Array:
    """:func:`~meanfield_jax.chang_cooper.heun_update` of length σ Δt, σ = 1 on a ``full`` step, else s
    (s = 0: a step past the end of the save interval, which leaves f as it is), with its written adjoint
    (reverse mode only: the discrete adjoint). The skip is inside: the time loop calls this for every step
    (``integrate(self_masking=True)``), so that the coefficients, residuals of every step, are not copied out
    of a conditional. σ has no derivative on a full step and none past the end (t sits on the stop), so the
    reduction that forms ∂/∂s runs only on a step landing on a stop. The cotangents of q₋₁ … q₂ are returned
    in those of a and b (``update`` must come from ``heun_flux_coefficients``)."""
    return _skipping_heun_update(update, f, jnp.where(full, jnp.ones_like(s), s))


def _heun_update_written_fwd(update, f, s, full):
    return _heun_update_written(update, f, s, full), (update, f, s, full)


def _heun_update_written_bwd(residuals, p):
    update, f, s, full = residuals
    sigma = jnp.where(full, jnp.ones_like(s), s)
    # no conditional around the adjoint: its outputs would be materialised instead of fused into the
    # accumulation (2x slower measured); at σ = 0 it gives p and zero cotangents as it stands. f and p are
    # padded once for both cotangents, so the conditional takes arrays the adjoint has written anyway (given
    # f and p, XLA copied each of them once more per step)
    f_padded, p_padded = pad_cells(f), pad_cells(p)
    (d_a, d_b), d_f = heun_update_vjp(update, f_padded, sigma, p_padded, padded=True)
    d_s = batch_cond(
        full | (sigma == 0),
        lambda: jnp.zeros_like(s),
        lambda: heun_update_s_vjp(update, f_padded, sigma, p_padded, padded=True).astype(s.dtype),
    )
    d_update = (d_a.astype(update[0].dtype), d_b.astype(update[1].dtype), *(None,) * 4)
    return d_update, d_f.astype(f.dtype), d_s, None


_heun_update_written.defvjp(_heun_update_written_fwd, _heun_update_written_bwd)


def _heun_step_fwd(coefficients, f, dt, spacing):
    return _heun_step(coefficients, f, dt, spacing), (coefficients, f, dt)


def _heun_step_bwd(spacing, residuals, p):
    coefficients, f, dt = residuals

    def adjoint(p):
        f1 = (f + dt * apply_fitted_operator(coefficients, f, spacing)).astype(f.dtype)  # as rounded forward
        transposed, d_second = fitted_operator_vjp(coefficients, f1, p, spacing)
        p1 = 0.5 * p + 0.5 * dt * transposed
        transposed_1, d_first = fitted_operator_vjp(coefficients, f, p1, spacing)
        p_f = 0.5 * p + p1 + dt * transposed_1
        d_c = jax.tree.map(
            lambda a, b, c: (0.5 * dt * a + dt * b).astype(c.dtype), d_second, d_first, coefficients
        )
        return d_c, p_f.astype(f.dtype), (transposed, f1, transposed_1)

    def still(p):  # zeros of the adjoint's types (a float32 density with float64 coefficients mixes them)
        d_c, _, (transposed, _, transposed_1) = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(adjoint, p)
        )
        return d_c, p, (transposed, f, transposed_1)

    d_c, p_f, (transposed, f1, transposed_1) = batch_cond(dt != 0, adjoint, still, p)
    # ⟨p, L f₁⟩ = ⟨Lᵀ p, f₁⟩: read from memory (no stencil fused into the single-threaded reductions)
    d_dt = 0.5 * jnp.vdot(transposed, f1) + jnp.vdot(transposed_1, f)
    return d_c, p_f, d_dt.astype(dt.dtype)


_heun_step.defvjp(_heun_step_fwd, _heun_step_bwd)


def _block_system(coefficients, spacing) -> tuple[Array, Array, Array]:
    """L of a 2-D grid as columns x_i coupled to x_{i±1}: (lower (nx, ny), blocks (nx, ny, ny), upper)."""
    (ax, bx), (ay, by) = coefficients
    hx, hy = spacing
    lower, diag_x, upper = (band.T for band in tridiagonal_bands(ax.T, bx.T, hx))
    lower_y, diag_y, upper_y = tridiagonal_bands(ay, by, hy)
    ny = diag_y.shape[-1]
    j = np.arange(ny)
    blocks = jnp.zeros((*diag_y.shape, ny), diag_y.dtype)
    blocks = blocks.at[:, j, j].set(diag_x + diag_y)
    blocks = blocks.at[:, j[:-1], j[1:]].set(upper_y[:, :-1]).at[:, j[1:], j[:-1]].set(lower_y[:, 1:])
    return lower, blocks, upper


def _solve_2d(coefficients, spacing, rhs: Array, shift: float, scale: Array, pin=None) -> Array:
    """Solve A x = rhs, A = shift I − scale L on a 2-D grid; with ``pin`` = (i, j), the row (i, j) of A is
    replaced by A_pin,pin e_pin and the right-hand side by A_pin,pin e_pin, so that x_pin = 1 (``rhs`` only
    gives the shape). The block Thomas algorithm runs along the longer axis (dense blocks of the shorter
    side); derivatives follow the implicit function theorem (``lax.custom_linear_solve``: one transposed
    solve in reverse mode instead of differentiating the elimination)."""
    if pin is not None:
        pivot = shift + scale * outflow_rate(coefficients, spacing)[pin]
        rhs = jnp.zeros_like(rhs).at[pin].set(pivot)

    def matvec(x: Array) -> Array:
        y = shift * x - scale * apply_fitted_operator(coefficients, x, spacing)
        return y if pin is None else y.at[pin].set(pivot * x[pin])

    swap = rhs.shape[1] > rhs.shape[0]
    if swap:
        (ax, bx), (ay, by) = coefficients
        lower, blocks, upper = _block_system(((ay.T, by.T), (ax.T, bx.T)), spacing[::-1])
    else:
        lower, blocks, upper = _block_system(coefficients, spacing)
    eye = jnp.eye(blocks.shape[-1], dtype=blocks.dtype)
    lower, blocks, upper = -scale * lower, shift * eye[None] - scale * blocks, -scale * upper
    if pin is not None:
        i, j = pin[::-1] if swap else pin
        blocks = blocks.at[i, j, :].set(0.0).at[i, j, j].set(pivot)
        lower, upper = lower.at[i, j].set(0.0), upper.at[i, j].set(0.0)

    def oriented(solver):
        return lambda _, b: solver(b.T).T if swap else solver(b)

    def solve(b: Array) -> Array:
        return block_tridiagonal_solve(lower, blocks, upper, b)

    def transpose_solve(b: Array) -> Array:  # Aᵀ: transposed blocks, couplings to i ± 1 exchanged
        return block_tridiagonal_solve(
            jnp.roll(upper, 1, axis=0), jnp.swapaxes(blocks, -1, -2), jnp.roll(lower, -1, axis=0), b
        )

    return jax.lax.custom_linear_solve(matvec, rhs, oriented(solve), oriented(transpose_solve))


def _implicit_step(
    field: AbstractField, disc: _Discretisation, theta: Array, coefficients, f: Array, t: Array, dt: Array
) -> Array:
    """θ-scheme in increment form (I − θ Δt L) Δf = Δt L f; a feedback mean is that of the old density."""
    if field.feedback is not None:
        coefficients = _layer_coefficients(field, disc, field.layer_index(t + dt / 2), f)
    rhs = dt * apply_fitted_operator(coefficients, f, disc.spacing)
    if f.ndim == 1:
        lower, diagonal, upper = tridiagonal_bands(*coefficients[0], disc.spacing[0])
        s = theta * dt
        delta = jax.lax.linalg.tridiagonal_solve(-s * lower, 1 - s * diagonal, -s * upper, rhs[:, None])[:, 0]
    else:
        delta = _solve_2d(coefficients, disc.spacing, rhs, 1.0, theta * dt)
    return f + delta


@partial(jit_arrays, static_argnames=("save_at", "steps", "method", "adjoint", "t0", "pieces"))
def _solve(
    field: AbstractField,
    f0: Array,
    grid: Grid1D | Grid2D,
    diffusion: Diffusion,
    first_coefficients: Any,
    dt: Array,
    save_at: tuple[float, ...],
    steps: int,
    method: str,
    theta: Array | None,
    adjoint: str,
    t0: float,
    pieces: bool,
) -> KineticSolution:
    """The time loop; ``dt`` (the largest step) may be traced, ``steps`` is the scan length per interval;
    ``first_coefficients``: the face coefficients of a one-layer field without feedback under explicit
    steps (from :func:`_prepare`), or None; ``pieces``: run layer piece by layer piece
    (:func:`_runs_by_pieces`)."""
    disc, _ = _discretise(grid, diffusion)  # the check was made by _prepare
    save = np.asarray(save_at)
    dt = dt.astype(f0.dtype)
    if method == "explicit":
        advance = partial(_explicit_step, field, disc, adjoint)
    else:
        advance = partial(_implicit_step, field, disc, theta)

    # Without feedback the coefficients (an exp per face) change only between layers: they are computed per
    # layer, not at every step; with feedback each stage computes its own. In 1-D an explicit step is one
    # conservative update with Heun's four-point face fluxes, whose coefficients are prepared once per layer
    # (chang_cooper.heun_flux_coefficients); a shorter step (landing on a stop) scales their two parts (see
    # _heun_update_1d and, for the discrete adjoint, _heun_update_written). With one layer they are made
    # before the loop; with several, when the pieces are long enough (``pieces``), the loop runs layer piece
    # by layer piece (integrate's piece_constant), each piece making its layer's coefficients before its
    # steps: the six arrays in 1-D, (α, β) for the two stages in 2-D. Carrying the six arrays from step to
    # step instead (kinetic_common.layer_lookup) was measured slower than the two stages with (α, β) carried
    # (10 and 50 layers, 10⁴ cells: discrete 1.6-1.7x the time, calls interleaved); short 1-D pieces,
    # implicit and feedback solves keep that carried lookup.
    banded = _one_pass_1d(method, field, disc.grid) and (pieces or field.num_layers == 1)

    def per_layer(l: Array):
        if first_coefficients is not None:
            coefficients = first_coefficients
        elif banded:  # written out once: XLA would re-evaluate the exponentials in each of the six arrays
            coefficients = behind_conditional(lambda fl, d, k: _coefficients(fl, k, None, d), field, disc, l)
        else:
            coefficients = _coefficients(field, l, None, disc)
        if not banded:
            return coefficients
        ((alpha, beta),) = coefficients
        update = heun_flux_coefficients(alpha, beta, disc.spacing[0], dt)
        # (α, β) for the tangent, the whole step's stencil for the value
        return update if adjoint == "discrete" else (coefficients, update, heun_whole_step_stencil(update))

    def banded_step(coefficients, f: Array, dt_k: Array, full: Array) -> Array:
        """Called for every step, also past the end (dt_k = 0): the skip is inside (see _heun_update_1d)."""
        if adjoint == "discrete":
            return _heun_update_written(coefficients, f, dt_k / dt, full)
        update_1d = _heun_update_1d_forward if adjoint == "forward" else _heun_update_1d
        return update_1d(*coefficients, f, dt_k, dt_k / dt, full, disc.spacing)

    first = field.layer_index(jnp.asarray(t0))
    if pieces:
        state0, saved, piece_constant = f0, lambda f: f, lambda t: per_layer(field.layer_index(t))

        if banded:  # integrate passes `full` to self-masking steps only

            def step(f, t, dt_k, full, coefficients):
                return banded_step(coefficients, f, dt_k, full).astype(f.dtype)

        else:

            def step(f, t, dt_k, coefficients):
                return advance(coefficients, f, t, dt_k).astype(f.dtype)

    else:
        if field.feedback is None:
            carry0, layer_at = layer_lookup(per_layer, field.num_layers, first)
        else:
            carry0, layer_at = (), lambda carry, l: (None, carry)
        state0, saved, piece_constant = (f0, carry0), lambda state: state[0], None  # the carry is not saved

        def step(state, t: Array, dt_k: Array, full: Array | None = None):
            f, carry = state
            coefficients, carry = layer_at(carry, field.layer_index(t + dt_k / 2))
            f_new = banded_step(coefficients, f, dt_k, full) if banded else advance(coefficients, f, t, dt_k)
            return f_new.astype(f.dtype), carry  # the density keeps its dtype (f0 may be float32)

    f, info = integrate(
        step, state0, save, dt, layer_stops(field), t0=t0, max_steps=steps, adjoint=loop_adjoint(adjoint),
        saved=saved, self_masking=banded, copy_states=banded, piece_constant=piece_constant,
    )
    return KineticSolution(  # built here, so that its arrays cost no extra dispatches
        ts=jnp.asarray(save, f0.dtype),
        f=f,
        grid=disc.grid,
        outflow=jnp.zeros((save.shape[0], 2 * disc.grid.d), f0.dtype),
        num_steps=info["num_steps"],
    )


# The fewest steps per layer piece with which the loop runs by pieces, by grid dimension; shorter pieces
# run as one loop over the steps with the coefficients carried. 1-D (where pieces also switch the step
# from two stages to the one-pass update), measured on 10⁴ cells: 25 layers of 16 steps each, the pieces'
# gradients take 0.66x (discrete) and 0.83x (checkpointed) the carried loop's time, 10 layers of 200
# steps 0.46x and 0.61x, but 50 layers of 5 steps 1.2x and 1.1x; their forward pass costs 1.35x, 1.04x
# and 1.4x (each piece computes its six arrays; calls interleaved). 2-D (the same two stages either way),
# measured: 128² with 10 layers of 21 steps, discrete 0.69x, checkpointed 0.81x; 256² with 10 of 33,
# 0.57x and 0.49x; 64² with 50 of 3, 0.78x and 0.84x; the forward pass 0.91-1.23x (1.23x and 1.05x
# in two runs of 64², 20 layers of 6 steps).
PIECE_MIN_STEPS = {1: 16, 2: 1}


def _explicit_layerwise(method: str, field: AbstractField) -> bool:
    """Explicit steps of a field without feedback, whose coefficients change only between layers."""
    return method == "explicit" and field.feedback is None


def _one_pass_1d(method: str, field: AbstractField, grid: Grid1D | Grid2D) -> bool:
    """Whether an explicit step can be the one-pass 1-D update with a layer's Heun coefficients: 1-D
    steps of :func:`_explicit_layerwise`."""
    return _explicit_layerwise(method, field) and grid.d == 1


def _runs_by_pieces(
    method: str, field: AbstractField, grid: Grid1D | Grid2D, save: np.ndarray, t0: float, steps: int
) -> bool:
    """Whether the loop runs layer piece by layer piece: :func:`_explicit_layerwise` steps of a field of
    several layers, whose pieces have :data:`PIECE_MIN_STEPS` steps each (at ``steps`` per interval)."""
    if not _explicit_layerwise(method, field) or field.num_layers == 1:
        return False
    return steps_per_piece(piece_table(save, layer_stops(field), t0), steps) >= PIECE_MIN_STEPS[grid.d]


# ---- validation --------------------------------------------------------------------------------------------
def _check_number(name: str, value: Any, lo: float, hi: float, lo_open: bool, allowed: str) -> float:
    x = number(value, name)
    if not (math.isfinite(x) and (x > lo if lo_open else x >= lo) and x <= hi):
        raise ValueError(f"{name} must lie in {allowed}, got {name}={value!r}")
    return x


def _check_field_and_grid(field: Any, grid: Any) -> None:
    """A field of the grid's dimension that only moves the data (no remapping between layers)."""
    validate_field_and_grid(field, grid)
    if maps_between_layers(field):
        raise TypeError(
            f"field of type {type(field).__name__} maps the data between layers (enter_layer); the "
            "Fokker–Planck solver needs a field that only moves the data (a NeuralField)"
        )


def _step_now(
    field: AbstractField, grid: Grid1D | Grid2D, diffusion: Any, method: str, cfl: float, span: float
) -> float | None:
    """The CFL step evaluated now, for counting the steps when the solve is staged (an outer jax.jit closing
    over a concrete field and K); None if it still depends on traced values (a K closing over a tracer)."""
    with jax.ensure_compile_time_eval():
        diffusion = _checked_diffusion(diffusion, strict=False)
        return concrete_scalar(_prepare(grid, diffusion, field, method, cfl, span)[1])


# ---- public API --------------------------------------------------------------------------------------------
def solve_fokker_planck(
    field: AbstractField,
    f0: ArrayLike,
    grid: Grid1D | Grid2D,
    diffusion: Diffusion,
    t_final: float | None = None,
    save_at: ArrayLike | None = None,
    scheme: str = "chang_cooper",
    method: str = "explicit",
    theta: float = 1.0,
    cfl: float = 0.5,
    dt: float | None = None,
    boundary: str = "zero_flux",
    max_steps: int | None = None,
    adjoint: str = "checkpointed",
    t0: float = 0.0,
) -> KineticSolution:
    """Solve ∂_t f + ∇·(σ(W(t)x + b(t)) f) = Δ(K f) with zero-flux walls (see the module docstring).

    Args:
        field: the velocity field (a :class:`NeuralField`, possibly with a feedback bias).
        f0: initial cell averages, shape ``grid.shape``, finite and non-negative.
        grid: a :class:`Grid1D` or :class:`Grid2D` with ``grid.d == field.d``.
        diffusion: K ≥ 0, a number, a 0-d array, or a callable K(x) (1-D, x an array of points) /
            K(X, Y) (2-D) returning one value per point, e.g. an ``eqx.Module`` with parameters.
        t_final: final time (default ``field.T``); ignored when ``save_at`` is given.
        save_at: increasing times >= 0 at which to return f (default [0, t_final]).
        scheme: ``"chang_cooper"`` or ``"scharfetter_gummel"``: two names of one exponentially fitted flux.
        method: ``"explicit"`` (SSP-RK2) or ``"implicit"`` (θ-scheme with direct solves).
        theta: implicit weight in [1/2, 1]: 1 backward Euler (positive for every Δt), 1/2 Crank–Nicolson.
        cfl: in (0, 1]; the explicit step is cfl times the positivity limit, the default implicit step cfl
            times the advective limit.
        dt: a fixed step for ``method="implicit"`` (then no bound on the steps is needed under ``jax.grad``).
        boundary: ``"zero_flux"``.
        max_steps: bound on the steps between two save times; required when the step depends on traced
            values (under ``jax.grad``/``jax.jit`` w.r.t. the field or K) and not fixed by ``dt``.
        adjoint: ``"checkpointed"``, ``"direct"``, ``"discrete"`` or ``"forward"`` (the last two reverse
            mode only), as in :func:`~meanfield_jax.solve_vlasov` (see :mod:`meanfield_jax.timestepping`);
            ``"forward"`` carries the tangents of the field's and of a traced K's parameters.
        t0: the time of f0 (default 0); the layers keep their absolute times (see
            :mod:`meanfield_jax.streaming`).

    Returns:
        A :class:`KineticSolution` (``outflow`` is zero: the walls carry no flux).

    Many fields at once: ``jax.vmap`` over them works, each field with its own CFL step; the loop's
    conditionals (:func:`~meanfield_jax.conditional.batch_cond`) run a branch only when some field takes
    it. A vmap of a gradient through a field of several layers whose pieces take the carried loop (fewer
    than :data:`PIECE_MIN_STEPS` steps each in 1-D; implicit steps, feedback) recomputes the layer's
    coefficients at every step; ``jax.lax.map`` avoids that (docs/scaling.md).
    """
    _check_field_and_grid(field, grid)
    check_choice("scheme", scheme, SCHEMES)
    check_choice("method", method, METHODS)
    check_choice("boundary", boundary, BOUNDARIES)
    check_choice("adjoint", adjoint, KINETIC_ADJOINTS)
    cfl = _check_number("cfl", cfl, 0.0, 1.0, True, "(0, 1]")
    theta = _check_number("theta", theta, 0.5, 1.0, False, "[0.5, 1] (1 backward Euler, 0.5 Crank–Nicolson)")
    if dt is not None:
        if method == "explicit":
            raise ValueError(f"dt={dt!r} is the fixed step of method='implicit'; explicit steps follow cfl")
        dt = _check_number("dt", dt, 0.0, math.inf, True, "(0, inf)")
    check_max_steps(max_steps)
    save = resolve_save_times(t_final, save_at, field.T, t0)
    t0 = float(t0)
    f0 = validate_density(f0, grid)
    if dt is None and max_steps is None and is_traced((field, diffusion)):
        raise ValueError(
            "the time step depends on traced values (jax.grad / jax.jit w.r.t. the field or the diffusion), "
            "so the number of steps cannot be computed: pass max_steps= (a bound on the steps between two "
            "save times), or a fixed dt= with method='implicit'"
        )
    given_diffusion = diffusion
    diffusion = _checked_diffusion(diffusion, strict=False)
    span = float(save[-1] - t0)
    check, step, first = _prepare(grid, diffusion, field, method, cfl if dt is None else None, span)
    f0 = _guard(f0, check, strict=False)
    if dt is None:  # the step follows the field (and K): traced under jax.grad, so gradients see it
        count_with = concrete_scalar(step)
        if count_with is None and not is_traced((field, given_diffusion)):
            count_with = _step_now(field, grid, given_diffusion, method, cfl, span)
        steps = scan_length(save, layer_stops(field), count_with, max_steps, t0)
    else:
        step, steps = jnp.asarray(dt), scan_length(save, layer_stops(field), dt, max_steps, t0)
    save_times = tuple(save.tolist())
    theta = jnp.asarray(theta) if method == "implicit" else None  # explicit steps have no θ
    pieces = _runs_by_pieces(method, field, grid, save, t0, steps)
    if adjoint == "forward":  # the step and the coefficients are formed again inside, with their tangents

        def run(params: tuple[AbstractField, Diffusion], f: Array, mode: str = adjoint) -> KineticSolution:
            fld, k = params[0], _checked_diffusion(params[1], strict=False)
            _, step_k, first_k = _prepare(grid, k, fld, method, cfl if dt is None else None, span)
            step_k = step_k if dt is None else step
            return _solve(
                fld, f, grid, k, first_k, step_k, save_times, steps, method, theta, mode, t0, pieces
            )

        # f0's cotangent, when asked for, by the default adjoint (the forward tangents are not transposable)
        return forward_sensitivities(run, (field, given_diffusion), f0, partial(run, mode="checkpointed"))
    return _solve(
        field, f0, grid, diffusion, first, step, save_times, steps, method, theta, adjoint, t0, pieces
    )


@partial(jit_arrays, static_argnames=())
def _steady_state(
    field: AbstractField, grid: Grid1D | Grid2D, diffusion: Diffusion, layer: Array
) -> tuple[Array, tuple[Array, ...]]:
    """The normalised null vector of L, and the check of K (one compilation)."""
    disc, check = _discretise(grid, diffusion)
    spacing = disc.spacing
    if disc.grid.d == 1:
        # J_{i+1/2} = 0  <=>  f_{i+1} = f_i exp(a h / K): a cumulative sum in log space
        (a,) = _drift(field, layer, None, disc)
        log_f = jnp.concatenate([jnp.zeros(1, a.dtype), jnp.cumsum(a * spacing[0] / disc.face_diffusion[0])])
        f = jnp.exp(log_f - jnp.max(log_f))
    else:
        # L f = 0 with one equation replaced by f_c = 1, solved twice: c is first the centre cell, then the
        # largest value of that solution, so that the pinned value is of the order of the largest one (the
        # normalised result does not depend on c; two passes of one scan compile the solver once)
        coefficients = _coefficients(field, layer, None, disc)
        zeros = jnp.zeros(disc.grid.shape, disc.centres.dtype)

        def pinned(pin, _):
            f = _solve_2d(coefficients, spacing, zeros, 0.0, 1.0, pin=pin)
            largest = jnp.argmax(jax.lax.stop_gradient(jnp.where(jnp.isfinite(f), f, -jnp.inf)))
            return jnp.unravel_index(largest, disc.grid.shape), f

        centre = tuple(jnp.asarray(n // 2) for n in disc.grid.shape)
        _, solutions = jax.lax.scan(pinned, centre, None, length=2)
        f = solutions[-1]
    return f / disc.grid.integrate(f), check


def fokker_planck_steady_state(
    field: AbstractField,
    grid: Grid1D | Grid2D,
    diffusion: Diffusion,
    layer: int = -1,
    scheme: str = "chang_cooper",
) -> Array:
    """The zero-flux steady state of the discrete Fokker–Planck operator of one layer, with mass 1.

    It is the null vector of L (the fixed point of both time steppers), computed directly, so it is
    differentiable w.r.t. the field and K without iterating: in 1-D the product f_{i+1} = f_i e^{a h/K}
    (a cumulative sum of logarithms, normalised); in 2-D a block-tridiagonal solve of L f = 0 with one
    equation replaced by f_c = 1, then normalised. For F = w x + b (W x + b with diagonal W in 2-D) and a
    constant K it equals the Gaussian at the cell centres up to round-off.

    Args:
        field: a :class:`NeuralField` without feedback bias.
        grid: a :class:`Grid1D` or :class:`Grid2D` with ``grid.d == field.d``.
        diffusion: K, as in :func:`solve_fokker_planck`, but > 0 on the interior faces.
        layer: the layer whose field is used (default −1, the last: the time stepper keeps the last layer's
            field after t = T, so this is the limit of its solution as t → ∞).
        scheme: as in :func:`solve_fokker_planck`.

    Returns:
        f∞ of shape ``grid.shape`` with ``grid.integrate(f∞) == 1``.
    """
    _check_field_and_grid(field, grid)
    check_choice("scheme", scheme, SCHEMES)
    if field.feedback is not None:
        raise ValueError(
            f"field has a feedback bias (feedback={field.feedback}): its steady state solves a nonlinear "
            "problem; pass a field without feedback (feedback=None)"
        )
    L = field.num_layers
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer) or not -L <= layer < L:
        raise ValueError(f"layer must be an integer in [{-L}, {L}) (the field has {L} layers), got {layer!r}")
    diffusion = _checked_diffusion(diffusion, strict=True)
    f, check = _steady_state(field, grid, diffusion, jnp.asarray(int(layer) % L))
    return _guard(f, check, strict=True)
