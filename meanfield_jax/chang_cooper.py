"""The exponentially fitted (Scharfetter–Gummel / Chang–Cooper) drift–diffusion operator with zero-flux walls.

The Fokker–Planck equation ∂_t f + ∇·(F f) = Δ(K f) is written in flux form ∂_t f + ∇·J = 0 with

    J = a f − K ∇f,   a = F − ∇K        (so that −J = ∇·(K ∇f + f ∇K) − F f = Δ(K f) − F f).

Along each axis the flux through the face x_{i+1/2} between cells i and i + 1 (spacing h) is the exact flux
of the two-point problem with a and K frozen on the face (Scharfetter–Gummel exponential fitting):

    J_{i+1/2} = (K/h) [B(−P) f_i − B(P) f_{i+1}] = α f_i − β f_{i+1},   P = a h / K,   B(z) = z / (e^z − 1).

Chang and Cooper write the same flux as J = a [δ f_i + (1 − δ) f_{i+1}] − K (f_{i+1} − f_i)/h with the
weight δ = 1/(1 − e^{−P}) − 1/P; the two forms agree identically, so both names denote this operator.
Properties, all exact in the discrete setting:

* α, β ≥ 0 and α − β = a: a constant density carries the flux a f, and the scheme is consistent;
* K = 0 gives α = max(a, 0), β = max(−a, 0), the upwind flux; a = 0 the central flux K (f_i − f_{i+1})/h;
* J_{i+1/2} = 0 exactly when f_{i+1} / f_i = α/β = e^{P}: the zero-flux steady state is the product
  f_{i+1} = f_i e^{a h / K}. For F = w x + b and constant K the exact steady state has ln f quadratic, and
  a h / K is the midpoint rule for ∫_{x_i}^{x_{i+1}} a/K dx, which is exact for linear a/K — so the discrete
  steady state equals the Gaussian at the nodes;
* the semi-discrete operator (L f)_i = −Σ_axes (J_{i+1/2} − J_{i−1/2}) / h has non-negative off-diagonal
  entries and zero column sums (walls carry no flux): it conserves mass and generates a positive semigroup.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .dispatch import jit, odd_count_on_cpu
from .kinetic_common import pad_axis

__all__ = [
    "apply_fitted_operator",
    "bernoulli",
    "fitted_flux_coefficients",
    "fitted_operator_vjp",
    "flux_update",
    "heun_flux_coefficients",
    "heun_update",
    "heun_update_flux",
    "heun_update_s_vjp",
    "heun_update_vjp",
    "heun_whole_step",
    "heun_whole_step_flux",
    "heun_whole_step_stencil",
    "inner_flux",
    "outflow_rate",
    "pad_cells",
    "tridiagonal_bands",
]

# Below this many cells the face flux of a one-pass Heun step also holds the right wall's zero flux
# (:func:`inner_flux`), so that :func:`flux_update` pads one shifted copy of it instead of two. Explicit
# Fokker–Planck solves of 200 steps, float64, both versions compiled in one process (the package's XLA
# options), calls interleaved, bitwise the same densities: 10³ / 4·10³ / 8·10³ / 10⁴ / 1.6·10⁴ cells
# 0.86 / 0.86 / 0.92 / 0.84–1.09 / 0.92x the time; from 2·10⁴ cells slower (2·10⁴ 1.68x, 3·10⁴ 1.14x).
# Gradients by forward sensitivities at 10³ / 4·10³ / 10⁴ cells 0.91 / 0.94 / 0.85–0.90x, bitwise the
# same; the discrete and checkpointed adjoints, whose differentiated steps do not reach flux_update,
# compile to the same program as before (HLO compared at 10³ cells).
WALL_FLUX_BELOW = 2**14

# Below this |P| the Taylor series of B is used; its first omitted term, P⁶/30240, is below 1e-16 there.
_SERIES_BOUND = 1e-2


@jit
def bernoulli(z: ArrayLike) -> Array:
    """B(z) = z / (e^z − 1), B(0) = 1, evaluated without overflow or cancellation for every real z.

    With u = |z|: B(−u) = u / (1 − e^{−u}) and B(u) = B(−u) e^{−u}; near 0 the series
    B(z) = 1 − z/2 + z²/12 − z⁴/720. Gradients are finite everywhere (the unused branch is fed a safe value).
    """
    z = jnp.asarray(z)
    small = jnp.abs(z) < _SERIES_BOUND
    u = jnp.where(small, 1.0, jnp.abs(z))
    b_minus = u / -jnp.expm1(-u)  # B(−u)
    full = jnp.where(z >= 0, b_minus * jnp.exp(-u), b_minus)
    series = 1.0 - z / 2 + z**2 / 12 - z**4 / 720
    return jnp.where(small, series, full)


@jit
def fitted_flux_coefficients(a: ArrayLike, K: ArrayLike, h: float) -> tuple[Array, Array]:
    """(α, β) = ((K/h) B(−P), (K/h) B(P)), P = a h / K, the face flux being J = α f_left − β f_right.

    Written as functions of a and D = K / h so that D = 0 is the upwind limit (α, β) = (a⁺, a⁻) rather than
    a division by zero: for |P| ≥ 10⁻², with u = |P|, the larger coefficient is |a| / (1 − e^{−u}) and the
    smaller one that times e^{−u}; for small |P|, α = D + a (1/2 + P/12 − P³/720) and β = α − a.

    An odd number of faces on CPU is evaluated with its last face repeated once, and that copy dropped
    (:func:`~meanfield_jax.dispatch.odd_count_on_cpu`; 99 999 faces in float64 took 2.8 ms, 100 000 took
    1.0 ms, measured).
    """
    a, K = jnp.asarray(a), jnp.asarray(K)
    if K.ndim > 0:
        a, K = jnp.broadcast_arrays(a, K)
    if a.ndim > 0 and odd_count_on_cpu(a.size):
        count = a.shape[-1]
        alpha, beta = _fitted(_repeat_last(a), (_repeat_last(K) if K.ndim > 0 else K) / h)
        return alpha[..., :count], beta[..., :count]
    return _fitted(a, K / h)


def _repeat_last(x: Array) -> Array:
    """x with its last entry along the last axis repeated once."""
    return jnp.concatenate([x, x[..., -1:]], axis=-1)


def _fitted(a: Array, D: Array) -> tuple[Array, Array]:
    """(α, β) of :func:`fitted_flux_coefficients` from a and D = K / h."""
    positive = D > 0
    P = a / jnp.where(positive, D, 1.0)
    small = positive & (jnp.abs(P) < _SERIES_BOUND)
    alpha_series = D + a * (0.5 + P / 12 - P**3 / 720)
    u = jnp.where(small, 1.0, jnp.where(positive, jnp.abs(P), jnp.inf))
    larger = jnp.abs(a) / -jnp.expm1(-u)
    smaller = larger * jnp.exp(-u)
    alpha = jnp.where(small, alpha_series, jnp.where(a >= 0, larger, smaller))
    beta = jnp.where(small, alpha_series - a, jnp.where(a >= 0, smaller, larger))
    return alpha, beta


def _sides(x: Array, axis: int) -> tuple[Array, Array]:
    """The values below and above each interior face normal to ``axis``: x_i and x_{i+1}."""
    n = x.shape[axis]
    return jax.lax.slice_in_dim(x, 0, n - 1, axis=axis), jax.lax.slice_in_dim(x, 1, n, axis=axis)


def _face_fluxes(coefficients: Sequence[tuple[Array, Array]], f: Array) -> list[Array]:
    """J = α f_lower − β f_upper on the interior faces normal to each axis."""
    fluxes = []
    for axis, (alpha, beta) in enumerate(coefficients):
        lower, upper = _sides(f, axis)
        fluxes.append(alpha * lower - beta * upper)
    return fluxes


def apply_fitted_operator(
    coefficients: Sequence[tuple[Array, Array]], f: Array, spacing: Sequence[float]
) -> Array:
    """(L f) = −Σ_axes (J_{i+1/2} − J_{i−1/2}) / h with zero flux through the walls.

    ``coefficients[axis]`` = (α, β) on the interior faces normal to ``axis`` (that axis one shorter than f).
    """
    out = jnp.zeros_like(f)
    for axis, (J, h) in enumerate(zip(_face_fluxes(coefficients, f), spacing)):
        out = out - jnp.diff(pad_axis(J, axis, 1, 1), axis=axis) / h
    return out


def fitted_operator_vjp(
    coefficients: Sequence[tuple[Array, Array]], f: Array, q: Array, spacing: Sequence[float]
) -> tuple[Array, tuple[tuple[Array, Array], ...]]:
    """The cotangents of ⟨q, L f⟩ (L of :func:`apply_fitted_operator`): (Lᵀ q, (∂/∂α, ∂/∂β) per axis).

    Summing by parts, ⟨q, L f⟩ = Σ_axes Σ_faces J_{i+1/2} D_{i+1/2} with D_{i+1/2} = (q_{i+1} − q_i)/h, so
    ∂/∂α_{i+1/2} = f_i D_{i+1/2}, ∂/∂β_{i+1/2} = −f_{i+1} D_{i+1/2} and
    (Lᵀ q)_i = Σ_axes α_{i+1/2} D_{i+1/2} − β_{i−1/2} D_{i−1/2} (no term through a wall).
    """
    transposed = jnp.zeros_like(q)
    cotangents = []
    for axis, ((alpha, beta), h) in enumerate(zip(coefficients, spacing)):
        q_lower, q_upper = _sides(q, axis)
        f_lower, f_upper = _sides(f, axis)
        D = (q_upper - q_lower) / h
        transposed = transposed + pad_axis(alpha * D, axis, 0, 1) - pad_axis(beta * D, axis, 1, 0)
        cotangents.append((f_lower * D, -f_upper * D))
    return transposed, tuple(cotangents)


def outflow_rate(coefficients: Sequence[tuple[Array, Array]], spacing: Sequence[float]) -> Array:
    """−L_ii = Σ_axes (α_{i+1/2} + β_{i−1/2}) / h, the rate at which cell i empties.

    The forward-Euler matrix I + Δt L is non-negative (and preserves mass) exactly when Δt max_i(−L_ii) ≤ 1.
    """
    rate = 0.0
    for axis, ((alpha, beta), h) in enumerate(zip(coefficients, spacing)):
        rate = rate + (pad_axis(alpha, axis, 0, 1) + pad_axis(beta, axis, 1, 0)) / h
    return rate


def tridiagonal_bands(alpha: Array, beta: Array, h: float) -> tuple[Array, Array, Array]:
    """The bands (lower, diagonal, upper) of the 1-D operator L along the last axis, each of length n.

    L_{i,i−1} = α_{i−1/2}/h, L_{i,i+1} = β_{i+1/2}/h, L_ii = −(α_{i+1/2} + β_{i−1/2})/h;
    lower[0] = upper[−1] = 0.
    """
    axis = alpha.ndim - 1
    lower = pad_axis(alpha, axis, 1, 0) / h
    upper = pad_axis(beta, axis, 0, 1) / h
    diagonal = -(pad_axis(alpha, axis, 0, 1) + pad_axis(beta, axis, 1, 0)) / h
    return lower, diagonal, upper


def _on_faces(x: Array, k: int, size: int) -> Array:
    """x_{j+k} for j = 0 … size − 1 along the last axis (x on all faces, zero beyond the walls)."""
    axis = x.ndim - 1
    return jax.lax.slice_in_dim(pad_axis(x, axis, 1, 1), 1 + k, 1 + k + size, axis=axis)


def pad_cells(f: Array) -> Array:
    """f with two zero cells beyond each wall along the last axis (the ``padded`` inputs below)."""
    return pad_axis(f, f.ndim - 1, 2, 2)


def _face_neighbours(f: Array, padded: bool = False) -> list[Array]:
    """f_{j−2}, f_{j−1}, f_j, f_{j+1} on every face j = 0 … n (cells j − 1, j on its sides; zero beyond the
    walls), each a slice of one padded f (``padded``: f is that already, see :func:`pad_cells`)."""
    f_padded = f if padded else pad_cells(f)
    axis, n = f.ndim - 1, f_padded.shape[-1] - 4
    return [jax.lax.slice_in_dim(f_padded, k, k + n + 1, axis=axis) for k in range(4)]


def _heun_quadratic(a: Array, b: Array) -> tuple[Array, ...]:
    """(q₋₁, q₀, q₁, q₂) of :func:`heun_flux_coefficients` from a, b on all n + 1 faces (walls zero)."""
    m = a.shape[-1]
    return (
        0.5 * a * _on_faces(a, -1, m),
        -0.5 * a * (a + _on_faces(b, -1, m) + b),
        0.5 * b * (a + _on_faces(a, 1, m) + b),
        -0.5 * b * _on_faces(b, 1, m),
    )


def heun_flux_coefficients(alpha: Array, beta: Array, h: float, dt: ArrayLike) -> tuple[Array, ...]:
    """The face coefficients of Heun's step for d f/dt = L f in 1-D (L along the last axis), written as one
    conservative update.

    For a fixed linear L, Heun's step of length τ, f₁ = f + τ L f, f_new = (f + f₁ + τ L f₁)/2, is
    f_new = f + τ L (f + τ L f / 2): the flux of the midpoint density. With the Courant-scaled face flux
    Ĵ_{i+1/2}(g) = (Δt/h)(α g_i − β g_{i+1}) (walls zero) and τ = s Δt this is

        f_new,i = f_i − (F_{i+1/2} − F_{i−1/2}),   F = s Ĵ(f) + s² Q(f),   Q = Ĵ(Δt L f) / 2,

    and, with a = Δt α/h, b = Δt β/h on face i+1/2, a₋, b₋ on i−1/2 and a₊, b₊ on i+3/2, Δt L f = −ΔĴ gives
    the four-point stencil

        Q_{i+1/2} = ½ a a₋ f_{i−1} − ½ a (a + b₋ + b) f_i + ½ b (a + a₊ + b) f_{i+1} − ½ b b₊ f_{i+2}.

    Returns (a, b, q₋₁, q₀, q₁, q₂) on all n + 1 faces (zero on the walls): mass changes by the telescoping
    flux differences only, as in the two-stage form, and under the step bound Δt max(−L_ii) ≤ 1 the update
    is the non-negative matrix (I + A²)/2, A = I + τ L.
    """
    axis = alpha.ndim - 1
    a, b = (pad_axis(c * (dt / h), axis, 1, 1) for c in (alpha, beta))
    return (a, b, *_heun_quadratic(a, b))


def _four_point(weights: Sequence[Array], neighbours: Sequence[Array]) -> Array:
    """w₋₁ f_{i−1} + w₀ f_i + w₁ f_{i+1} + w₂ f_{i+2} on every face, from :func:`_face_neighbours`."""
    (w_below, w_left, w_right, w_above), (two_left, left, right, two_right) = weights, neighbours
    return w_below * two_left + w_left * left + w_right * right + w_above * two_right


def _heun_flux_parts(coefficients: tuple[Array, ...], f: Array, padded: bool = False) -> tuple[Array, Array]:
    """(Ĵ, Q) on all n + 1 faces: Ĵ = a f_i − b f_{i+1}, Q = q₋₁ f_{i−1} + q₀ f_i + q₁ f_{i+1} + q₂ f_{i+2}.
    """
    a, b, *q = coefficients
    neighbours = _face_neighbours(f, padded)  # f_{i−1}, f_i, f_{i+1}, f_{i+2} for face i+1/2
    return a * neighbours[1] - b * neighbours[2], _four_point(q, neighbours)


def heun_update(coefficients: tuple[Array, ...], f: Array, s: ArrayLike = 1.0) -> Array:
    """Heun's step f − ΔF of length s Δt from :func:`heun_flux_coefficients` at Δt, in one pass
    over f: the same numbers as the two stages up to round-off; 2.2–2.7x faster at 10⁵ cells (measured; one
    kernel reading six coefficient arrays and f, instead of two stencil passes with the intermediate stage
    written out), and a shorter step (landing on a stop) takes the same code path. The time loop passes
    0 ≤ s ≤ 1 + 16 ulp (s = 0 leaves f as it is; s ≤ 1 keeps the non-negativity of the step bound).
    """
    J, Q = _heun_flux_parts(coefficients, f)
    return f - jnp.diff(s * J + (s * s) * Q, axis=f.ndim - 1)


def heun_update_flux(coefficients: tuple[Array, ...], f: Array, s: ArrayLike = 1.0) -> Array:
    """The face flux s Ĵ + s² Q of :func:`heun_update` on the inner faces (see :func:`flux_update`), as one
    four-point stencil with the weights (s² q₋₁, s a + s² q₀, s² q₁ − s b, s² q₂)."""
    a, b, q_below, q_left, q_right, q_above = coefficients
    s2 = s * s
    return _inner_four_point((s2 * q_below, s * a + s2 * q_left, s2 * q_right - s * b, s2 * q_above), f)


def heun_whole_step_stencil(coefficients: tuple[Array, ...]) -> tuple[Array, Array, Array, Array]:
    """The face flux of a step of the whole length Δt (s = 1) from :func:`heun_flux_coefficients`, as one
    four-point stencil: F = Ĵ(f) + Q(f) is F_{i+1/2} = c₋₁ f_{i−1} + c₀ f_i + c₁ f_{i+1} + c₂ f_{i+2} with

        (c₋₁, c₀, c₁, c₂) = (q₋₁, a + q₀, q₁ − b, q₂)   (zero on the walls, as a, b and q are).

    Made once per layer, like the six arrays; :func:`heun_whole_step` then reads four coefficient arrays
    instead of six and does half the arithmetic per face."""
    a, b, q_below, q_left, q_right, q_above = coefficients
    return q_below, a + q_left, q_right - b, q_above


def heun_whole_step(stencil: tuple[Array, Array, Array, Array], f: Array) -> Array:
    """Heun's step of the whole length Δt, f − ΔF with F from :func:`heun_whole_step_stencil`: the same
    numbers as :func:`heun_update` at s = 1 up to round-off, conservative in the same way (the face flux
    differences telescope). Loops of 200 steps, float64, calls interleaved: 10⁴ cells 0.89x, 10⁵ 0.85x the
    time of :func:`heun_update` (measured)."""
    return flux_update(f, heun_whole_step_flux(stencil, f))


def heun_whole_step_flux(stencil: tuple[Array, Array, Array, Array], f: Array) -> Array:
    """The face flux of :func:`heun_whole_step` on the inner faces (see :func:`flux_update`)."""
    return _inner_four_point(stencil, f)


def flux_update(f: Array, flux: Array) -> Array:
    """f_i − F_{i+1/2} + F_{i−1/2} from the flux on the inner faces 1 … n − 1 (the walls carry none).

    The stencils above form F on the inner faces alone (:func:`_inner_four_point`) and this update pads F,
    not f: padding f, from which every shifted value was a slice, was a kernel of its own, single-threaded
    (loops of 200 steps, float64, calls interleaved: 10³ / 10⁴ / 10⁵ cells 0.75–0.82x / 0.78–0.97x /
    0.89–0.92x the time with the pad of f, measured). This update is elementwise in f, so XLA writes its
    result over f. The time loop chooses the flux behind a conditional (a whole step or one landing on a
    stop) and updates f after it: with the two updates inside the conditional, XLA wrote the conditional's
    result to a buffer of its own and copied it into the loop's state at every step (10⁵ cells, float64:
    128–165 µs per step against 56–59 µs, measured in loops of 200 steps).

    Below ``WALL_FLUX_BELOW`` cells the flux also holds the right wall's (zero) flux (:func:`inner_flux`):
    f − F_{i+1/2} is then read in place and only F_{i−1/2} padded."""
    axis, n = f.ndim - 1, f.shape[-1]
    if flux.shape[-1] == n:  # faces 1 … n, the last the right wall's
        return f - flux + pad_axis(jax.lax.slice_in_dim(flux, 0, n - 1, axis=axis), axis, 1, 0)
    return f - pad_axis(flux, axis, 0, 1) + pad_axis(flux, axis, 1, 0)


def inner_flux(flux: Array) -> Array:
    """The flux on the inner faces 1 … n − 1 in the layout :func:`flux_update` reads: as it is from
    ``WALL_FLUX_BELOW`` cells, below that with the right wall's zero flux appended (n values)."""
    if flux.shape[-1] + 1 >= WALL_FLUX_BELOW:
        return flux
    return jnp.concatenate([flux, jnp.zeros_like(flux[..., :1])], axis=flux.ndim - 1)


