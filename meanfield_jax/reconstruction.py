"""Reconstruction of face values from cell averages: piecewise constant, MUSCL with slope limiters, CWENO3.

Every reconstruction reads cell averages f̄ along one axis (the last by default), padded with one extra
cell on each side beyond those whose edges are wanted, and returns the values at the lower and upper edge
of each inner cell, (f_{i−1/2}^+, f_{i+1/2}^−), with a local coordinate ξ = (x − x_i)/Δx ∈ [−1/2, 1/2]:

* piecewise constant (first-order upwind): f^± = f̄_i.
* MUSCL (van Leer): P_i(ξ) = f̄_i + s_i ξ with a limited slope s_i = φ(Δ⁻, Δ⁺) of the one-sided
  differences Δ⁻ = f̄_i − f̄_{i−1}, Δ⁺ = f̄_{i+1} − f̄_i (limiters below). Second order away from extrema.
* CWENO3 (Levy, Puppo & Russo 1999; Cravero & Semplice 2016): a convex combination of the two linear
  polynomials P_L = f̄_i + Δ⁻ ξ, P_R = f̄_i + Δ⁺ ξ and the central one P_C = (P_opt − C_L P_L − C_R P_R)/C_C,
  where P_opt is the parabola with the three cell averages and (C_L, C_R, C_C) = (1/4, 1/4, 1/2). The weights
  ω_k ∝ C_k / (ε + IS_k)² use the Jiang–Shu indicators IS_L = (Δ⁻)², IS_R = (Δ⁺)²,
  IS_C = (13/3)(Δ⁺ − Δ⁻)² + (Δ⁺ + Δ⁻)²/4; on smooth data ω_k → C_k and P → P_opt (third order), across a
  jump the smooth one-sided polynomial wins. ε = ε₀ Δx² makes the order hold at smooth extrema too.

All limited slopes satisfy |s_i| ≤ 2 min(|Δ⁻|, |Δ⁺|) and vanish at extrema, so for f̄ ≥ 0 the MUSCL edge
values lie in [0, 2 f̄_i]. The CWENO3 polynomial has no such bound, so its edge values are scaled towards
the mean, f^± ← f̄_i + θ (f^± − f̄_i) with the largest θ ∈ [0, 1] that puts them in [0, 2 f̄_i] (a scaling
limiter in the manner of Zhang and Shu 2010, inactive on smooth data away from zeros of f). This bound is
what makes the finite-volume update positive under the Courant condition of :mod:`meanfield_jax.transport`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

from .conditional import behind_conditional

__all__ = [
    "LIMITERS",
    "cweno3",
    "half_slopes_with_partials",
    "minmod",
    "monotonized_central",
    "muscl",
    "pack_half_partials",
    "packs_partials",
    "piecewise_constant",
    "scale_towards_mean",
    "unpack_half_partials",
    "van_leer",
]

Limiter = Callable[[Array, Array], Array]
Edges = tuple[Array, Array]


# ---- slope limiters φ(Δ⁻, Δ⁺) ---------------------------------------------------------------------------
# From this many values the limiters' min and max take their derivative written with selects (below).
SELECT_DERIVATIVE_FROM = 4096


def _select_derivative(op: Limiter, picks: Callable[[Array, Array], Array]) -> Limiter:
    """``op`` (``jnp.minimum`` or ``jnp.maximum``; ``picks``: the strict comparison under which it takes its
    first argument) with JAX's derivative: the tangent of the argument taken, the mean of both at a tie. From
    ``SELECT_DERIVATIVE_FROM`` values it is written with selects alone. JAX's own rule divides by the number
    of tied arguments, and XLA's CPU backend writes that division, which both partial derivatives of a
    limiter share, to memory in kernels of its own: four more passes over the cells wherever the partials
    are formed. Without them the partials of MC at 10⁴ / 10⁵ cells took 27 / 177 µs against 52 / 206 µs;
    below ~4 000 values, where the kernels run on one thread, each partial re-evaluating the whole limiter
    was slower (10³: 7.5 against 4.2 µs), so smaller arrays keep JAX's rule (measured in loops of 200)."""

    @jax.custom_jvp
    def fn(x: Array, y: Array) -> Array:
        return op(x, y)

    @fn.defjvp
    def fn_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        if x.size < SELECT_DERIVATIVE_FROM:
            return jax.jvp(op, primals, tangents)
        return op(x, y), jnp.where(picks(x, y), tx, jnp.where(picks(y, x), ty, 0.5 * (tx + ty)))

    return fn


_minimum = _select_derivative(jnp.minimum, jnp.less)
_maximum = _select_derivative(jnp.maximum, jnp.greater)


