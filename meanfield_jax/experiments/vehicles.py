"""Fig. 3 and Table 1 of the main paper: cars and trucks told apart by a one-neuron ResNet.

The ResNet x_{l+1} = x_l + Δt σ(w x_l + b), w > 0, has the repelling equilibrium x* = −b/w (5 m for w = 1,
b = −5): shorter vehicles move left, longer ones right, and no trajectory crosses x*, because the Euler map
x ↦ x + Δt σ(w x + b) is increasing (1 + Δt w σ' > 0) and fixes x*. The class is the side of x* at T,
read off by the output layer tanh(x_T − x*). The exact characteristics (MODEL.md §2.3) are

    tanh:      X_T = (asinh(sinh(w x0 + b) e^{wT}) − b)/w    (5 + asinh(sinh(x0 − 5) e^T) if w = 1, b = −5)
    identity:  X_T = e^{wT} (x0 + b/w) − b/w,

and the ResNet's outputs differ from them by the explicit-Euler error: for tanh, Λ = |w| (σ' ≤ 1) and
|ẍ| = |w σ'(z) σ(z)| ≤ |w| · 2/(3√3), so |X_T − x_L| ≤ (Δt/(3√3)) (e^{|w|T} − 1); for the identity the
affine-flow bound of :mod:`.euler_error`. Halving Δt halves the error (first order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from ..characteristics import characteristic
from ..config import ConfigError, ExperimentConfig
from ..data import TABLE1, classify_vehicles, table1_lengths, vehicle_lengths
from ..particles import resnet_forward
from ..plotting_figures import CLASS_NAMES, classification_table_figure, vehicle_panels
from .base import ExperimentResult, Logger, make_key, stage
from .common import field_from_config
from .euler_error import affine_flow_error_bound, lipschitz_error_bound, observed_order
from .particle_setup import require_activation, scalar_parameters

__all__ = [
    "VehicleClassification", "classify_by_resnet", "repelling_parameters", "run_classification_table",
    "run_vehicles_resnet",
]

# max |σ(z) σ'(z)| for tanh, attained at tanh z = 1/√3
TANH_ACCEL = 2.0 / (3.0 * math.sqrt(3.0))
ORDER_TOL = 0.1


@dataclass(frozen=True)
class VehicleClassification:
    """Trajectories x_l (L + 1, n) of the ResNet, the threshold x*, the exact characteristics X_T (n,) and
    the layer step; the outputs x_T, the scores tanh(x_T − x*) and the predicted classes (0 car, 1 truck)."""

    trajectories: np.ndarray
    threshold: float
    exact: np.ndarray
    dt: float

    @property
    def outputs(self) -> np.ndarray:
        return self.trajectories[-1]

    @property
    def scores(self) -> np.ndarray:
        return np.tanh(self.outputs - self.threshold)

    @property
    def predicted(self) -> np.ndarray:
        return (self.outputs >= self.threshold).astype(int)


def _euler_bound(activation: str, w: float, b: float, x0, T: float, dt: float) -> float:
    if activation == "tanh":
        return float(lipschitz_error_bound(dt, T, abs(w), abs(w) * TANH_ACCEL))
    return float(np.max(affine_flow_error_bound(w, b, x0, T, dt)))


def repelling_parameters(cfg: ExperimentConfig) -> tuple[float, float]:
    """(w, b) of a 1-D classifier whose threshold x* = −b/w repels (w > 0); a ConfigError otherwise."""
    w, b = scalar_parameters(cfg)
    if not w > 0:
        raise ConfigError(f"model.W: got {cfg.model.W!r}; allowed: a weight w > 0 (then x* = -b/w repels and "
                          "separates the classes)")
    return w, b


def classify_by_resnet(cfg: ExperimentConfig, lengths, classes, result: ExperimentResult,
                       log: Logger) -> VehicleClassification:
    """Push ``lengths`` through the config's ResNet and check the classification against ``classes``,
    the invariance of the sides of x*, and the Euler error against the exact characteristics."""
    activation = require_activation(cfg, ("tanh", "identity"), "the checks use their exact characteristics")
    w, b = repelling_parameters(cfg)
    threshold, T = -b / w, cfg.model.T
    x0 = jnp.asarray(lengths, dtype=float)[:, None]
    field = field_from_config(cfg.model)
    stage(log, 1, 2, f"ResNet: {activation}, w = {w:g}, b = {b:g}, {field.num_layers} layers, T = {T:g}")
    run = VehicleClassification(np.asarray(resnet_forward(field, x0, save_every=1)[..., 0]), threshold,
                                np.asarray(characteristic(activation, w, b, x0[:, 0], T)), field.dt)
    result.check("accuracy", np.mean(run.predicted == np.asarray(classes)), 1.0, 0.0)
    side = np.sign(run.trajectories - threshold)
    result.check("trajectories_crossing_threshold", np.sum(np.any(side != side[:1], axis=0)), 0.0, 0.0)
    error = float(np.max(np.abs(run.outputs - run.exact)))
    result.check("max_error_vs_exact_characteristics", error, 0.0,
                 _euler_bound(activation, w, b, x0, T, field.dt))
    stage(log, 2, 2, f"the same with {2 * field.num_layers} layers (order of the Euler error)")
    fine = resnet_forward(field_from_config(cfg.model, layers=2 * field.num_layers), x0)[:, 0]
    error_fine = float(np.max(np.abs(np.asarray(fine) - run.exact)))
    result.check("euler_error_order", observed_order(error, error_fine), 1.0, ORDER_TOL)
    result.metrics.update({"w": w, "b": b, "threshold": threshold, "T": T, "layers": field.num_layers,
                           "max_error_vs_exact": error, "max_error_vs_exact_2L": error_fine})
    return run


def run_vehicles_resnet(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 3: histogram of n vehicle lengths ~ U[low, high] and their trajectories through the layers."""
    if cfg.data.kind not in ("vehicles", "uniform"):
        raise ConfigError(f"data.kind: got {cfg.data.kind!r}; allowed: vehicles (lengths ~ U[low, high])")
    result = ExperimentResult()
    lengths = np.asarray(vehicle_lengths(make_key(cfg.seed), cfg.data.particles, cfg.data.low, cfg.data.high))
    classes = classify_vehicles(lengths, cfg.data.threshold)
    run = classify_by_resnet(cfg, lengths, classes, result, log)
    result.metrics.update({"vehicles": int(lengths.size), "trucks": int(classes.sum()),
                           "lengths": lengths.tolist(), "outputs": run.outputs.tolist()})
    result.figures["fig3_vehicles_resnet"] = vehicle_panels(
        lengths, classes, run, (cfg.data.low, cfg.data.high), cfg.model.activation)
    return result


def run_classification_table(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Table 1: the example rows classified by the ResNet of Fig. 3, as a table figure and metrics."""
    result = ExperimentResult()
    lengths, classes = table1_lengths()
    run = classify_by_resnet(cfg, lengths, classes, result, log)
    rows = [{"length": float(x), "class": TABLE1[i][1], "x_T": float(run.outputs[i]),
             "output": float(run.scores[i]), "predicted": CLASS_NAMES[run.predicted[i]]}
            for i, x in enumerate(lengths)]
    for row in rows:
        log(f"  {row['length']:5.2f} m  {row['class']:6s} x_T = {row['x_T']:8.4f}  "
            f"tanh(x_T − {run.threshold:g}) = {row['output']:+.4f}  → {row['predicted']}")
    result.metrics["table"] = rows
    result.figures["table1_classification"] = classification_table_figure(rows, run, cfg.model.activation)
    return result
