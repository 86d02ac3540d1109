"""Data sets of the paper's experiments: vehicle lengths (Table 1), regression clouds, simple densities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .arguments import interval, real_values, whole_number

__all__ = ["TABLE1", "classify_vehicles", "regression_cloud", "table1_lengths", "uniform_density",
           "vehicle_lengths"]

#: The example rows of Table 1 of the main paper: (length in metres, class). Lengths below 5 m are cars.
TABLE1: tuple[tuple[float, str], ...] = (
    (3.0, "car"),
    (3.5, "car"),
    (5.5, "truck"),
    (7.0, "truck"),
    (4.5, "car"),
    (8.0, "truck"),
)


def table1_lengths() -> tuple[np.ndarray, np.ndarray]:
    """Lengths (6,) and labels (6,) with 0 = car, 1 = truck, from :data:`TABLE1`."""
    lengths = np.array([row[0] for row in TABLE1])
    labels = np.array([row[1] == "truck" for row in TABLE1], dtype=int)
    return lengths, labels


def vehicle_lengths(key: PRNGKeyArray, n: int = 50, low: float = 2.0, high: float = 8.0) -> Array:
    """n vehicle lengths drawn uniformly from [low, high] (Fig. 3: 50 vehicles in [2, 8])."""
    n = whole_number(n, "n")
    interval(low, high)
    return jax.random.uniform(key, (n,), minval=low, maxval=high)


def classify_vehicles(lengths, threshold: float = 5.0) -> np.ndarray:
    """The true class of a length: 1 (truck) if it is at least ``threshold``, else 0 (car)."""
    return (np.asarray(lengths) >= threshold).astype(int)


def regression_cloud(key: PRNGKeyArray, n: int = 5000, noise: float = 0.1, low: float = 0.0,
                     high: float = 1.0) -> Array:
    """Points (x, y) with x ~ U[low, high] and y = x + ε, ε ~ N(0, noise²); shape (n, 2) (Fig. 5)."""
    n = whole_number(n, "n")
    interval(low, high)
    values = real_values(noise, "noise")
    if values is not None and not np.all((values >= 0) & np.isfinite(values)):
        raise ValueError(f"noise must be finite and >= 0, got noise={noise!r}")
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (n,), minval=low, maxval=high)
    return jnp.stack([x, x + noise * jax.random.normal(ke, (n,))], axis=1)


def uniform_density(low: float, high: float):
    """The density of U[low, high] as a function of x (for ``Grid1D.project``)."""
    interval(low, high)
    return lambda x: jnp.where((x >= low) & (x <= high), 1.0 / (high - low), 0.0)