def _signed_where_signs_agree(a: Array, b: Array, magnitude: Array) -> Array:
    """sign(a) · magnitude where a and b are both > 0 or both < 0, else 0.

    Comparisons only: cheaper in XLA's stencil loops than ½(sign a + sign b) (measured ~20 % of a MUSCL
    step), and exact where the product a·b would underflow.
    """
    return jnp.where((a > 0) & (b > 0), magnitude, jnp.where((a < 0) & (b < 0), -magnitude, 0.0))


def minmod(a: Array, b: Array) -> Array:
    """minmod(a, b) = sign · min(|a|, |b|) when a, b agree in sign, else 0 (the most diffusive TVD slope)."""
    return _signed_where_signs_agree(a, b, _minimum(jnp.abs(a), jnp.abs(b)))


def van_leer(a: Array, b: Array) -> Array:
    """Harmonic mean 2ab/(a + b) when a, b agree in sign, else 0 (smooth in the ratio r = b/a).

    Written as 2 min(|a|, |b|) · max(|a|, |b|)/(|a| + |b|), whose last factor rounds to at most 1, so that
    |φ| ≤ 2 min(|a|, |b|) holds in floating point too (the edge values then stay non-negative exactly).
    """
    lo, hi = _minimum(jnp.abs(a), jnp.abs(b)), _maximum(jnp.abs(a), jnp.abs(b))
    total = lo + hi
    ratio = hi / jnp.where(total > 0, total, 1.0)
    return _signed_where_signs_agree(a, b, 2.0 * lo * ratio)


def monotonized_central(a: Array, b: Array) -> Array:
    """MC limiter minmod(2a, 2b, (a + b)/2): the central slope unless a neighbour bounds it."""
    magnitude = _minimum(2.0 * _minimum(jnp.abs(a), jnp.abs(b)), 0.5 * jnp.abs(a + b))
    return _signed_where_signs_agree(a, b, magnitude)


LIMITERS: dict[str, Limiter] = {"minmod": minmod, "vanleer": van_leer, "mc": monotonized_central}


# ---- reconstructions ------------------------------------------------------------------------------------
def _stencil(f: Array, axis: int) -> tuple[Array, Array, Array]:
    """(f̄_{i−1}, f̄_i, f̄_{i+1}) for the inner cells along ``axis`` (slices in place, no transposes)."""
    n = f.shape[axis]
    return tuple(jax.lax.slice_in_dim(f, k, n - 2 + k, axis=axis) for k in range(3))


def piecewise_constant(f: Array, axis: int = -1) -> Edges:
    """Edge values f̄_i, f̄_i of the inner cells (first-order upwind)."""
    inner = _stencil(f, axis)[1]
    return inner, inner


def muscl(f: Array, limiter: Limiter, axis: int = -1, written_slopes: bool = True) -> Edges:
    """Edge values f̄_i ∓ s_i/2 with the limited slope s_i = limiter(f̄_i − f̄_{i−1}, f̄_{i+1} − f̄_i).

    With ``written_slopes`` the slopes are written to memory before the edge values are formed
    (:func:`_materialised`): every cell has two edges, each read by a face flux, and XLA would otherwise
    evaluate the limiter once per read (measured: a MUSCL step 1.4–1.5x faster on 10³–10⁵ cells and on
    256², bitwise the same values). Without, XLA fuses them into their readers, which pays on large 2-D
    grids (:data:`meanfield_jax.transport.LARGE_2D_GRID_BYTES`). Their derivative is
    :func:`_limited_half_slopes`'s.
    """
    half_slope = _limited_half_slopes(limiter, axis, written_slopes, f)
    centre = _stencil(f, axis)[1]
    return centre - half_slope, centre + half_slope


def _differences(f: Array, axis: int) -> tuple[Array, Array]:
    """(Δ⁻, Δ⁺) = (f̄_i − f̄_{i−1}, f̄_{i+1} − f̄_i) for the inner cells along ``axis``."""
    left, centre, right = _stencil(f, axis)
    return centre - left, right - centre


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _limited_half_slopes(limiter: Limiter, axis: int, written: bool, f: Array) -> Array:
    """s_i/2 = φ(Δ⁻, Δ⁺)/2, materialised (:func:`_materialised`) if ``written``."""

    def half_slopes(f: Array) -> Array:
        return 0.5 * limiter(*_differences(f, axis))

    return _materialised(half_slopes, f) if written else half_slopes(f)


