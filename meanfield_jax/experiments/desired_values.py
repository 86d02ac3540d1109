"""Fig. 2 of the main paper: energy and variance driven to desired values by a closed-form (w, b).

Identity activation, data U[low, high] with m0 = 1, μ0 = (low + high)/2, V0 = (high − low)²/12 and energy
E0 = m2 = V0 + μ0² (28 for U[2, 8]). For a desired variance V_d and energy E_d at time T the mean must reach
μ_d = sqrt(E_d − V_d), and (MODEL.md §4.4)

    w = ln(V_d / V0) / (2T)                      since V(t) = V0 e^{2wt} whatever the bias,
    b with μ(T) = μ_d for μ' = a μ + b,          a = w (constant bias) or a = w + β (bias b + β m1/m0).

The exact moment ODE then reaches V_d and E_d at T up to round-off. The ResNet (explicit Euler, step Δt)
moves the sample moments by the discrete recursions V_l = V̂0 (1 + Δt w)^{2l} and
μ_l = (1 + Δt a)^l (μ̂0 + b/a) − b/a, so against the moment ODE started from the same sample moments
(see :mod:`.euler_error`, δ_w the growth defect, D_a the affine-flow bound)

    |ΔV| ≤ 2 δ_w V̂0 e^{2wt},   |Δμ| ≤ D_a(μ̂0, t),   |ΔE| ≤ |ΔV| + |Δμ| (2|μ(t)| + |Δμ|),

and the error is first order in Δt (checked by halving Δt).
"""

from __future__ import annotations

import math

import numpy as np

from ..closed_forms import desired_mean_bias, desired_variance_weight
from ..config import ConfigError, ExperimentConfig
from ..moments import moment_ode, particle_moments
from ..particles import resnet_forward
from ..plotting_figures import desired_value_panels
from .base import ExperimentResult, Logger, make_key, round_off, stage
from .common import field_from_config, initial_samples, uniform_raw_moments
from .euler_error import affine_flow_error_bound, growth_defect, observed_order
from .particle_setup import require_activation, save_stride

__all__ = ["run_desired_values"]

# the exact moment ODE must reach the targets to this relative accuracy (float64 round-off of a few exp/log)
EXACT_RTOL = 1e-9
# the measured order of the Euler error must be 1 to within O(Δt)-effects and this margin
ORDER_TOL = 0.1


def _targets(cfg: ExperimentConfig) -> tuple[float, float]:
    Vd, Ed = cfg.target.variance, cfg.target.energy
    if Vd is None or Ed is None:
        raise ConfigError(f"target.variance and target.energy: got {Vd!r} and {Ed!r}; allowed: two numbers "
                          "> 0 (the desired variance and energy m2 at time T)")
    if Ed <= Vd:
        raise ConfigError(f"target.energy: got {Ed!r}; allowed: a number > target.variance = {Vd!r} "
                          "(E = V + μ², so the mean must reach μ_d = sqrt(E_d − V_d))")
    if cfg.data.kind != "uniform":
        raise ConfigError(f"data.kind: got {cfg.data.kind!r}; allowed: uniform (the closed-form parameters "
                          "use the moments of U[low, high])")
    return Vd, Ed


def moment_error_bounds(w: float, b: float, beta: float, m_start, ts, dt: float):
    """Bounds on |V_ResNet − V| and |E_ResNet − E| at times ts for the moments m_start = [1, m1, m2]."""
    mu0 = float(m_start[1])
    V0 = float(m_start[2]) - mu0**2
    a = w + beta
    dV = 2.0 * growth_defect(w, ts, dt) * V0 * np.exp(2.0 * w * ts)
    dmu = affine_flow_error_bound(a, b, mu0, ts, dt)
    mu = np.asarray(moment_ode(w, b, np.asarray(m_start[:2]), ts, feedback=beta))[:, 1]
    return dV, dV + dmu * (2.0 * np.abs(mu) + dmu)


