"""Data of the reference 1-D control problem: two clusters to be sent to two labels.

The bimodal problem of the mean-field PMP reference code (Bonnet–Cipriani–Fornasier–Huang): ``n_per_mode``
points around each centre c ∈ {−1, +1}, x = c + ξ with ξ a standard Gaussian truncated to |ξ| ≤ radius
(rejection sampling in the reference, inverse-CDF sampling here: the same law), and the label y = −2 for the
left cluster, +2 for the right one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from ..arguments import whole_number

__all__ = ["bimodal_data"]


def bimodal_data(
    key: PRNGKeyArray,
    n_per_mode: int = 100,
    radius: float = 0.2,
    centres: tuple[float, float] = (-1.0, 1.0),
    labels: tuple[float, float] = (-2.0, 2.0),
) -> tuple[Array, Array]:
    """Inputs x and labels y, both of shape (2 n_per_mode, 1): the left cluster first, then the right one."""
    n_per_mode = whole_number(n_per_mode, "n_per_mode")
    radius = float(radius)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got radius={radius}")
    dtype = jnp.result_type(float)
    xi = jax.random.truncated_normal(key, -radius, radius, (2, n_per_mode), dtype)
    x = jnp.asarray(centres, dtype)[:, None] + xi
    y = jnp.broadcast_to(jnp.asarray(labels, dtype)[:, None], x.shape)
    return x.reshape(-1, 1), y.reshape(-1, 1)