@_limited_half_slopes.defjvp
def _limited_half_slopes_jvp(limiter: Limiter, axis: int, written: bool, primals, tangents):
    """δ(s/2) = ½ (∂_a φ δΔ⁻ + ∂_b φ δΔ⁺), the derivative JAX gives (its JVP of φ is linear in the tangents).

    In 1-D the partial derivatives ∂_a φ, ∂_b φ are formed with the slopes, behind the conditional of
    :func:`_materialised`, and the tangent is two products: reverse mode then transposes a linear stencil
    instead of the limiter's chain of selects (measured: the gradient through a MUSCL solve 12–20 % faster at
    10³–10⁵ cells, with either adjoint). In 2-D that was slower (the VJP of a step 12–27 % at 256²–512²), so
    there, and for slopes not ``written``, JAX's JVP of φ is fused by XLA as it stands.
    """
    (f,), (df,) = primals, tangents
    if f.ndim != 1 or not written:
        return jax.jvp(lambda f: 0.5 * limiter(*_differences(f, axis)), (f,), (df,))
    with_partials = functools.partial(half_slopes_with_partials, limiter, axis)
    half_slope, c_minus, c_plus = behind_conditional(with_partials, f)
    da, db = _differences(df, axis)
    return half_slope, c_minus * da + c_plus * db


def half_slopes_with_partials(limiter: Limiter, axis: int, f: Array) -> tuple[Array, Array, Array]:
    """(s/2, ½ ∂φ/∂Δ⁻, ½ ∂φ/∂Δ⁺) for the inner cells along ``axis``: the half slopes of :func:`muscl` and
    their partial derivatives w.r.t. the one-sided differences (JAX's, at kinks included)."""
    a, b = _differences(f, axis)
    phi, d_a, d_b = limiter_partials(limiter, a, b)
    return 0.5 * phi, 0.5 * d_a, 0.5 * d_b


def limiter_partials(limiter: Limiter, a: Array, b: Array) -> tuple[Array, Array, Array]:
    """(φ, ∂φ/∂a, ∂φ/∂b) at (a, b): the derivative JAX forms of φ, kinks included (the mean of both sides
    at a tie of min or max, zero where the signs of a and b disagree or one is zero). minmod and MC are
    piecewise linear, and their partials are written in closed form: comparisons that select constants,
    bitwise those of JAX's JVP, in one cheap pass (the JVP re-evaluates φ's chain of selects for each)."""
    if limiter not in _CLOSED_FORM_PARTIALS:
        one, zero = jnp.ones_like(a), jnp.zeros_like(a)
        phi, d_a = jax.jvp(limiter, (a, b), (one, zero))
        return phi, d_a, jax.jvp(limiter, (a, b), (zero, one))[1]
    agree = ((a > 0) & (b > 0)) | ((a < 0) & (b < 0))
    d_a, d_b = _CLOSED_FORM_PARTIALS[limiter](a, b)
    return limiter(a, b), jnp.where(agree, d_a, 0.0), jnp.where(agree, d_b, 0.0)


def _first_weight(x: Array, y: Array) -> Array:
    """The weight JAX's derivative of min(x, y) gives x: 1 if x < y, 0 if y < x, ½ at a tie."""
    return jnp.where(x < y, 1.0, jnp.where(y < x, 0.0, 0.5))


def _minmod_partials(a: Array, b: Array) -> tuple[Array, Array]:
    """∂/∂a, ∂/∂b of min(|a|, |b|) · sign where a and b agree in sign: the smaller one's is 1."""
    w = _first_weight(jnp.abs(a), jnp.abs(b))
    return w, 1.0 - w


def _mc_partials(a: Array, b: Array) -> tuple[Array, Array]:
    """∂/∂a, ∂/∂b of min(2 min(|a|, |b|), |a + b|/2) · sign where a and b agree in sign: (2, 0) or (0, 2)
    where a one-sided slope bounds it, (½, ½) where the central slope is taken."""
    smaller = _first_weight(jnp.abs(a), jnp.abs(b))
    one_sided = _first_weight(2.0 * jnp.minimum(jnp.abs(a), jnp.abs(b)), 0.5 * jnp.abs(a + b))
    central = 0.5 * (1.0 - one_sided)
    return 2.0 * one_sided * smaller + central, 2.0 * one_sided * (1.0 - smaller) + central


_CLOSED_FORM_PARTIALS = {minmod: _minmod_partials, monotonized_central: _mc_partials}


def packs_partials(limiter: Limiter) -> bool:
    """Whether ½ ∂φ/∂Δ⁻ and ½ ∂φ/∂Δ⁺ of ``limiter`` are multiples of 1/8 in [0, 1] (minmod: 0, ¼, ½; MC:
    0, ⅛, …, ⅝, 1, ties included), so that :func:`pack_half_partials` holds both exactly in one number."""
    return limiter in _CLOSED_FORM_PARTIALS


