"""Parameter choices in closed form for identity activation (1-D): "training" without gradients.

Affine flow maps. The flow of dx/dt = w x + b over [0, T] and the ResNet of L explicit-Euler layers
(Δt = T/L) are both affine, x ↦ α x + β:

    continuous:  α = e^{wT},          β = b T φ₁(wT),             φ₁(z) = (e^z − 1)/z,  φ₁(0) = 1
    discrete:    α = (1 + Δt w)^L,    β = Δt b Σ_{k<L} (1 + Δt w)^k.

Inverting them for a target line y = a x + c (a > 0), with ℓ = ln a:

    continuous:  w = ℓ/T,                   b = w c/(a − 1) = c / (T φ₁(ℓ))         (a = 1: w = 0, b = c/T)
    discrete:    w = (a^{1/L} − 1)/Δt,      b = w c/(a − 1) = c φ₁(ℓ/L) / (T φ₁(ℓ)).

Writing the ratios through φ₁ removes the removable singularity at a = 1 (w = 0): every formula here is
smooth there and differentiable with jax, with no division by zero.

Moments (section 4.4 of the model notes; V the variance, μ the mean, m2 the raw second moment, V(t) =
V(0) e^{2wt} for any bias):

    target variance V_d at T:        w = ln(V_d/V_0) / (2T)
    target mean μ_d at T, given w:   b = w (μ_d − e^{wT} μ_0)/(e^{wT} − 1) = (μ_d − e^{wT} μ_0)/(T φ₁(wT))
    target energy E_d = m2(T), b = 0: w = ln(E_d/m2(0)) / (2T)
    energy steered asymptotically:   b = −w sqrt(E_d/m0), w < 0, so m2(t) → m0 (b/w)² = E_d

Fokker–Planck steady state (drift w x + b, diffusion K): the Gaussian N(−b/w, K/(−w)), so the target
N(μ, s²) is reached with w = −K/s², b = K μ/s².
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .arguments import finite_values, real_values, whole_number

__all__ = [
    "asymptotic_energy_bias",
    "desired_energy_weight",
    "desired_mean_bias",
    "desired_variance_weight",
    "gaussian_steady_state_parameters",
    "least_squares_line",
    "line_map",
    "line_map_parameters",
    "line_map_parameters_discrete",
    "phi1",
]

# Below this |z| the Taylor polynomials of φ₁ and log1p(u)/u are exact to rounding in float64.
_SERIES_CUTOFF = 1e-4


def phi1(z: ArrayLike) -> Array:
    """φ₁(z) = (e^z − 1)/z with φ₁(0) = 1, smooth and differentiable at 0 (Taylor series for small |z|)."""
    z = jnp.asarray(z, jnp.result_type(z, float))
    small = jnp.abs(z) < _SERIES_CUTOFF
    zs = jnp.where(small, 1.0, z)
    series = 1.0 + z / 2.0 + z**2 / 6.0 + z**3 / 24.0
    return jnp.where(small, series, jnp.expm1(zs) / zs)


def _log1p_over(u: Array) -> Array:
    """log(1 + u)/u with value 1 at u = 0, smooth there (Taylor series for small |u|)."""
    small = jnp.abs(u) < _SERIES_CUTOFF
    us = jnp.where(small, 1.0, u)
    series = 1.0 - u / 2.0 + u**2 / 3.0 - u**3 / 4.0
    return jnp.where(small, series, jnp.log1p(us) / us)


# ---- validation of concrete inputs (traced values pass unchecked) ------------------------------------
def _require(value, name: str, condition, allowed: str) -> None:
    arr = real_values(value, name)
    if arr is not None and not np.all(np.isfinite(arr) & condition(arr)):
        raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")


def _positive(value, name: str) -> None:
    _require(value, name, lambda a: a > 0, "finite and > 0")


def _finite(value, name: str) -> None:
    _require(value, name, lambda a: True, "finite")


# ---- affine flow maps --------------------------------------------------------------------------------
def line_map(w: ArrayLike, b: ArrayLike, T: float, num_layers: int | None = None) -> tuple[Array, Array]:
    """(slope α, intercept β) of the map x(0) ↦ x(T) for the velocity w x + b.

    ``num_layers=None``: the exact flow, α = e^{wT}, β = b T φ₁(wT).
    ``num_layers=L``: the ResNet of L explicit-Euler layers, α = r^L, β = Δt b Σ_{k<L} r^k, r = 1 + Δt w.
    For r > 0 the geometric sum is evaluated as L φ₁(L λ) · λ/(r − 1), λ = log r (smooth at r = 1); for
    r ≤ 0 (an overshooting step) as (r^L − 1)/(r − 1).
    """
    _finite(w, "w")
    _finite(b, "b")
    _positive(T, "T")
    w = jnp.asarray(w, jnp.result_type(w, float))
    b = jnp.asarray(b, w.dtype)
    if num_layers is None:
        return jnp.exp(w * T), b * T * phi1(w * T)
    L = whole_number(num_layers, "num_layers")
    dt = T / L
    u = dt * w  # r − 1
    r = 1.0 + u
    positive = r > 0
    lam = jnp.log1p(jnp.where(positive, u, 0.0))
    smooth_sum = L * phi1(L * lam) * _log1p_over(jnp.where(positive, u, 0.0))
    power = r**L
    direct_sum = (power - 1.0) / jnp.where(positive, 1.0, u)
    geometric_sum = jnp.where(positive, smooth_sum, direct_sum)
    return jnp.where(positive, jnp.exp(L * lam), power), dt * b * geometric_sum


def line_map_parameters(a: ArrayLike, c: ArrayLike, T: float) -> tuple[Array, Array]:
    """(w, b) whose flow over [0, T] is x ↦ a x + c: w = ln(a)/T, b = w c/(a − 1) (a = 1: w = 0, b = c/T).

    Needs a > 0 (the flow of a 1-D ODE preserves orientation).
    """
    _positive(a, "a")
    _finite(c, "c")
    _positive(T, "T")
    ell = jnp.log(jnp.asarray(a, jnp.result_type(a, float)))
    c = jnp.asarray(c, ell.dtype)
    return ell / T, c / (T * phi1(ell))


def line_map_parameters_discrete(
    a: ArrayLike, c: ArrayLike, T: float, num_layers: int
) -> tuple[Array, Array]:
    """(w, b) such that L explicit-Euler layers x ← x + Δt (w x + b), Δt = T/L, realise x ↦ a x + c exactly.

    (1 + Δt w)^L = a gives w = (a^{1/L} − 1)/Δt; the intercept Δt b (a − 1)/(Δt w) = c gives b = w c/(a − 1),
    evaluated as c φ₁(ℓ/L)/(T φ₁(ℓ)) with ℓ = ln a (a = 1: w = 0, b = c/T). Needs a > 0.
    """
    _positive(a, "a")
    _finite(c, "c")
    _positive(T, "T")
    L = whole_number(num_layers, "num_layers")
    ell = jnp.log(jnp.asarray(a, jnp.result_type(a, float)))
    c = jnp.asarray(c, ell.dtype)
    w = jnp.expm1(ell / L) * (L / T)
    return w, c * phi1(ell / L) / (T * phi1(ell))


def least_squares_line(x: ArrayLike, y: ArrayLike) -> tuple[Array, Array]:
    """Least-squares line y ≈ slope x + intercept: slope = Cov(x, y)/Var(x), intercept = ȳ − slope x̄.

    x, y: samples of shape (n,), n ≥ 2, with x not all equal.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"x must have shape (n,) with n >= 2, got shape {tuple(x.shape)}")
    if y.shape != x.shape:
        raise ValueError(f"y must have the shape of x {tuple(x.shape)}, got shape {tuple(y.shape)}")
    finite_values(y, "y")
    values = finite_values(x, "x")
    if values is not None and np.all(values == values[0]):
        raise ValueError(f"x must not be all equal (the slope is undefined), got x = {float(values[0])!r} "
                         "throughout")
    dtype = jnp.result_type(x, y, float)
    x, y = x.astype(dtype), y.astype(dtype)
    dx, dy = x - jnp.mean(x), y - jnp.mean(y)
    slope = jnp.sum(dx * dy) / jnp.sum(dx * dx)
    return slope, jnp.mean(y) - slope * jnp.mean(x)


