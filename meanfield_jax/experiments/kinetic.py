"""The mean-field (Vlasov) figures of the main paper, solved by finite volumes next to the particle ResNet.

* Fig. 4 (``vehicles_kinetic``): tanh, w = 1, b = −5, f0 uniform on [2, 8]: x* = 5 repels, the mass left of
  5 stays 1/2, and the density follows the exact push-forward F(t, x) = F0(X_{−t}(x)).
* Fig. 7 (``regression_1d``): identity, w = 1, b = −1: X_t = e^t x0 + 1 − e^t, so the model is the regressor
  x ↦ e^t x + (1 − e^t); the uniform density stretches and stays uniform.
* Fig. 6 (``regression_2d``): identity, W = diag(1, −1), b = (−1, 0) on the regression cloud: the density's
  least-squares line has slope e^{−2t} and intercept e^{−t} − e^{−2t} (MODEL.md §7.3).

Each compares the PDE with the exact solution and with the ResNet on many particles (the mean-field limit:
their W1 distance is O(Δt) + O(Δx) + O(n^{−1/2})).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..characteristics import characteristic
from ..config import ConfigError, ExperimentConfig
from ..data import regression_cloud
from ..grid import Grid1D, Grid2D
from ..moments import moments
from ..particles import resnet_forward
from ..plotting import density_2d_panels, density_snapshots, new_figure
from ..transport import SCHEMES as TRANSPORT_SCHEMES
from ..transport import solve_vlasov
from .base import ExperimentResult, Logger, make_key, round_off, stage
from .common import (
    cdf_at_faces,
    empirical_cdf_at_faces,
    field_from_config,
    initial_samples,
    w1_between_cdfs,
)
from .particle_setup import (
    require_activation,
    require_data_inside,
    require_domain,
    require_regression_data,
    require_scheme,
    require_uniform_data,
    scalar_parameters,
)
from .regression import flow_coefficients
from .vehicles import repelling_parameters

__all__ = ["run_regression_1d", "run_regression_2d", "run_vehicles_kinetic"]


def _grid_1d(cfg: ExperimentConfig) -> Grid1D:
    (lo, hi), cells = require_domain(cfg, 1)[0], cfg.solver.cells
    return Grid1D(lo, hi, max(cells // 4, 2) if cfg.quick else cells)


def _save_times(cfg: ExperimentConfig) -> np.ndarray:
    return np.asarray(cfg.solver.save_at if cfg.solver.save_at is not None else [0.0, cfg.model.T])


def _vlasov(cfg: ExperimentConfig, field, f0, grid, save):
    s = cfg.solver
    return solve_vlasov(field, f0, grid, save_at=save, scheme=s.scheme, limiter=s.limiter, cfl=s.cfl,
                        boundary=s.boundary, time_stepper=s.time_stepper)


def _check_1d(cfg: ExperimentConfig, activations: tuple[str, ...]) -> tuple[float, float]:
    """(w, b) of a 1-D kinetic experiment, after the checks of what its exact push-forward needs."""
    require_activation(cfg, activations, "the checks use its exact characteristics")
    require_uniform_data(cfg)
    require_data_inside(cfg, require_domain(cfg, 1))
    require_scheme(cfg, TRANSPORT_SCHEMES, "Vlasov")
    return scalar_parameters(cfg)


def _kinetic_1d(cfg: ExperimentConfig, log: Logger, result: ExperimentResult):
    """Solve the 1-D Vlasov equation from U[low, high], compare with the exact push-forward and particles."""
    w, b = scalar_parameters(cfg)
    act = cfg.model.activation
    low, high = cfg.data.low, cfg.data.high
    grid = _grid_1d(cfg)
    save = _save_times(cfg)
    field = field_from_config(cfg.model)
    # exact cell averages of U[low, high]: differences of its CDF at the faces
    def cdf0(x):
        return jnp.clip((x - low) / (high - low), 0.0, 1.0)

    f0 = jnp.diff(cdf0(grid.faces)) / grid.dx
    stage(log, 1, 3, f"Vlasov solve on {grid.n} cells ({cfg.solver.scheme}, {cfg.solver.limiter})")
    sol = _vlasov(cfg, field, f0, grid, save)
    exact_cdf = np.stack([np.asarray(cdf0(characteristic(act, w, b, grid.faces, -t))) for t in save])
    exact = np.diff(exact_cdf, axis=1) / grid.dx
    cdfs = np.stack([cdf_at_faces(f, grid) for f in sol.f])
    # W1 distances are reported relative to the width of the support at T, so that one tolerance fits
    # contracting and stretching flows; the PDE's CDF error is O(Δx) for discontinuous data
    width = float(np.ptp(np.asarray(characteristic(act, w, b, jnp.array([low, high]), float(save[-1])))))
    l1_cdf = max(w1_between_cdfs(F, G, grid) for F, G in zip(cdfs, exact_cdf)) / width
    result.check("cdf_l1_vs_characteristics_rel", l1_cdf, 0.0, 0.5 * grid.dx / (high - low))
    lost = float(np.max(np.abs(np.asarray(sol.total_mass()) - 1.0)))
    result.check("mass_conservation_with_outflow", lost, 0.0, round_off(int(sol.num_steps)))
    result.check("min_density", min(float(np.min(sol.f)), 0.0), 0.0, 1e-7)

    stage(log, 2, 3, "particle ResNet on the same data")
    n = min(cfg.data.particles, 20_000) if cfg.quick else cfg.data.particles
    x0 = initial_samples(cfg.data, make_key(cfg.seed), n=n)
    xT = resnet_forward(field_from_config(cfg.model, T=float(save[-1])), x0)
    w1 = w1_between_cdfs(empirical_cdf_at_faces(xT, grid), cdfs[-1], grid) / width
    # Euler O(Δt) + PDE O(Δx) + sampling O(n^{-1/2}), all relative to the support width
    bound = field.dt + grid.dx / (high - low) + 2.0 / np.sqrt(n)
    result.check("w1_particles_vs_pde_rel", w1, 0.0, bound)
    result.metrics.update({"cells": grid.n, "particles": n, "steps": int(sol.num_steps),
                           "w1_particles_pde": w1})
    stage(log, 3, 3, "figures")
    return grid, save, sol, exact, xT


def run_vehicles_kinetic(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 4: the kinetic classifier (tanh, w = 1, b = −5) from the uniform law on [2, 8]."""
    result = ExperimentResult()
    _check_1d(cfg, ("tanh", "identity"))
    w, b = repelling_parameters(cfg)
    threshold = -b / w
    grid, save, sol, exact, xT = _kinetic_1d(cfg, log, result)
    face = round((threshold - grid.lo) / grid.dx)
    on_face = abs(grid.lo + face * grid.dx - threshold) < 1e-9 * grid.dx
    left = np.asarray(jnp.sum(sol.f[:, :face], axis=1) * grid.dx)
    leak = np.asarray(sol.outflow[:, 0])  # mass that left through the left wall is still "left of 5"
    expected = float(np.sum(exact[0, :face]) * grid.dx)
    tol = round_off(int(sol.num_steps)) if on_face else grid.dx * float(np.max(exact))
    result.check("mass_left_of_threshold", np.max(np.abs(left + leak - expected)), 0.0, tol)
    result.check("particles_left_of_threshold_fraction", float(np.mean(np.asarray(xT) < threshold)),
                 float(np.mean(np.asarray(initial_samples(cfg.data, make_key(cfg.seed), n=xT.shape[0]))
                               < threshold)), 0.0)
    result.metrics["mass_left_of_threshold"] = left.tolist()
    fig, axes = new_figure(ncols=2)
    density_snapshots(np.asarray(grid.x), save, np.asarray(sol.f), exact=exact, ax=axes[0],
                      title=f"mean-field model, tanh, w = {w:g}, b = {b:g}")
    axes[0].axvline(threshold, color="grey", lw=0.8, ls=":")
    axes[1].hist(np.asarray(xT).ravel(), bins=grid.n // 4, range=(grid.lo, grid.hi), density=True,
                 color="tab:grey", alpha=0.5, label=f"ResNet, {xT.shape[0]} particles")
    axes[1].plot(np.asarray(grid.x), np.asarray(sol.f[-1]), color="tab:red", label="PDE")
    axes[1].set_title(f"t = {save[-1]:g}: particles vs PDE")
    axes[1].set_xlabel("x")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    result.figures["fig4_vehicles_kinetic"] = fig
    return result


