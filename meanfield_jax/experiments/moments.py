"""Figs. 1–2 of the main paper: the moments of the data for identity activation.

Fig. 1: w = −1 with b = 0 (left) and with the feedback bias b = β m1(t)/m0, β = −1 (right). The particle
ResNet's moments are compared with the exact moment ODE solution (MODEL.md §4): μ(t) = μ0 e^{(w+β)t},
V(t) = V0 e^{2wt}; the ResNet is explicit Euler, so the deviation is O(Δt). With a ``vlasov`` solver section
the moments of the kinetic solution (finite volumes, feedback through the density's own mean) are drawn
and checked too (close to second order in Δx, limited by the jumps of the uniform datum).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..config import ExperimentConfig
from ..grid import Grid1D
from ..moments import moment_ode, moments, particle_moments
from ..particles import resnet_forward
from ..plotting import moment_panels
from ..transport import SCHEMES as TRANSPORT_SCHEMES
from ..transport import solve_vlasov
from .base import ExperimentResult, Logger, make_key, round_off, stage
from .common import field_from_config, initial_samples
from .particle_setup import (
    require_activation,
    require_data_inside,
    require_domain,
    require_scheme,
    scalar_parameters,
)

__all__ = ["run_moments"]


def _particle_moment_curves(field, x0, save_every: int):
    traj = resnet_forward(field, x0, save_every=save_every)  # (k, n, 1)
    m = jnp.stack([particle_moments(x[:, 0], 2) for x in traj])
    ts = np.arange(traj.shape[0]) * field.dt * save_every
    return ts, np.asarray(m)


def _kinetic_moment_curves(cfg: ExperimentConfig, field, ts: np.ndarray) -> tuple[np.ndarray, float]:
    """Moments of the Vlasov solution from the uniform law at the times ``ts``, and the cell size."""
    (lo, hi), cells = require_domain(cfg, 1)[0], cfg.solver.cells
    grid = Grid1D(lo, hi, max(cells // 4, 2) if cfg.quick else cells)
    low, high = cfg.data.low, cfg.data.high
    f0 = jnp.diff(jnp.clip((grid.faces - low) / (high - low), 0.0, 1.0)) / grid.dx
    s = cfg.solver
    sol = solve_vlasov(field, f0, grid, save_at=ts, scheme=s.scheme, limiter=s.limiter, cfl=s.cfl,
                       boundary=s.boundary, time_stepper=s.time_stepper)
    return np.asarray(moments(sol.f, grid, order=2)).T, grid.dx


def run_moments(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 1: m0, m1, m2 of particles vs the exact moment ODE, without and with feedback bias."""
    result = ExperimentResult()
    require_activation(cfg, ("identity",), "the exact moment laws are those of the drift w x + b")
    w, b = scalar_parameters(cfg)
    if cfg.solver.kind == "vlasov":
        require_data_inside(cfg, require_domain(cfg, 1))
        require_scheme(cfg, TRANSPORT_SCHEMES, "Vlasov")
    x0 = initial_samples(cfg.data, make_key(cfg.seed), n=min(cfg.data.particles, 2000) if cfg.quick else None)
    beta = -1.0 if cfg.model.feedback is None else cfg.model.feedback
    save_every = max(1, cfg.model.layers // 100)
    while cfg.model.layers % save_every:
        save_every -= 1
    panels = {}
    kinetic = cfg.solver.kind == "vlasov"
    for i, (case, fb) in enumerate((("b0", None), ("feedback", beta)), start=1):
        what = f"{'particles, PDE' if kinetic else 'particles'} and exact moments"
        stage(log, i, 2, f"{what}, {'b = 0' if fb is None else f'feedback β = {fb}'}")
        field = field_from_config(cfg.model, feedback=fb)
        ts, m_particles = _particle_moment_curves(field, x0, save_every)
        m_exact = np.asarray(moment_ode(w, b, m_particles[0], ts, feedback=fb))
        m_pde = None
        if kinetic:
            m_pde, dx = _kinetic_moment_curves(cfg, field, ts)
            exact_pde = np.asarray(moment_ode(w, b, m_pde[0], ts, feedback=fb))
            deviation = np.max(np.abs(m_pde - exact_pde) / np.max(np.abs(exact_pde), axis=0))
            # MUSCL moments of the uniform datum: measured order ≈ 1.7 (second order away from the jumps)
            result.check(f"{case}_pde_max_rel_deviation_from_closed_form", deviation, 0.0,
                         2 * dx**2 + 0.01 * dx)
            result.check(f"{case}_pde_mass", m_pde[-1, 0], m_pde[0, 0], round_off(10 * field.num_layers))
        panels[case] = (ts, m_particles, m_exact, fb, m_pde)
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