def _inner_four_point(weights: Sequence[Array], f: Array) -> Array:
    """The four-point face flux of ``weights`` (:func:`_four_point`) on the inner faces 1 … n − 1, in the
    layout of :func:`inner_flux`.

    The weights that would reach beyond a wall vanish (w₋₁ on the first inner face, w₂ on the last: products
    with a wall's a or b), so f is read by slices alone."""
    n, axis = f.shape[-1], f.ndim - 1
    if n < 3:  # too few cells for the slices below
        return inner_flux(jax.lax.slice_in_dim(_four_point(weights, _face_neighbours(f)), 1, n, axis=axis))
    inner = [jax.lax.slice_in_dim(w, 1, n, axis=w.ndim - 1) for w in weights]  # faces 1 … n − 1
    cells = [jax.lax.slice_in_dim(f, k, k + n - 3, axis=axis) for k in range(4)]  # faces 2 … n − 2
    head = [jax.lax.slice_in_dim(f, k, k + 1, axis=axis) for k in range(3)]
    tail = [jax.lax.slice_in_dim(f, n - 3 + k, n - 2 + k, axis=axis) for k in range(3)]
    first = sum(w[..., :1] * cell for w, cell in zip(inner[1:], head))
    middle = _four_point([w[..., 1:-1] for w in inner], cells)
    last = sum(w[..., -1:] * cell for w, cell in zip(inner[:3], tail))
    return inner_flux(jnp.concatenate([first, middle, last], axis=axis))


