"""Fig. 9 of the main paper: the Fokker–Planck model, identity activation, w = −1, b = 0, K = 1.

∂_t f + ∂_x((w x + b) f) = K ∂²_x f relaxes to N(−b/w, −K/w) = N(0, 1), with the exact transient laws
m1(t) = e^{−t} m1(0) and V(t) = 1 + (V0 − 1) e^{−2t} (MODEL.md §6.3). The Chang–Cooper solution is compared
with them, with the stochastic ResNet (Euler–Maruyama particles), and the direct steady-state solve
with the exact Gaussian. "Training replaced by fitting distributions": for a target N(μ, s²) the parameters
w = −K/s², b = K μ/s² make the steady state the target (MODEL.md §6.4).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from ..config import ConfigError, ExperimentConfig
from ..fokker_planck import SCHEMES as FOKKER_PLANCK_SCHEMES
from ..fokker_planck import fokker_planck_steady_state, solve_fokker_planck
from ..grid import Grid1D
from ..moments import moment_ode, moments, particle_moments
from ..particles import resnet_forward
from ..plotting import density_snapshots, new_figure
from .base import ExperimentResult, Logger, make_key, round_off, stage
from .common import cdf_at_faces, empirical_cdf_at_faces, field_from_config, initial_samples, w1_between_cdfs
from .particle_setup import (
    require_activation,
    require_data_inside,
    require_domain,
    require_scheme,
    require_uniform_data,
    scalar_parameters,
)

__all__ = ["run_fokker_planck"]


def _gaussian_cells(grid: Grid1D, mean: float, std: float) -> jnp.ndarray:
    """Exact cell averages of N(mean, std²)."""
    return jnp.diff(ndtr((grid.faces - mean) / std)) / grid.dx


def run_fokker_planck(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 9: transient and steady state of the Fokker–Planck model; fitting a Gaussian target."""
    result = ExperimentResult()
    require_activation(cfg, ("identity",), "the exact moment laws and steady state are those of w x + b")
    require_uniform_data(cfg)
    require_scheme(cfg, FOKKER_PLANCK_SCHEMES, "Fokker–Planck")
    (lo, hi), cells = require_domain(cfg, 1)[0], cfg.solver.cells
    require_data_inside(cfg, cfg.solver.domain)
    w, b = scalar_parameters(cfg)
    K = cfg.model.diffusion
    if not w < 0:
        raise ConfigError(f"model.W: got {cfg.model.W!r}; allowed: a weight w < 0 (the steady state "
                          "N(-b/w, -K/w) exists only then)")
    if not K > 0:
        raise ConfigError(f"model.diffusion: got {K!r}; allowed: a number > 0 (the steady state "
                          "N(-b/w, -K/w) is that of a diffusion)")
    grid = Grid1D(lo, hi, max(cells // 4, 2) if cfg.quick else cells)
    field = field_from_config(cfg.model)
    T = cfg.model.T
    shown = np.asarray(cfg.solver.save_at if cfg.solver.save_at is not None else [0.0, T])
    save = np.union1d(np.linspace(0.0, T, 51), shown)
    low, high = cfg.data.low, cfg.data.high
    f0 = jnp.diff(jnp.clip((grid.faces - low) / (high - low), 0.0, 1.0)) / grid.dx

    stage(log, 1, 4, f"Fokker–Planck solve on {grid.n} cells ({cfg.solver.scheme}, {cfg.solver.method})")
    sol = solve_fokker_planck(field, f0, grid, diffusion=K, save_at=save, scheme=cfg.solver.scheme,
                              method=cfg.solver.method, cfl=cfg.solver.cfl)
    m = np.asarray(moments(sol.f, grid, order=2)).T  # (k, 3)
    exact = np.asarray(moment_ode(w, b, m[0], save, diffusion=K))
    var_h, var_exact = m[:, 2] / m[:, 0] - (m[:, 1] / m[:, 0]) ** 2, exact[:, 2] - exact[:, 1] ** 2
    # Chang–Cooper is second order in Δx (midpoint moments of the exponentially fitted flux); the time
    # error of the (explicit or implicit) first-order-accurate stepping is ≤ Δt ∫|u''| ≈ Δt max|u'| per moment
    dt_eff = T / max(int(sol.num_steps), 1)
    tol_space = 2.0 * grid.dx**2 + 0.05 * grid.dx
    mean_rate = abs(w) * abs(exact[0, 1] + b / w) if w else abs(b)
    var_rate = 2.0 * abs(w) * abs(var_exact[0] + K / w) if w else 2.0 * K
    result.check("mean_law_max_abs_error", np.max(np.abs(m[:, 1] / m[:, 0] - exact[:, 1])), 0.0,
                 tol_space + 4.0 * dt_eff * mean_rate)
    result.check("variance_law_max_abs_error", np.max(np.abs(var_h - var_exact)), 0.0,
                 tol_space + 4.0 * dt_eff * var_rate)
    result.check("mass_conservation", np.max(np.abs(np.asarray(sol.mass()) - 1.0)), 0.0,
                 round_off(int(sol.num_steps)))
    result.check("min_density", min(float(np.min(sol.f)), 0.0), 0.0, 1e-7)

    stage(log, 2, 4, "direct steady-state solve")
    mean_inf, std_inf = -b / w, float(np.sqrt(-K / w))
    f_inf = fokker_planck_steady_state(field, grid, diffusion=K)
    l1_inf = float(grid.integrate(jnp.abs(f_inf - _gaussian_cells(grid, mean_inf, std_inf))))
    result.check("steady_state_l1_to_exact_gaussian", l1_inf, 0.0, grid.dx**2)
    l1_T = float(grid.integrate(jnp.abs(sol.f[-1] - f_inf)))
    decay = abs(exact[0, 1] - mean_inf) * np.exp(w * T) + abs(var_exact[0] - std_inf**2) * np.exp(2 * w * T)
    result.check("solution_at_T_l1_to_steady_state", l1_T, 0.0, 2.0 * decay / std_inf + grid.dx)

    stage(log, 3, 4, "stochastic ResNet (Euler–Maruyama)")
    n = min(cfg.data.particles, 20_000) if cfg.quick else cfg.data.particles
    x0 = initial_samples(cfg.data, make_key(cfg.seed), n=n)
    xT = resnet_forward(field, x0, diffusion=K, key=make_key(cfg.seed + 1))
    pm = np.asarray(particle_moments(xT[:, 0], 2))
    var_T = float(exact[-1, 2] - exact[-1, 1] ** 2)
    euler = field.dt * (abs(w) * abs(exact[-1, 1]) + abs(w) * var_T + K)  # O(Δt) bias of Euler–Maruyama
    result.check("particles_mean_at_T", pm[1], exact[-1, 1], 4.0 * np.sqrt(var_T / n) + euler)
    result.check("particles_variance_at_T", pm[2] - pm[1] ** 2, var_T, 4.0 * var_T * np.sqrt(2.0 / n) + euler)
    w1 = w1_between_cdfs(empirical_cdf_at_faces(xT, grid), cdf_at_faces(sol.f[-1], grid), grid)
    result.check("w1_particles_vs_pde", w1, 0.0, 3.0 * std_inf / np.sqrt(n) * 2 + euler + grid.dx)

    stage(log, 4, 4, "fitting a Gaussian target by the steady state")
    mu_t = cfg.target.mean if cfg.target.mean is not None else 1.0
    s_t = cfg.target.std if cfg.target.std is not None else 0.5
    w_fit, b_fit = -K / s_t**2, K * mu_t / s_t**2
    fitted = field_from_config(cfg.model, W=[[w_fit]], b=[b_fit])
    f_fit = fokker_planck_steady_state(fitted, grid, diffusion=K)
    target = _gaussian_cells(grid, mu_t, s_t)
    result.check("fitted_steady_state_l1_to_target", float(grid.integrate(jnp.abs(f_fit - target))), 0.0,
                 4.0 * (grid.dx / s_t) ** 2)
    result.metrics.update({"cells": grid.n, "steps": int(sol.num_steps), "particles": n,
                           "fitted_w": w_fit, "fitted_b": b_fit, "w1_particles_pde": w1,
                           "steady_state_l1": l1_inf})

    fig, axes = new_figure(ncols=3, width=4.6)
    idx = [int(np.argmin(np.abs(save - t))) for t in shown]
    density_snapshots(np.asarray(grid.x), save[idx], np.asarray(sol.f)[idx], ax=axes[0],
                      title=f"Fokker–Planck, σ = id, w = {w:g}, b = {b:g}, K = {K:g}")
    axes[0].plot(np.asarray(grid.x), np.asarray(_gaussian_cells(grid, mean_inf, std_inf)), "k--", lw=0.8,
                 label="N(−b/w, −K/w)")
    axes[0].hist(np.asarray(xT).ravel(), bins=80, range=(lo, hi), density=True, color="grey", alpha=0.3,
                 label=f"SDE particles, t = {T:g}")
    axes[0].legend(fontsize=7)
    axes[1].plot(save, var_exact, "k-", label=r"exact $V_\infty + (V_0 - V_\infty)e^{2wt}$")
    axes[1].plot(save, var_h, "o", ms=3, mfc="none", label="PDE")
    axes[1].plot(save, exact[:, 1], "k:", label="exact mean")
    axes[1].plot(save, m[:, 1] / m[:, 0], "s", ms=3, mfc="none", label="PDE mean")
    axes[1].set_xlabel("t")
    axes[1].set_title("mean and variance")
    axes[1].legend(fontsize=7)
    axes[2].plot(np.asarray(grid.x), np.asarray(target), "k--", label=f"target N({mu_t:g}, {s_t:g}²)")
    axes[2].plot(np.asarray(grid.x), np.asarray(f_fit), color="tab:red",
                 label=f"steady state, w = {w_fit:.3g}, b = {b_fit:.3g}")
    axes[2].set_xlim(mu_t - 5 * s_t, mu_t + 5 * s_t)
    axes[2].set_title("fitting a distribution")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    result.figures["fig9_fokker_planck"] = fig
    return result
