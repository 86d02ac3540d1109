"""Exact characteristics X_t(x0) of dx/dt = σ(w x + b) in 1-D (MODEL.md §2.3), for t of either sign.

With z = w x + b one has ż = w σ(z), which integrates in closed form:

* identity: X = e^{wt} x0 + (b/w)(e^{wt} − 1)   (x0 + b t for w = 0)
* tanh:     sinh(w X + b) = sinh(w x0 + b) e^{wt}   (in logarithms where the right side would overflow)
* relu:     X = x0 where w x0 + b ≤ 0, else w X + b = (w x0 + b) e^{wt}

The push-forward of a law with CDF F0 then has the CDF F(t, x) = F0(X_{−t}(x)) when X_t is increasing
(always the case for a flow in 1-D), which is how the kinetic experiments compute exact cell averages.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

from .arguments import concrete_scalar
from .closed_forms import phi1

__all__ = ["characteristic"]

# beyond e^20, arcsinh(S) = log S + log 2 and sinh(a) = e^a/2 to rounding
_LOG_SPACE_FROM = 20.0


def _arcsinh_of_scaled_sinh(z0: Array, wt: Array) -> Array:
    """arcsinh(sinh(z0) e^{wt}), also where sinh(z0) or the product overflows (|z0| or |z0| + wt beyond ~710
    in float64): with u = log |sinh z0| + wt, it is sign(z0) (u + log 2) for u > 20 and
    sign(z0) arcsinh(e^u) for |z0| > 20; each branch is evaluated at safe inputs where it is not taken, so
    derivatives stay finite."""
    a = jnp.abs(z0)
    far = a > _LOG_SPACE_FROM
    log_sinh = jnp.where(far, a - math.log(2.0), jnp.log(jnp.sinh(jnp.where(far | (a == 0), 1.0, a))))
    u = log_sinh + wt
    large = (u > _LOG_SPACE_FROM) & (a > 0)
    logarithmic = far & ~large
    asymptotic = jnp.sign(z0) * (jnp.where(large, u, 0.0) + math.log(2.0))
    of_log = jnp.sign(z0) * jnp.arcsinh(jnp.exp(jnp.where(logarithmic, u, 0.0)))
    growth = jnp.exp(jnp.minimum(jnp.where(large, 0.0, wt), math.log(jnp.finfo(jnp.result_type(wt)).max)))
    direct = jnp.arcsinh(jnp.sinh(jnp.where(large | far, 0.0, z0)) * growth)
    return jnp.where(large, asymptotic, jnp.where(logarithmic, of_log, direct))


def characteristic(activation: str, w: float, b: float, x0: ArrayLike, t: float) -> Array:
    """X_t(x0) for σ in {identity, tanh, relu} with w ≠ 0 (identity also allows w = 0); w, b, x0 and t
    may be traced (jit, vmap, grad)."""
    x0 = jnp.asarray(x0)
    if activation == "identity":  # (b/w)(e^{wt} − 1) = b t φ₁(wt), which is b t at w = 0
        return jnp.exp(w * t) * x0 + b * t * phi1(w * t)
    if concrete_scalar(w) == 0:
        raise ValueError(f"the exact characteristic of {activation!r} needs w != 0")
    z0 = w * x0 + b
    if activation == "tanh":
        return (_arcsinh_of_scaled_sinh(z0, w * t) - b) / w
    if activation == "relu":
        return jnp.where(z0 <= 0, x0, (z0 * jnp.exp(w * t) - b) / w)
    raise ValueError(f"no closed-form characteristic for activation {activation!r}; use identity, tanh, relu")