def pack_half_partials(d_minus: Array, d_plus: Array) -> Array:
    """One array for (½ ∂φ/∂Δ⁻, ½ ∂φ/∂Δ⁺) of a limiter that :func:`packs_partials`: the integer
    A + 16 B with A = 8 · ½ ∂φ/∂Δ⁻ and B = 8 · ½ ∂φ/∂Δ⁺ in 0 … 8, exact in float16 and wider formats."""
    return 8.0 * d_minus + 128.0 * d_plus


def unpack_half_partials(code: Array) -> tuple[Array, Array]:
    """The inverse of :func:`pack_half_partials` (exact): B = ⌊code / 16⌋, A = code − 16 B."""
    high = jnp.floor(code / 16.0)
    return (code - 16.0 * high) / 8.0, high / 8.0


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _materialised(fn: Callable[..., Any], x: Array, *rest: Array) -> Any:
    """fn(x, *rest), computed by a kernel of its own and written to memory before anything reads it.

    XLA fuses elementwise work into each consumer and re-evaluates it there, and it does not fuse across a
    conditional; so fn runs in both branches of a ``lax.cond`` whose predicate holds at run time but is
    not a constant XLA could fold (x_m == x_m at the middle entry: false only for NaN, and both branches
    are the same). It is a :func:`~meanfield_jax.conditional.batch_cond`, so it stays a conditional under
    ``jax.vmap``. ``fn`` must not close over traced values: pass them in ``rest``.

    Derivatives are fn's own. In 1-D its JVP runs behind the same conditional (measured faster there: the
    MUSCL gradient at 10⁵ cells 474 → 411 ms, CWENO3 2.2x); in 2-D it is left to XLA's fusion, which was
    faster for the gradient (at 512² the conditional made it 1.4x slower).
    """
    return behind_conditional(fn, x, *rest)


@_materialised.defjvp
def _materialised_jvp(fn, primals, tangents):
    def jvp(*primals_and_tangents):
        half = len(primals_and_tangents) // 2
        return jax.jvp(fn, primals_and_tangents[:half], primals_and_tangents[half:])

    if primals[0].ndim == 1:  # tangents pass through: reverse mode transposes lax.cond, not batch_cond
        return behind_conditional(jvp, *primals, *tangents, cond=jax.lax.cond)
    return jvp(*primals, *tangents)


def scale_towards_mean(mean: Array, lower: Array, upper: Array) -> Edges:
    """Edge values pulled towards the cell mean, by the largest θ ∈ [0, 1] with both in [0, 2 · mean]."""
    deviation = jnp.maximum(jnp.abs(lower - mean), jnp.abs(upper - mean))
    theta = jnp.where(deviation > mean, mean / jnp.where(deviation > mean, deviation, 1.0), 1.0)
    theta = jnp.clip(theta, 0.0, 1.0)
    return mean + theta * (lower - mean), mean + theta * (upper - mean)


def cweno3(f: Array, eps: Array | float, axis: int = -1) -> Edges:
    """Positivity-limited CWENO3 edge values (see the module docstring) with the weights' ε = ``eps``.

    ε should scale like (Δx · typical f)²; the weights are evaluated as C_k / (1 + IS_k/ε)², which equals
    ε² C_k / (ε + IS_k)² and cannot overflow. With ε = 0 (data identically zero) the linear weights are used.
    The edge values are written to memory before the face fluxes read them (:func:`_materialised`).
    """
    return _materialised(lambda f, eps: _cweno3_edges(f, eps, axis), f, jnp.asarray(eps))


def _cweno3_edges(f: Array, eps: Array | float, axis: int) -> Edges:
    left, centre, right = _stencil(f, axis)
    d_minus, d_plus = centre - left, right - centre
    d2 = d_plus - d_minus  # f̄_{i+1} − 2 f̄_i + f̄_{i−1}
    central = 0.5 * (d_plus + d_minus)
    indicators = (d_minus**2, d_plus**2, (13.0 / 3.0) * d2**2 + central**2)
    eps = jnp.asarray(eps)
    inv_eps = jnp.where(eps > 0, 1.0 / jnp.where(eps > 0, eps, 1.0), 0.0)
    alphas = [c / (1.0 + inv_eps * s) ** 2 for c, s in zip((0.25, 0.25, 0.5), indicators)]
    total = alphas[0] + alphas[1] + alphas[2]
    w_left, w_right, w_central = (a / total for a in alphas)
    # P(ξ) = Σ ω_k P_k(ξ) with P_C(ξ) = (f̄ − d2/12) + central ξ + d2 ξ²: P(±1/2) = f̄ ± s/2 + ω_C d2/6
    slope = w_left * d_minus + w_right * d_plus + w_central * central
    curvature = w_central * d2 / 6.0
    return scale_towards_mean(centre, centre - 0.5 * slope + curvature, centre + 0.5 * slope + curvature)
