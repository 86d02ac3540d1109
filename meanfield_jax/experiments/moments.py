"""Figs. 1–2 of the main paper: the moments of the data for identity activation.

Fig. 1: w = −1 with b = 0 (left) and with the feedback bias b = β m1(t)/m0, β = −1 (right). The particle
ResNet's moments are compared with the exact moment ODE solution (MODEL.md §4): μ(t) = μ0 e^{(w+β)t},
V(t) = V0 e^{2wt}; the ResNet is explicit Euler, so the deviation is O(Δt).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..config import ExperimentConfig
from ..moments import moment_ode, particle_moments
from ..particles import resnet_forward
from ..plotting import moment_panels
from .base import ExperimentResult, Logger, make_key, round_off, stage
from .common import field_from_config, initial_samples

__all__ = ["run_moments"]


def _particle_moment_curves(field, x0, save_every: int):
    traj = resnet_forward(field, x0, save_every=save_every)  # (k, n, 1)
    m = jnp.stack([particle_moments(x[:, 0], 2) for x in traj])
    ts = np.arange(traj.shape[0]) * field.dt * save_every
    return ts, np.asarray(m)


def run_moments(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 1: m0, m1, m2 of particles vs the exact moment ODE, without and with feedback bias."""
    result = ExperimentResult()
    x0 = initial_samples(cfg.data, make_key(cfg.seed), n=min(cfg.data.particles, 2000) if cfg.quick else None)
    w, b = float(np.ravel(cfg.model.W)[0]), float(np.ravel(cfg.model.b)[0])
    beta = -1.0 if cfg.model.feedback is None else cfg.model.feedback
    save_every = max(1, cfg.model.layers // 100)
    while cfg.model.layers % save_every:
        save_every -= 1
    panels = {}
    for i, (case, fb) in enumerate((("b0", None), ("feedback", beta)), start=1):
        stage(log, i, 2, f"particles and exact moments, {'b = 0' if fb is None else f'feedback β = {fb}'}")
        field = field_from_config(cfg.model, feedback=fb)
        ts, m_particles = _particle_moment_curves(field, x0, save_every)
        m_exact = np.asarray(moment_ode(w, b, m_particles[0], ts, feedback=fb))
        panels[case] = (ts, m_particles, m_exact, fb)
        scale = np.max(np.abs(m_exact), axis=0)
        deviation = np.max(np.abs(m_particles - m_exact) / scale)
        # explicit Euler: |(1 + Δt a)^k − e^{a t}| ≈ Δt a² t e^{a t}/2, first order with a ~ |w| + |β|
        tol = field.dt * 2.0 * (abs(w) + abs(fb or 0.0))
        result.check(f"{case}_max_rel_deviation_from_closed_form", deviation, 0.0, tol)
        result.check(f"{case}_mass", m_particles[-1, 0], 1.0, round_off())
        var_p = m_particles[:, 2] - m_particles[:, 1] ** 2
        var_discrete = var_p[0] * (1 + field.dt * w) ** (2 * np.arange(len(ts)) * save_every)
        result.check(f"{case}_variance_discrete_law_rel", np.max(np.abs(var_p / var_discrete - 1)), 0.0,
                     round_off(field.num_layers) * 10)
        result.metrics[f"{case}_final_moments_particles"] = m_particles[-1].tolist()
        result.metrics[f"{case}_final_moments_exact"] = m_exact[-1].tolist()
    result.figures["fig1_moments"] = moment_panels(panels, w=w, b=b)
    return result
