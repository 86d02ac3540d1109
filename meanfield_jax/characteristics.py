"""Exact characteristics X_t(x0) of dx/dt = σ(w x + b) in 1-D (MODEL.md §2.3), for t of either sign.

With z = w x + b one has ż = w σ(z), which integrates in closed form:

* identity: X = e^{wt} x0 + (b/w)(e^{wt} − 1)   (x0 + b t for w = 0)
* tanh:     sinh(w X + b) = sinh(w x0 + b) e^{wt}
* relu:     X = x0 where w x0 + b ≤ 0, else w X + b = (w x0 + b) e^{wt}

The push-forward of a law with CDF F0 then has the CDF F(t, x) = F0(X_{−t}(x)) when X_t is increasing
(always the case for a flow in 1-D), which is how the kinetic experiments compute exact cell averages.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

__all__ = ["characteristic"]


def characteristic(activation: str, w: float, b: float, x0: ArrayLike, t: float) -> Array:
    """X_t(x0) for σ in {identity, tanh, relu} with w ≠ 0 (identity also allows w = 0)."""
    x0 = jnp.asarray(x0)
    if activation == "identity":
        if w == 0:
            return x0 + b * t
        return jnp.exp(w * t) * x0 + (b / w) * jnp.expm1(w * t)
    if w == 0:
        raise ValueError(f"the exact characteristic of {activation!r} needs w != 0")
    z0 = w * x0 + b
    if activation == "tanh":
        return (jnp.arcsinh(jnp.sinh(z0) * jnp.exp(w * t)) - b) / w
    if activation == "relu":
        return jnp.where(z0 <= 0, x0, (z0 * jnp.exp(w * t) - b) / w)
    raise ValueError(f"no closed-form characteristic for activation {activation!r}; use identity, tanh, relu")
