"""Optimal control of the ResNet: the PMP sweep on the reference bimodal problem, and the AutoencODE.

``pmp`` (configs/pmp_bimodal.yaml). The 1-D problem of the mean-field PMP reference code: 100 points around
each centre ±1 (a standard Gaussian truncated to radius 0.2), labels y = ±2, the field tanh(w_l x + b_l) on
L = 10 layers over [0, 1], and the discretised cost (MODEL.md §9, §10)

    J(θ) = (1/n) Σ_i |x_{L,i} − y_i|² + reg Δt Σ_l (w_l² + b_l²).

It is minimised three ways from the same initial field: the PMP forward–backward sweep with the particle
costate (the exact discrete adjoint), the same sweep with the kinetic costate ∂_x ψ of the value function
transported backward on the (x, y) grid of ``solver`` (the reference code's scheme), and a first-order
optimiser (``training``) on J through :func:`~meanfield_jax.training.fit`. The sweep accepts only Armijo
steps, so its cost history never increases; at its limit the Hamiltonian gradient |∇H| vanishes, and the
smallest eigenvalue of ∇²J there tells whether the stationary point is a strict local minimum. Gradient
descent on J reaches the same minimum, and the kinetic costate, a first-order-in-Δx approximation of the
particle one, moves the minimiser by O(Δx) and its cost by O(Δx²).

``autoencoder`` (configs/autoencoder_manifold.yaml). The curve γ(s) = (cos s, sin s, s/3), s ∈ [low, high],
a 1-D manifold in R³, is reconstructed by an AutoencODE with stage widths (3, 2, 1, 2, 3): all information
passes through one coordinate, so the encoder must parametrise the curve by a single number. Training
minimises J = (1/n) Σ_i |x_{L,i} − x_{0,i}|² + reg Δt Σ_l |θ_l|² by the optimiser of ``training`` and, for
comparison, by the PMP sweep. Checks: the components dropped by a narrower stage are exactly zero (masks,
not approximations), the reconstruction error is below 10 % of the data's total variance, and the PMP cost
history never increases. At low Tikhonov weight the cost is not convex, so the smallest Hessian eigenvalue
at the trained model is reported, not checked; it is at most 2 reg Δt, the curvature the inert (masked)
parameters feel from the Tikhonov term alone.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.ticker import FormatStrFormatter

from ..config import ConfigError, ExperimentConfig
from ..control import AutoencODE, bimodal_data, cost, hessian_min_eigenvalue, solve_pmp, train_autoencoder
from ..grid import Grid2D
from ..particles import resnet_forward
from ..plotting import COLOURS, new_figure
from ..training import fit
from .base import ExperimentResult, Logger, make_key, round_off, stage
from .common import field_from_config, optimizer_from_config

__all__ = ["curve_in_r3", "run_autoencoder", "run_pmp"]

# the reference bimodal problem: truncation radius of the Gaussian around each centre, centres and labels
BIMODAL_RADIUS = 0.2
BIMODAL_CENTRES = (-1.0, 1.0)
BIMODAL_LABELS = (-2.0, 2.0)
# PMP forward–backward sweeps (bimodal problem; AutoencODE full / quick)
PMP_SWEEPS = 60
AUTOENCODER_PMP_SWEEPS = (150, 60)
# stage widths of the AutoencODE: R³ → R² → R¹ → R² → R³
WIDTHS = (3, 2, 1, 2, 3)
# in quick mode: at most this many points, optimiser steps, cells on the y axis of the costate grid
QUICK_POINTS = 100
QUICK_STEPS = 300
QUICK_Y_CELLS = 7
# agreement asked of the final costs (PMP vs gradient descent, kinetic vs particle costate) and the largest
# reconstruction error, as a fraction of the total variance of the data
COST_AGREEMENT_RTOL = 0.02
RECONSTRUCTION_FRACTION = 0.1


def _require_deterministic(cfg: ExperimentConfig) -> None:
    """The control problems are posed for the deterministic ResNet without feedback bias."""
    if cfg.model.diffusion != 0.0:
        raise ConfigError(f"model.diffusion: got {cfg.model.diffusion!r}; allowed: 0.0 (the control problem "
                          f"of experiment {cfg.experiment!r} is deterministic)")
    if cfg.model.feedback is not None:
        raise ConfigError(f"model.feedback: got {cfg.model.feedback!r}; allowed: null (the kinetic costate "
                          "and the AutoencODE here have no feedback bias)")


def _require_data(cfg: ExperimentConfig, kind: str, what: str) -> int:
    """The number of points of the data set ``kind`` (reduced in quick mode); a ConfigError otherwise."""
    if cfg.data.kind != kind:
        raise ConfigError(f"data.kind: got {cfg.data.kind!r}; allowed: {kind} ({what})")
    return min(cfg.data.particles, QUICK_POINTS) if cfg.quick else cfg.data.particles


def _max_increase(history) -> float:
    """max_k (J_{k+1} − J_k)⁺: zero exactly when the history never increases."""
    return float(np.max(np.diff(np.asarray(history)), initial=0.0))


def _parameter_distance(a, b) -> float:
    """max |θ_a − θ_b| over the weights and biases of two fields."""
    return float(max(np.max(np.abs(a.W - b.W)), np.max(np.abs(a.b - b.b))))


def _optimizer_steps(cfg: ExperimentConfig) -> int:
    steps = min(cfg.training.steps, QUICK_STEPS) if cfg.quick else cfg.training.steps
    if steps < 1:
        raise ConfigError(f"training.steps: got {cfg.training.steps!r}; allowed: an integer >= 1 (the "
                          "optimiser run compared with the PMP sweep)")
    return steps


# ---- pmp: the reference bimodal problem ------------------------------------------------------------------
def _costate_grid(cfg: ExperimentConfig) -> Grid2D:
    """The (x, y) grid of the kinetic costate from ``solver``; quick mode coarsens the y axis, on which the
    discrete ∂_x ψ is exactly linear (so bilinear interpolation in y loses nothing)."""
    s = cfg.solver
    if s.kind != "vlasov" or s.scheme != "upwind":
        raise ConfigError(f"solver.kind, solver.scheme: got {s.kind!r}, {s.scheme!r}; allowed: vlasov, "
                          "upwind (the kinetic costate is the first-order upwind backward transport of ψ)")
    if s.domain is None or len(s.domain) != 2:
        raise ConfigError(f"solver.domain: got {s.domain!r}; allowed: two [lo, hi] pairs, the x and y ranges "
                          "of the costate grid, e.g. [[-7.0, 7.0], [-7.0, 7.0]]")
    (xlo, xhi), (ylo, yhi) = s.domain
    if not (ylo < min(BIMODAL_LABELS) and max(BIMODAL_LABELS) < yhi):
        raise ConfigError(f"solver.domain: got y range [{ylo}, {yhi}]; allowed: a range containing the "
                          f"labels {BIMODAL_LABELS} in its interior")
    return Grid2D((xlo, xhi, s.cells), (ylo, yhi, QUICK_Y_CELLS if cfg.quick else s.cells))


def _bimodal_problem(cfg: ExperimentConfig):
    n = _require_data(cfg, "bimodal", f"two clusters around {BIMODAL_CENTRES} with labels {BIMODAL_LABELS}")
    if n < 2 or n % 2:
        raise ConfigError(f"data.particles: got {n}; allowed: an even integer >= 2 (two equal clusters)")
    try:
        field = field_from_config(cfg.model)
    except ValueError as exc:
        raise ConfigError(f"model.W, model.b: {exc}") from None
    if field.d != 1:
        raise ConfigError(f"model.W: got {cfg.model.W!r}; allowed: a 1×1 (or L×1×1) weight (the problem "
                          "is 1-D)")
    x, y = bimodal_data(make_key(cfg.seed), n // 2, BIMODAL_RADIUS, BIMODAL_CENTRES, BIMODAL_LABELS)
    return field, x, y


def run_pmp(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """PMP sweep (particle and kinetic costates) vs gradient descent on the reference bimodal problem."""
    _require_deterministic(cfg)
    grid = _costate_grid(cfg)
    reg, steps = cfg.training.reg, _optimizer_steps(cfg)
    field, x, y = _bimodal_problem(cfg)
    result = ExperimentResult()

    stage(log, 1, 3, f"PMP sweep, particle costate: {PMP_SWEEPS} sweeps, {x.shape[0]} points, "
                     f"{field.num_layers} layers, reg = {reg:g}")
    particles = solve_pmp(field, x, y, reg=reg, iterations=PMP_SWEEPS, method="particles", hessian=True)
    stage(log, 2, 3, f"PMP sweep, kinetic costate on {grid.shape[0]}×{grid.shape[1]} cells")
    kinetic = solve_pmp(field, x, y, reg=reg, iterations=PMP_SWEEPS, method="kinetic", grid=grid,
                        cfl=cfg.solver.cfl)
    stage(log, 3, 3, f"{cfg.training.optimizer} on the same cost: {steps} steps")
    fitted = fit(field, lambda f: cost(f, x, y, reg), optimizer=optimizer_from_config(cfg), steps=steps,
                 progress=False)
    J_gd = float(cost(fitted.params, x, y, reg))
    gd_history = np.append(fitted.history, J_gd)

    J_p, J_k = float(particles.history[-1]), float(kinetic.history[-1])
    for name, res in (("particles", particles), ("kinetic", kinetic)):
        result.check(f"pmp_{name}_cost_max_increase", _max_increase(res.history), 0.0, 0.0)
    # |∇H| at a converged sweep is limited by the accuracy of the gradient, ~ sqrt(eps) relative
    residual_rtol = max(1e-6, float(np.sqrt(round_off())))
    result.check("pmp_particles_residual_rel", particles.residual / particles.residual_history[0], 0.0,
                 residual_rtol)
    result.check("pmp_vs_gradient_descent_cost_rel", abs(J_p - J_gd) / J_gd, 0.0, COST_AGREEMENT_RTOL)
    result.check("pmp_kinetic_vs_particles_cost_rel", abs(J_k - J_p) / J_p, 0.0, COST_AGREEMENT_RTOL)
    result.check("hessian_positive_definite_at_pmp_solution", float(particles.hessian_min_eig > 0), 1.0, 0.0)

    trained = np.asarray(resnet_forward(particles.field, x, save_every=1))[..., 0]
    labels = np.asarray(y)[:, 0]
    result.metrics.update({
        "points": int(x.shape[0]), "layers": field.num_layers, "reg": reg, "pmp_sweeps": PMP_SWEEPS,
        "optimizer_steps": steps, "costate_grid": list(grid.shape),
        "cost_initial": float(particles.history[0]), "cost_pmp_particles": J_p, "cost_pmp_kinetic": J_k,
        "cost_gradient_descent": J_gd,
        "residual_particles": particles.residual, "residual_kinetic": kinetic.residual,
        "residual_kinetic_rel": kinetic.residual / float(kinetic.residual_history[0]),
        "hessian_min_eigenvalue": particles.hessian_min_eig,
        "max_parameter_gap_pmp_vs_gradient_descent": _parameter_distance(particles.field, fitted.params),
        "max_parameter_gap_kinetic_vs_particles": _parameter_distance(kinetic.field, particles.field),
        "sign_accuracy": float(np.mean(np.sign(trained[-1]) == np.sign(labels))),
        "weights_pmp": np.asarray(particles.field.W).ravel().tolist(),
        "biases_pmp": np.asarray(particles.field.b).ravel().tolist(),
    })
    before = np.asarray(resnet_forward(field, x, save_every=1))[..., 0]
    result.figures["pmp_bimodal"] = _pmp_figure(
        before, trained, labels, {"PMP, particle costate": particles, "PMP, kinetic costate": kinetic},
        gd_history, f"{cfg.training.optimizer} on J", cfg.model.activation, reg, field.dt
    )
    return result


def _label_trajectories(ax, traj: np.ndarray, labels: np.ndarray, title: str) -> None:
    """x_l against the layer l, one line per point, coloured by its label; the labels dashed."""
    layers = np.arange(traj.shape[0])
    for k, label in enumerate(np.unique(labels)):
        pick = labels == label
        ax.plot(layers, traj[:, pick], color=COLOURS[3 * k], lw=0.6, alpha=0.35)
        ax.plot([], [], color=COLOURS[3 * k], label=f"points with label y = {label:g}".replace("-", "−"))
        ax.axhline(label, color=COLOURS[3 * k], ls="--", lw=1.0)
    ax.set_xlabel("layer l")
    ax.set_ylabel("x$_l$")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def _pmp_figure(before, after, labels, sweeps: dict, gd_history, gd_name: str, activation: str, reg: float,
                dt: float):
    """Trajectories before and after the PMP sweep (top); the cost J and the residual |∇H| per iteration."""
    fig, axes = new_figure(ncols=2, nrows=2, width=5.4, height=4.0)
    L = before.shape[0] - 1
    first = next(iter(sweeps.values()))
    _label_trajectories(axes[0], before, labels, f"initial field, J = {first.history[0]:.4g}")
    _label_trajectories(axes[1], after, labels, f"after the PMP sweep, J = {first.history[-1]:.4g}")
    styles = ("o-", "s--")
    for (name, res), style, colour in zip(sweeps.items(), styles, COLOURS[:2]):
        k = np.arange(res.history.size)
        axes[2].plot(k + 1, res.history, style, ms=3, mfc="none", lw=1.0, color=colour,
                     label=f"{name}, J = {res.history[-1]:.6g}")
        axes[3].plot(k + 1, res.residual_history / res.residual_history[0], style, ms=3, mfc="none", lw=1.0,
                     color=colour, label=name)
    axes[2].plot(np.arange(gd_history.size) + 1, gd_history, color=COLOURS[2], lw=1.2,
                 label=f"{gd_name}, J = {gd_history[-1]:.6g}")
    axes[2].set_ylabel("cost J")
    axes[2].set_title("cost per iteration (sweep or optimiser step)", fontsize=10)
    axes[3].set_ylabel("|∇H| / |∇H|$_0$")
    axes[3].set_title("Hamiltonian gradient (residual of the PMP)", fontsize=10)
    for ax in axes[2:]:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration + 1")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    for axis in (axes[2].yaxis.set_major_formatter, axes[2].yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))  # J spans less than a decade: plain numbers, not 6 × 10⁻¹
    fig.suptitle(f"Mean-field PMP on the bimodal problem: σ = {activation}, {L} layers, Δt = {dt:g}, "
                 f"reg = {reg:g}", fontsize=11)
    fig.tight_layout()
    return fig


# ---- autoencoder: a curve in R³ through a width-1 bottleneck -------------------------------------------
def curve_in_r3(s: jax.Array) -> jax.Array:
    """γ(s) = (cos s, sin s, s/3): a helix arc, shape (n, 3) for parameters s of shape (n,)."""
    return jnp.stack([jnp.cos(s), jnp.sin(s), s / 3.0], axis=1)


def _autoencoder(cfg: ExperimentConfig) -> AutoencODE:
    """The initial AutoencODE: W_l = model.W + N(0, 0.1²), b_l = model.b + N(0, 0.1²), masked per stage."""
    L = cfg.model.layers
    if L % len(WIDTHS):
        raise ConfigError(f"model.layers: got {L}; allowed: a multiple of {len(WIDTHS)} (one equal stage per "
                          f"width of {WIDTHS})")
    W0, b0 = np.asarray(cfg.model.W, dtype=float), np.asarray(cfg.model.b, dtype=float)
    d = max(WIDTHS)
    if W0.shape != (d, d) or b0.shape != (d,):
        raise ConfigError(f"model.W, model.b: got shapes {W0.shape}, {b0.shape}; allowed: ({d}, {d}) and "
                          f"({d},), the mean of the initial W_l, b_l")
    model = AutoencODE(WIDTHS, layers_per_stage=L // len(WIDTHS), T=cfg.model.T,
                       activation=cfg.model.activation, key=make_key(cfg.seed))
    active = jax.vmap(model.active)(jnp.arange(L))
    W = model.W + jnp.asarray(W0)[None] * active[:, :, None] * active[:, None, :]
    return eqx.tree_at(lambda m: (m.W, m.b), model, (W, model.b + jnp.asarray(b0)[None] * active))


def _dropped_components(model: AutoencODE, states: jax.Array) -> float:
    """max |x_{l+1,i,k}| over the components k outside the active set of layer l (they must be 0)."""
    inactive = 1.0 - jax.vmap(model.active)(jnp.arange(model.num_layers))
    return float(jnp.max(jnp.abs(states[1:]) * inactive[:, None, :]))


def run_autoencoder(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """AutoencODE (3, 2, 1, 2, 3) reconstructing a curve in R³; gradient training and the PMP sweep."""
    _require_deterministic(cfg)
    n = _require_data(cfg, "curve", "points on the curve (cos s, sin s, s/3), s evenly spaced in [low, high]")
    if not cfg.data.low < cfg.data.high or n < 2:
        raise ConfigError(f"data.low, data.high, data.particles: got {cfg.data.low}, {cfg.data.high}, {n}; "
                          "allowed: low < high and at least 2 points")
    model = _autoencoder(cfg)
    reg, steps = cfg.training.reg, _optimizer_steps(cfg)
    s = jnp.linspace(cfg.data.low, cfg.data.high, n)
    x = curve_in_r3(s)
    total_variance = float(jnp.sum(jnp.var(x, axis=0)))
    sweeps = AUTOENCODER_PMP_SWEEPS[1] if cfg.quick else AUTOENCODER_PMP_SWEEPS[0]
    result = ExperimentResult()

    stage(log, 1, 3, f"{cfg.training.optimizer} on the reconstruction cost: {steps} steps, {n} points, "
                     f"widths {WIDTHS}, {model.num_layers} layers")
    trained = {"gradient": train_autoencoder(model, x, reg=reg, steps=steps, method="gradient",
                                             optimizer=optimizer_from_config(cfg))}
    stage(log, 2, 3, f"PMP sweep on the same cost: {sweeps} sweeps")
    trained["pmp"] = train_autoencoder(model, x, reg=reg, steps=sweeps, method="pmp")
    stage(log, 3, 3, "Hessian of the cost at the trained model")
    min_eig = hessian_min_eigenvalue(trained["gradient"].model, x, x, reg)

    panels = {}
    names = {"gradient": cfg.training.optimizer, "pmp": "PMP sweep"}
    neck_end = (WIDTHS.index(min(WIDTHS)) + 1) * model.layers_per_stage  # the state leaving the bottleneck
    for tag, res in trained.items():
        states = resnet_forward(res.model, x, save_every=1)
        mse = float(jnp.mean(jnp.sum((states[-1] - x) ** 2, axis=-1)))
        z = np.asarray(states[neck_end, :, 0])
        result.check(f"{tag}_reconstruction_mse_over_total_variance", mse / total_variance, 0.0,
                     RECONSTRUCTION_FRACTION)
        result.check(f"{tag}_dropped_components_max_abs", _dropped_components(res.model, states), 0.0, 0.0)
        result.metrics.update({
            f"{tag}_reconstruction_mse": mse, f"{tag}_final_cost": float(res.history[-1]),
            f"{tag}_bottleneck_monotone": bool(np.all(np.diff(z) > 0) or np.all(np.diff(z) < 0)),
        })
        panels[names[tag]] = (np.asarray(states), z, res.history)
    result.check("pmp_cost_max_increase", _max_increase(trained["pmp"].history), 0.0, 0.0)
    result.metrics.update({
        "points": n, "widths": list(WIDTHS), "layers": model.num_layers, "reg": reg, "optimizer_steps": steps,
        "pmp_sweeps": sweeps, "total_variance": total_variance,
        "hessian_min_eigenvalue": min_eig, "tikhonov_curvature_2_reg_dt": 2.0 * reg * model.dt,
    })
    result.figures["autoencoder_manifold"] = _autoencoder_figure(np.asarray(s), np.asarray(x), panels, model,
                                                                 neck_end)
    return result


def _autoencoder_figure(s, x, panels: dict, model: AutoencODE, neck_end: int):
    """The curve and its reconstructions in 3-D; the components of 12 points through the stages; the
    bottleneck coordinate against s; the training histories."""
    fig, axes = new_figure(ncols=2, nrows=2, width=5.4, height=4.4)
    axes[0].remove()
    ax3d = fig.add_subplot(2, 2, 1, projection="3d")
    ax3d.plot(*x.T, color="k", lw=2.0, label="curve (cos s, sin s, s/3)")
    method_colours = COLOURS[3:]  # the components of x take COLOURS[:3]
    for (name, (states, _, _)), colour in zip(panels.items(), method_colours):
        pick = slice(None, None, max(1, x.shape[0] // 50))
        ax3d.scatter(*states[-1][pick].T, s=9, color=colour, depthshade=False,
                     label=f"reconstruction ({name})")
    ax3d.set_xlabel("x$_1$")
    ax3d.set_ylabel("x$_2$")
    ax3d.set_zlabel("x$_3$")
    ax3d.set_title("data and its reconstruction x$_L$", fontsize=10)
    ax3d.legend(fontsize=8, loc="upper left")

    states, _, _ = next(iter(panels.values()))
    ax = axes[1]
    layers = np.arange(states.shape[0])
    shown = np.linspace(0, x.shape[0] - 1, 12).astype(int)
    for k in range(states.shape[2]):
        ax.plot(layers, states[:, shown, k], color=COLOURS[k], lw=0.8, alpha=0.7)
        ax.plot([], [], color=COLOURS[k], label=f"x$_{k + 1}$")
    lps = model.layers_per_stage
    for i, width in enumerate(model.widths):
        ax.axvspan(i * lps, (i + 1) * lps, color="grey", alpha=0.06 * (max(model.widths) - width + 1), lw=0)
        ax.text((i + 0.5) * lps, 1.0, f"width {width}", transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8)
    ax.set_xlabel("layer l")
    ax.set_ylabel("components of x$_l$")
    ax.set_title(f"components of x$_l$ for {shown.size} points ({next(iter(panels))})", fontsize=10, pad=16)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")

    for (name, (_, z, history)), colour in zip(panels.items(), method_colours):
        axes[2].plot(s, z, color=colour, lw=1.5, label=name)
        axes[3].plot(np.arange(history.size) + 1, history, color=colour, lw=1.2, label=name)
    axes[2].set_xlabel("curve parameter s")
    axes[2].set_ylabel(f"bottleneck coordinate x$_1$ at layer {neck_end}")
    axes[2].set_title("the code: bottleneck coordinate against the curve parameter", fontsize=10)
    axes[3].set_xscale("log")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("iteration + 1")
    axes[3].set_ylabel("cost J")
    axes[3].set_title("training history", fontsize=10)
    for ax in axes[2:]:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(f"AutoencODE, widths {model.widths}, σ = {model.activation}, T = {model.T:g}, "
                 f"{model.num_layers} layers", fontsize=11)
    fig.tight_layout()
    return fig