# ---- moment targets (section 4.4) --------------------------------------------------------------------
def desired_variance_weight(V0: ArrayLike, Vd: ArrayLike, T: float) -> Array:
    """Constant weight w = ln(V_d/V_0)/(2T) that takes the variance from V_0 to V_d at time T (any bias)."""
    _positive(V0, "V0")
    _positive(Vd, "Vd")
    _positive(T, "T")
    return jnp.log(jnp.asarray(Vd, jnp.result_type(Vd, float)) / V0) / (2.0 * T)


def desired_mean_bias(w: ArrayLike, mu0: ArrayLike, mud: ArrayLike, T: float) -> Array:
    """Constant bias b that takes the mean from μ_0 to μ_d at time T for weight w.

    b = w (μ_d − e^{wT} μ_0)/(e^{wT} − 1) = (μ_d − e^{wT} μ_0)/(T φ₁(wT)); at w = 0 this is (μ_d − μ_0)/T,
    reached smoothly (no division by zero, differentiable in w there).
    """
    _finite(w, "w")
    _finite(mu0, "mu0")
    _finite(mud, "mud")
    _positive(T, "T")
    wT = jnp.asarray(w, jnp.result_type(w, float)) * T
    return (mud - jnp.exp(wT) * mu0) / (T * phi1(wT))


def desired_energy_weight(m2_0: ArrayLike, Ed: ArrayLike, T: float) -> Array:
    """Weight w = ln(E_d/m2(0))/(2T) with b = 0, so that the energy m2(T) = m2(0) e^{2wT} equals E_d."""
    _positive(m2_0, "m2_0")
    _positive(Ed, "Ed")
    _positive(T, "T")
    return jnp.log(jnp.asarray(Ed, jnp.result_type(Ed, float)) / m2_0) / (2.0 * T)


def asymptotic_energy_bias(w: ArrayLike, Ed: ArrayLike, m0: ArrayLike = 1.0) -> Array:
    """Bias b = −w sqrt(E_d/m0) for a contracting weight w < 0: the data aggregate at −b/w = sqrt(E_d/m0),
    so the energy m2(t) → m0 (b/w)² = E_d as t → ∞."""
    _require(w, "w", lambda a: a < 0, "finite and < 0 (a contraction)")
    _positive(Ed, "Ed")
    _positive(m0, "m0")
    w = jnp.asarray(w, jnp.result_type(w, float))
    return -w * jnp.sqrt(Ed / jnp.asarray(m0, w.dtype))


def gaussian_steady_state_parameters(mu: ArrayLike, s2: ArrayLike, K: ArrayLike = 1.0) -> tuple[Array, Array]:
    """(w, b) = (−K/s², K μ/s²): the Fokker–Planck steady state of drift w x + b, diffusion K is N(μ, s²)."""
    _finite(mu, "mu")
    _positive(s2, "s2")
    _positive(K, "K")
    s2 = jnp.asarray(s2, jnp.result_type(s2, float))
    K = jnp.asarray(K, s2.dtype)
    return -K / s2, K * jnp.asarray(mu, s2.dtype) / s2