def moment_curves(field, x0, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Times t_k and the particle moments [1, m1, m2] (k, 3) of the ResNet, every ``stride`` layers."""
    traj = resnet_forward(field, x0, save_every=stride)[..., 0]  # (k, n)
    return np.arange(traj.shape[0]) * stride * field.dt, np.asarray(particle_moments(traj.T, 2)).T


def _energy_and_variance(m) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(m)
    return m[..., 2], m[..., 2] - m[..., 1] ** 2


def run_desired_values(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 2: E(t), V(t) of the ResNet and of the moment ODE reaching (E_d, V_d) at T, two bias models."""
    require_activation(cfg, ("identity",), "the moment closed forms hold for σ(z) = z")
    Vd, Ed = _targets(cfg)
    result = ExperimentResult()
    T, L = cfg.model.T, cfg.model.layers
    law = np.asarray(uniform_raw_moments(cfg.data.low, cfg.data.high, 2))
    mu0, V0 = law[1], law[2] - law[1] ** 2
    mud = math.sqrt(Ed - Vd)
    w = float(desired_variance_weight(V0, Vd, T))
    beta = -1.0 if cfg.model.feedback is None else cfg.model.feedback
    x0 = initial_samples(cfg.data, make_key(cfg.seed), n=min(cfg.data.particles, 2000) if cfg.quick else None)
    panels = {}
    for i, (case, fb) in enumerate((("constant", None), ("feedback", beta)), start=1):
        b = float(desired_mean_bias(w + (fb or 0.0), mu0, mud, T))
        stage(log, i, 2, f"{case} bias: w = {w:.6g}, b = {b:.6g}" + ("" if fb is None else f", β = {fb:g}"))
        field = field_from_config(cfg.model, feedback=fb, W=[[w]], b=[b])
        ts, m_particles = moment_curves(field, x0, save_stride(L))
        E_exact, V_exact = _energy_and_variance(moment_ode(w, b, law, ts, feedback=fb))
        result.check(f"{case}_exact_variance_at_T_rel", V_exact[-1] / Vd - 1.0, 0.0, EXACT_RTOL)
        result.check(f"{case}_exact_energy_at_T_rel", E_exact[-1] / Ed - 1.0, 0.0, EXACT_RTOL)

        E_p, V_p = _energy_and_variance(m_particles)
        E_ode, V_ode = _energy_and_variance(moment_ode(w, b, m_particles[0], ts, feedback=fb))
        dV, dE = moment_error_bounds(w, b, fb or 0.0, m_particles[0], ts[-1:], field.dt)
        # the bounds are sharp to leading order: allow the round-off of L updates on top
        result.check(f"{case}_resnet_variance_at_T_vs_moment_ode", V_p[-1] - V_ode[-1], 0.0,
                     dV[0] + round_off(L) * V_ode[-1])
        result.check(f"{case}_resnet_energy_at_T_vs_moment_ode", E_p[-1] - E_ode[-1], 0.0,
                     dE[0] + round_off(L) * E_ode[-1])
        fine = field_from_config(cfg.model, feedback=fb, W=[[w]], b=[b], layers=2 * L)
        E_fine, _ = _energy_and_variance(particle_moments(resnet_forward(fine, x0)[:, 0], 2))
        result.check(f"{case}_energy_error_order", observed_order(abs(E_p[-1] - E_ode[-1]),
                                                                  abs(E_fine - E_ode[-1])), 1.0, ORDER_TOL)
        result.metrics[case] = {"w": w, "b": b, "feedback": fb, "resnet_E_T": float(E_p[-1]),
                                "resnet_V_T": float(V_p[-1]), "exact_E_T": float(E_exact[-1]),
                                "exact_V_T": float(V_exact[-1])}
        panels[case] = (ts, E_p, V_p, E_exact, V_exact, w, b, fb)
    result.metrics["targets"] = {"variance": Vd, "energy": Ed, "mean": mud}
    result.figures["fig2_desired_values"] = desired_value_panels(
        panels, Ed, Vd, f" at T = {T:g}; data U[{cfg.data.low:g}, {cfg.data.high:g}], "
        f"{x0.shape[0]} particles, {L} layers")
    return result