def run_regression_1d(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 7: the 1-D regression model (identity, w = 1, b = −1): slope e^t, intercept 1 − e^t."""
    result = ExperimentResult()
    w, b = _check_1d(cfg, ("identity",))
    if b == 0:
        raise ConfigError(f"model.b: got {cfg.model.b!r}; allowed: a bias b != 0 (the intercept, checked "
                          "relative to the exact (b/w)(e^{wt} - 1), is 0 for b = 0)")
    grid, save, sol, exact, _ = _kinetic_1d(cfg, log, result)
    m = np.asarray(moments(sol.f, grid, order=2))
    mean = m[1] / m[0]
    std = np.sqrt(m[2] / m[0] - mean**2)
    slope = std / std[0]  # the affine flow map x ↦ α x + β scales the spread by α
    intercept = mean - slope * mean[0]
    exact_slope, exact_intercept = flow_coefficients(w, b, save)
    # the spread of a cell-averaged uniform law is resolved to O(Δx/(high − low)) (relative)
    tol = 2.0 * grid.dx / (cfg.data.high - cfg.data.low)
    result.check("slope_at_T_rel", slope[-1] / exact_slope[-1] - 1.0, 0.0, tol)
    result.check("intercept_at_T_rel", intercept[-1] / exact_intercept[-1] - 1.0, 0.0, tol)
    result.metrics.update({"slopes": slope.tolist(), "intercepts": intercept.tolist(),
                           "exact_slopes": exact_slope.tolist(),
                           "exact_intercepts": exact_intercept.tolist()})
    fig, axes = new_figure(ncols=len(save), width=3.6)
    for k, (ax, t) in enumerate(zip(axes, save)):
        ax.plot(np.asarray(grid.x), np.asarray(sol.f[k]), color="tab:blue", label="PDE")
        ax.plot(np.asarray(grid.x), exact[k], "k--", lw=0.8, label="exact")
        ends = exact_intercept[k] + exact_slope[k] * np.array([cfg.data.low, cfg.data.high])
        pad = 0.15 * (ends[1] - ends[0])
        ax.set_xlim(max(grid.lo, ends[0] - pad), min(grid.hi, ends[1] + pad))
        ax.set_title(f"t = {t:g}: slope {slope[k]:.3g}, intercept {intercept[k]:.3g}")
        ax.set_xlabel("x")
        ax.legend(fontsize=7)
    fig.suptitle(f"1-D mean-field regression model, σ = id, w = {w:g}, b = {b:g}")
    fig.tight_layout()
    result.figures["fig7_regression_1d"] = fig
    return result


def run_regression_2d(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 6: the 2-D regression model; the density's LS line is y = e^{−2t} x + e^{−t} − e^{−2t}."""
    result = ExperimentResult()
    require_activation(cfg, ("identity",), "the checks use the exact affine flow")
    require_scheme(cfg, TRANSPORT_SCHEMES, "Vlasov")
    require_regression_data(cfg)
    (xlo, xhi), (ylo, yhi) = require_domain(cfg, 2)
    require_data_inside(cfg, cfg.solver.domain)
    if np.shape(cfg.model.W) != (2, 2):
        raise ConfigError(f"model.W, model.b: got W={cfg.model.W!r}, b={cfg.model.b!r}; allowed: a 2×2 "
                          "weight and 2 biases, the same in every layer (the exact affine flow)")
    nx = max(cfg.solver.cells // 4, 8) if cfg.quick else cfg.solver.cells
    ny = nx
    grid = Grid2D((xlo, xhi, nx), (ylo, yhi, ny))
    noise, low, high = cfg.data.noise, cfg.data.low, cfg.data.high
    W, b = np.asarray(cfg.model.W, float), np.asarray(cfg.model.b, float)
    field = field_from_config(cfg.model)
    save = _save_times(cfg)

    def f0_fn(X, Y):
        inside = (X >= low) & (X <= high)
        gauss = jnp.exp(-0.5 * ((Y - X) / noise) ** 2) / (noise * np.sqrt(2 * np.pi))
        return jnp.where(inside, gauss, 0.0) / (high - low)

    stage(log, 1, 3, f"2-D Vlasov solve on {nx}×{ny} cells")
    sol = _vlasov(cfg, field, grid.project(f0_fn), grid, save)
    mom = moments(sol.f, grid, order=2)
    mean, cov = np.asarray(mom["mean"]), np.asarray(mom["covariance"])
    slope = cov[:, 0, 1] / cov[:, 0, 0]
    intercept = mean[:, 1] - slope * mean[:, 0]
    # exact affine flow of mean and covariance: m' = W m + b, C' = W C + C Wᵀ (from the projected f0)
    A = jax.scipy.linalg.expm
    exact_mean, exact_cov = [], []
    for t in save:
        E = np.asarray(A(W * t))
        shift = np.linalg.solve(W, (E - np.eye(2)) @ b) if np.linalg.det(W) != 0 else b * t
        exact_mean.append(E @ mean[0] + shift)
        exact_cov.append(E @ cov[0] @ E.T)
    exact_mean, exact_cov = np.array(exact_mean), np.array(exact_cov)
    s_exact = exact_cov[:, 0, 1] / exact_cov[:, 0, 0]
    c_exact = exact_mean[:, 1] - s_exact * exact_mean[:, 0]
    # the x-marginal is a step function, so moments of the FV solution are first order in the cell size
    tol = 0.5 * max(grid.dx, grid.dy)
    result.check("slope_max_abs_error", np.max(np.abs(slope - s_exact)), 0.0, tol)
    result.check("intercept_max_abs_error", np.max(np.abs(intercept - c_exact)), 0.0, tol)
    result.check("mean_max_abs_error", np.max(np.abs(mean - exact_mean)), 0.0, tol)
    # the paper's closed forms for data around y = x: slope e^{−2t}, intercept e^{−t} − e^{−2t}
    paper_s, paper_c = np.exp(-2 * save), np.exp(-save) - np.exp(-2 * save)
    result.check("slope_vs_exp_minus_2t", np.max(np.abs(slope - paper_s)), 0.0, tol)
    result.check("intercept_vs_closed_form", np.max(np.abs(intercept - paper_c)), 0.0, tol)
    lost = float(np.max(np.abs(np.asarray(sol.total_mass()) - sol.total_mass()[0])))
    result.check("mass_conservation_with_outflow", lost, 0.0, round_off(int(sol.num_steps)))

    stage(log, 2, 3, "particle ResNet on the regression cloud")
    n = min(cfg.data.particles, 5000) if cfg.quick else cfg.data.particles
    cloud = regression_cloud(make_key(cfg.seed), n=n, noise=noise, low=low, high=high)
    xT = np.asarray(resnet_forward(field_from_config(cfg.model, T=float(save[-1])), cloud))
    cT = np.cov(xT.T)
    result.metrics.update({"pde_slopes": slope.tolist(), "pde_intercepts": intercept.tolist(),
                           "exact_slopes": s_exact.tolist(), "exact_intercepts": c_exact.tolist(),
                           "particle_slope_T": float(cT[0, 1] / cT[0, 0]), "grid": [nx, ny]})
    stage(log, 3, 3, "figures")
    result.figures["fig6_regression_2d"] = density_2d_panels(
        grid, save, np.asarray(sol.f), lines=list(zip(slope, intercept)), title="2-D mean-field model,"
    )
    return result