def heun_update_vjp(
    coefficients: tuple[Array, ...], f: Array, s: ArrayLike, p: Array, padded: bool = False
) -> tuple[tuple[Array, Array], Array]:
    """The cotangents of ⟨p, heun_update(coefficients, f, s)⟩: ((∂/∂a, ∂/∂b), ∂/∂f), with q₋₁ … q₂
    taken as the functions of a and b that :func:`heun_flux_coefficients` makes of them (their cotangents are
    carried into a and b, so a loop accumulates two arrays per step, not six). With ``padded``, f and p are
    given as :func:`pad_cells` makes them (∂/∂f is not padded), so that a caller that also needs ∂/∂s
    (:func:`heun_update_s_vjp`) pads each once.

    Summing by parts, ⟨p, f − ΔF⟩ = ⟨p, f⟩ + Σ_faces G F with G_{i+1/2} = p_{i+1} − p_i (p = 0 beyond the
    walls), so ∂/∂a = s G f_i, ∂/∂b = −s G f_{i+1}, ∂/∂q_k = s² G f_{i+k} (then through q(a, b)),
    and ∂/∂f = p + the transposed stencil applied to G; ∂/∂s is :func:`heun_update_s_vjp`. The wall
    entries of ∂/∂a, ∂/∂b are not zero (a, b are constants there: drop them, as the pad's transpose in
    :func:`heun_flux_coefficients` does).
    """
    a, b, q_below, q_left, q_right, q_above = coefficients
    axis, n = f.ndim - 1, a.shape[-1] - 1
    # every shifted value is a slice of one padded input (no pads of intermediate products, which XLA
    # evaluates element by element with bounds checks: 2x slower measured); p itself too, so that p is not
    # read after the pad (a later read had XLA copy it at every step)
    p_padded = p if padded else pad_cells(p)
    G = partial(_face_differences, p_padded)
    m = n + 1
    f_of = _face_neighbours(f, padded)  # f_{j−2}, f_{j−1}, f_j, f_{j+1} on face j
    s2 = s * s
    G0 = G(0, m)
    a_next, b_prev = _on_faces(a, 1, m), _on_faces(b, -1, m)
    side = 0.5 * s2 * (a_next * G(1, m) + b_prev * G(-1, m))
    d_a = G0 * (
        s * f_of[1]
        + 0.5 * s2 * (_on_faces(a, -1, m) * f_of[0] - (2 * a + b_prev + b) * f_of[1] + b * f_of[2])
    ) + side * f_of[1]
    d_b = G0 * (
        -s * f_of[2]
        + 0.5 * s2 * ((a + a_next + 2 * b) * f_of[2] - a * f_of[1] - _on_faces(b, 1, m) * f_of[3])
    ) - side * f_of[2]
    d_f = (
        jax.lax.slice_in_dim(p_padded, 2, 2 + n, axis=axis)
        + s * (_on_faces(a, 1, n) * G(1, n) - _on_faces(b, 0, n) * G(0, n))
        + s2
        * (
            _on_faces(q_below, 2, n) * G(2, n)
            + _on_faces(q_left, 1, n) * G(1, n)
            + _on_faces(q_right, 0, n) * G(0, n)
            + _on_faces(q_above, -1, n) * G(-1, n)
        )
    )
    return (d_a, d_b), d_f


def _face_differences(p_padded: Array, r: int, size: int) -> Array:
    """G_{j+r} = p_{j+r} − p_{j+r−1} for faces j = 0 … size − 1 (G_{i+1/2} = p_{i+1} − p_i; p zero beyond
    the walls), from p as :func:`pad_cells` makes it."""
    axis = p_padded.ndim - 1
    return (jax.lax.slice_in_dim(p_padded, r + 2, r + 2 + size, axis=axis)
            - jax.lax.slice_in_dim(p_padded, r + 1, r + 1 + size, axis=axis))


def heun_update_s_vjp(
    coefficients: tuple[Array, ...], f: Array, s: ArrayLike, p: Array, padded: bool = False
) -> Array:
    """∂/∂s ⟨p, heun_update(coefficients, f, s)⟩ = ⟨G, Ĵ + 2 s Q⟩ (G as in :func:`heun_update_vjp`;
    ``padded`` as there)."""
    J, Q = _heun_flux_parts(coefficients, f, padded)
    p_padded = p if padded else pad_cells(p)
    return jnp.sum(_face_differences(p_padded, 0, J.shape[-1]) * (J + 2 * s * Q))
