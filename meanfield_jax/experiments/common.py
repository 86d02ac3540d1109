"""Pieces every experiment needs: the field and the initial samples from a config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..config import ConfigError, DataConfig, ExperimentConfig, ModelConfig
from ..field import NeuralField, field_from_parameters

__all__ = ["field_from_config", "initial_samples", "optimizer_from_config"]


def field_from_config(model: ModelConfig, feedback: float | None = None, **replace) -> NeuralField:
    """The NeuralField of ``model`` (a d×d W is repeated over ``model.layers`` layers).

    ``feedback`` overrides ``model.feedback``; keyword arguments W, b, T, layers, activation override the
    config's values (experiments that choose parameters in closed form use them).
    """
    W = np.asarray(replace.get("W", model.W), dtype=float)
    b = np.asarray(replace.get("b", model.b), dtype=float)
    T = replace.get("T", model.T)
    layers = replace.get("layers", model.layers)
    activation = replace.get("activation", model.activation)
    return field_from_parameters(W, b, layers, activation=activation, T=T, feedback=feedback)


def initial_samples(data: DataConfig, key: jax.Array, n: int | None = None) -> jax.Array:
    """Samples (n, 1) of the 1-D initial law of ``data`` (uniform on [low, high] or Gaussian)."""
    n = data.particles if n is None else n
    if data.kind in ("uniform", "vehicles"):
        return jax.random.uniform(key, (n, 1), minval=data.low, maxval=data.high)
    if data.kind == "gaussian":
        return data.mean + data.std * jax.random.normal(key, (n, 1))
    raise ConfigError(f"data.kind: got {data.kind!r}; allowed: uniform, vehicles or gaussian (a 1-D initial "
                      "law)")


def uniform_raw_moments(low: float, high: float, order: int = 2) -> jnp.ndarray:
    """Raw moments [1, m1, …] of U[low, high]: m_k = (high^{k+1} − low^{k+1}) / ((k + 1)(high − low))."""
    width = high - low
    return jnp.array([(high ** (k + 1) - low ** (k + 1)) / ((k + 1) * width) for k in range(order + 1)])


def cdf_at_faces(f, grid) -> np.ndarray:
    """F(x_{i−1/2}) = ∫_{lo}^{x_{i−1/2}} f for cell averages f on a Grid1D, shape (n + 1,)."""
    return np.concatenate([[0.0], np.cumsum(np.asarray(f)) * grid.dx])


def empirical_cdf_at_faces(x, grid) -> np.ndarray:
    """The empirical CDF of samples x at the faces of a Grid1D."""
    xs = np.sort(np.asarray(x).ravel())
    return np.searchsorted(xs, np.asarray(grid.faces), side="right") / xs.size


def w1_between_cdfs(F, G, grid) -> float:
    """W1 = ∫ |F − G| dx in 1-D, by the trapezoidal rule on the faces."""
    d = np.abs(np.asarray(F) - np.asarray(G))
    return float(np.sum(0.5 * (d[1:] + d[:-1])) * grid.dx)


def optimizer_from_config(cfg: ExperimentConfig):
    """The optimiser of ``cfg.training``: optax Adam or SGD at the learning rate, or ``"lbfgs"`` for fit."""
    t = cfg.training
    if t.optimizer == "lbfgs":
        return "lbfgs"
    return {"adam": optax.adam, "sgd": optax.sgd}[t.optimizer](t.learning_rate)
