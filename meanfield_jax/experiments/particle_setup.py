"""Set-up shared by the particle experiments: scalar parameters, required activations, save strides."""

from __future__ import annotations

import numpy as np

from ..config import ConfigError, ExperimentConfig

__all__ = ["require_activation", "save_stride", "scalar_parameters"]


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


def save_stride(num_layers: int, points: int = 100) -> int:
    """The largest divisor k of ``num_layers`` with k ≤ num_layers/points (at least 1): save every k."""
    stride = max(1, num_layers // points)
    while num_layers % stride:
        stride -= 1
    return stride
