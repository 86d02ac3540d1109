"""Moments of particle clouds and densities, and the exact moment dynamics for identity activation.

Raw moments m_k = ∫ x^k f dx. For σ(z) = z, a drift w x + b(t) and diffusion K (constant) in 1-D,

    dm_k/dt = k w m_k + k b(t) m_{k−1} + k (k − 1) K m_{k−2},

a closed (lower-triangular) system. It is solved exactly by splitting into the mean μ = m1/m0 and the
central moments c_k = ∫ (x − μ)^k f dx / m0, which do not see the bias at all:

    dμ/dt = (w + β) μ + b,                 (β: feedback bias b(t) = b + β m1/m0)
    dc_k/dt = k w c_k + k (k − 1) K c_{k−2},   c_0 = 1, c_1 = 0,

so μ(t) = e^{(w+β)t} μ(0) + b (e^{(w+β)t} − 1)/(w + β). The centred data move like an Ornstein–Uhlenbeck
process, X_t − μ_t = e^{wt}(X_0 − μ_0) + G_t with G_t ~ N(0, s²(t)), s² = K (e^{2wt} − 1)/w, independent
of X_0:

    c_k(t) = Σ_{j even} C(k, j) e^{(k−j)wt} c_{k−j}(0) s^j (j − 1)!!,

and m_k = m0 Σ_j C(k, j) μ^{k−j} c_j. In particular V = c_2 obeys V(t) = V∞ + (V(0) − V∞) e^{2wt} with
V∞ = −K/w, for every bias.
"""

from __future__ import annotations

import math
from math import comb

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .arguments import finite_values, number, whole_number
from .closed_forms import phi1

__all__ = ["central_to_raw", "moment_ode", "moments", "particle_moments", "raw_to_central"]


def _check_order(order: int) -> int:
    return whole_number(order, "order", minimum=0)


def particle_moments(x: ArrayLike, order: int = 2) -> Array:
    """Raw moments [m0 = 1, m1, …, m_order] of the empirical measure (1/n) Σ δ_{x_i}.

    x of shape (n,) gives shape (order + 1,); x of shape (n, d) gives (order + 1, d), the moments of each
    coordinate separately (use :func:`jnp.cov` for cross moments).
    """
    order = _check_order(order)
    x = jnp.asarray(x)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n,) or (n, d) with n >= 1, got shape {tuple(x.shape)}")
    x = x.astype(jnp.result_type(x.dtype, float))  # powers of integer data would overflow
    return jnp.stack([jnp.mean(x**k, axis=0) for k in range(order + 1)])


def moments(f: ArrayLike, grid, order: int = 2) -> Array:
    """Raw moments of a density given by cell averages on ``grid``.

    1-D (f of shape (..., n)): [m0, …, m_order], shape (order + 1, ...), m_k = Σ_i x_i^k f_i Δx (the
    midpoint rule; exact for k ≤ 1 on cell averages).
    2-D (f of shape (..., nx, ny)): a dict with ``mass`` m0, ``mean`` (2,) and, for order ≥ 2,
    ``covariance`` (2, 2) — each with the leading batch axes of f first — and ``raw``: the list of arrays
    [m_{p,q}] for p + q ≤ order, indexed raw[p][q].
    """
    order = _check_order(order)
    f = jnp.asarray(f)
    if grid.d == 1:
        if f.shape[-1:] != grid.shape:
            raise ValueError(f"f must have trailing shape {grid.shape} for this grid, got {tuple(f.shape)}")
        return jnp.stack([grid.integrate(f * jnp.broadcast_to(grid.x**k, f.shape)) for k in range(order + 1)])
    if f.shape[-2:] != grid.shape:
        raise ValueError(f"f must have trailing shape {grid.shape} for this grid, got {tuple(f.shape)}")
    X, Y = grid.mesh()
    raw = [
        [grid.integrate(f * jnp.broadcast_to(X**p * Y**q, f.shape)) for q in range(order + 1 - p)]
        for p in range(order + 1)
    ]
    out: dict = {"raw": raw, "mass": raw[0][0]}
    if order >= 1:
        m0 = raw[0][0]
        mean = jnp.stack([raw[1][0] / m0, raw[0][1] / m0], axis=-1)
        out["mean"] = mean
        if order >= 2:
            mx, my = mean[..., 0], mean[..., 1]
            cxx = raw[2][0] / m0 - mx**2
            cyy = raw[0][2] / m0 - my**2
            cxy = raw[1][1] / m0 - mx * my
            out["covariance"] = jnp.stack([jnp.stack([cxx, cxy], -1), jnp.stack([cxy, cyy], -1)], -2)
    return out


