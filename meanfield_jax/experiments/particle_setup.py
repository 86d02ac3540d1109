"""Set-up checks shared by the experiments (scalar parameters, activations, data, grid and scheme the
experiment's exact solutions need), each a ConfigError naming the key before anything is computed, and save
strides."""

from __future__ import annotations

import numpy as np

from ..config import ConfigError, ExperimentConfig

__all__ = [
    "require_activation", "require_data_inside", "require_domain", "require_regression_data",
    "require_scheme", "require_uniform_data", "save_stride", "scalar_parameters",
]


def scalar_parameters(cfg: ExperimentConfig) -> tuple[float, float]:
    """(w, b) of a 1-D model with constant weight and bias; a ConfigError for anything else."""
    W, b = np.asarray(cfg.model.W, dtype=float), np.asarray(cfg.model.b, dtype=float)
    if W.size != 1 or b.size != 1:
        raise ConfigError(f"model.W and model.b: got W={cfg.model.W!r}, b={cfg.model.b!r}; allowed: one "
                          f"scalar weight and bias for experiment {cfg.experiment!r}, e.g. W: [[1.0]], "
                          "b: [-5.0]")
    return float(W.ravel()[0]), float(b.ravel()[0])


def require_activation(cfg: ExperimentConfig, allowed: tuple[str, ...], why: str) -> str:
    """The model's activation if it is one of ``allowed`` (the closed forms need it); else a ConfigError."""
    if cfg.model.activation not in allowed:
        raise ConfigError(f"model.activation: got {cfg.model.activation!r}; allowed: {' or '.join(allowed)} "
                          f"({why})")
    return cfg.model.activation


def require_domain(cfg: ExperimentConfig, dims: int) -> list:
    """``solver.domain`` if it has ``dims`` [lo, hi] pairs (the experiment's grid); else a ConfigError."""
    domain = cfg.solver.domain
    if domain is None or len(domain) != dims:
        example = "[[-6.0, 10.0]]" if dims == 1 else "[[-3.0, 3.0], [-3.0, 3.0]]"
        raise ConfigError(f"solver.domain: got {domain!r}; allowed: {dims} [lo, hi] pair{'s' * (dims > 1)}, "
                          f"the {dims}-D grid of experiment {cfg.experiment!r}, e.g. {example}")
    return domain


def require_data_inside(cfg: ExperimentConfig, domain: list) -> None:
    """[data.low, data.high] must lie in each [lo, hi] of ``domain`` (the grid the PDE's initial density is
    put on; outside it the density was cut, and the run ended in NaN checks after its work)."""
    low, high = cfg.data.low, cfg.data.high
    for lo, hi in domain:
        if not (lo <= low and high <= hi):
            raise ConfigError(f"data.low, data.high: got [{low}, {high}]; allowed: a range inside the grid's "
                              f"[{lo}, {hi}] (solver.domain {domain!r})")


def require_regression_data(cfg: ExperimentConfig) -> None:
    """The regression cloud x ~ U[low, high], y = x + noise ε, with noise > 0 (the experiment divides by it:
    a Gaussian's width, an OLS covariance; 0 failed in the figure's Cholesky factor after the whole run)."""
    if cfg.data.kind != "regression":
        raise ConfigError(f"data.kind: got {cfg.data.kind!r}; allowed: regression (x ~ U[low, high], "
                          "y = x + noise ε)")
    if not cfg.data.noise > 0:
        raise ConfigError(f"data.noise: got {cfg.data.noise!r}; allowed: a number > 0 (experiment "
                          f"{cfg.experiment!r} divides by it)")


def require_scheme(cfg: ExperimentConfig, schemes: tuple[str, ...], equation: str) -> str:
    """``solver.scheme`` if it is one of ``schemes`` (those of the equation solved); else a ConfigError."""
    if cfg.solver.scheme not in schemes:
        raise ConfigError(f"solver.scheme: got {cfg.solver.scheme!r}; allowed: one of {', '.join(schemes)} "
                          f"(the {equation} schemes of experiment {cfg.experiment!r})")
    return cfg.solver.scheme


def require_uniform_data(cfg: ExperimentConfig) -> None:
    """The experiment starts the PDE and the particles from U[low, high]; a ConfigError for other data."""
    if cfg.data.kind not in ("uniform", "vehicles"):
        raise ConfigError(f"data.kind: got {cfg.data.kind!r}; allowed: uniform or vehicles (experiment "
                          f"{cfg.experiment!r} starts the PDE and the particles from U[low, high])")


def save_stride(num_layers: int, points: int = 100) -> int:
    """The largest divisor k of ``num_layers`` with k ≤ num_layers/points (at least 1): save every k."""
    stride = max(1, num_layers // points)
    while num_layers % stride:
        stride -= 1
    return stride