def raw_to_central(m: ArrayLike) -> tuple[Array, Array, Array]:
    """(m0, μ, c) from raw moments m = [m0, m1, …, mK] (leading axis): c_j = ∫ (x − μ)^j f / m0."""
    m = jnp.asarray(m)
    m0 = m[0]
    mu = m[1] / m0
    K = m.shape[0] - 1
    c = [sum(comb(j, i) * (m[i] / m0) * (-mu) ** (j - i) for i in range(j + 1)) for j in range(K + 1)]
    return m0, mu, jnp.stack(c)


def central_to_raw(m0: ArrayLike, mu: ArrayLike, c: ArrayLike) -> Array:
    """Raw moments m_k = m0 Σ_j C(k, j) μ^{k−j} c_j from central moments c (leading axis)."""
    c = jnp.asarray(c)
    K = c.shape[0] - 1
    raw = [m0 * sum(comb(k, j) * mu ** (k - j) * c[j] for j in range(k + 1)) for k in range(K + 1)]
    return jnp.stack(raw)


def _double_factorial(n: int) -> int:
    """n!! with (−1)!! = 1 (the even moments of N(0, 1) are (j − 1)!!)."""
    return 1 if n <= 0 else n * _double_factorial(n - 2)


def _expm1_over(a: Array, t: Array) -> Array:
    """(e^{a t} − 1)/a = t φ₁(a t), equal to t at a = 0 and differentiable there in a as well
    (∂/∂a = t²/2 at a = 0; a select of t at a = 0 had derivative 0 there)."""
    return t * phi1(a * t)


def _checked_scalar(value: ArrayLike, name: str) -> None:
    """A concrete scalar input must be a finite number (a TypeError or ValueError naming it); a traced one
    passes."""
    if isinstance(value, jax.core.Tracer):
        return
    if not math.isfinite(number(value, name)):
        raise ValueError(f"{name} must be finite, got {name}={float(value)}")


def moment_ode(
    w: ArrayLike,
    b: ArrayLike,
    m_init: ArrayLike,
    ts: ArrayLike,
    feedback: ArrayLike | None = None,
    diffusion: ArrayLike = 0.0,
) -> Array:
    """Exact raw-moment trajectories of ∂_t f + ∂_x((w x + b + β m1/m0) f) = K ∂²_x f (1-D, identity σ).

    Args:
        w, b: constant weight and bias.
        m_init: raw moments [m0, m1, …, mK] at t = 0 (K ≥ 1, m0 > 0).
        ts: times, shape (k,) (or a scalar).
        feedback: β, or None for no feedback.
        diffusion: K ≥ 0 (0 for the Vlasov equation).

    Every input is checked here when concrete (finite numbers, K ≥ 0, m0 > 0) and differentiable when traced,
    also at w = 0 and w + β = 0, where (e^{at} − 1)/a is taken as t φ₁(at).

    Returns:
        Array of shape (len(ts), K + 1): m_j(t_i).
    """
    m_init = jnp.asarray(m_init)
    if m_init.ndim != 1 or m_init.shape[0] < 2:
        raise ValueError(f"m_init must be [m0, m1, ...] with at least two entries, got shape {m_init.shape}")
    values = finite_values(m_init, "m_init")
    if values is not None and not values[0] > 0:
        raise ValueError(f"m_init's mass m0 must be > 0, got m0={values[0]}")
    scalars = {"w": w, "b": b} | ({} if feedback is None else {"feedback": feedback})
    for name, value in scalars.items():
        _checked_scalar(value, name)
    if not isinstance(diffusion, jax.core.Tracer):
        value = number(diffusion, "diffusion")
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"diffusion must be a finite number >= 0, got diffusion={value}")
    dtype = jnp.result_type(m_init.dtype, float)
    w = jnp.asarray(w, dtype)
    b = jnp.asarray(b, dtype)
    K = jnp.asarray(diffusion, dtype)
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype))
    if ts.ndim != 1:
        raise ValueError(f"ts must be a 1-D array of times, got shape {tuple(ts.shape)}")
    beta = 0.0 if feedback is None else jnp.asarray(feedback, dtype)
    order = m_init.shape[0] - 1

    m0, mu0, c0 = raw_to_central(m_init)
    a = w + beta
    mu = jnp.exp(a * ts) * mu0 + b * _expm1_over(a, ts)
    # X_t − μ_t = e^{wt}(X_0 − μ_0) + G_t with G_t ~ N(0, s²(t)) independent, s² = 2K (e^{2wt} − 1)/(2w)
    s2 = 2.0 * K * _expm1_over(2.0 * w, ts)
    c = [
        sum(
            comb(k, j) * jnp.exp((k - j) * w * ts) * c0[k - j] * s2 ** (j // 2) * _double_factorial(j - 1)
            for j in range(0, k + 1, 2)
        )
        for k in range(order + 1)
    ]
    return central_to_raw(m0, mu, jnp.stack(c)).T
