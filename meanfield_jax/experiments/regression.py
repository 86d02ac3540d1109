"""Figs. 5 and 8 of the main paper: regression by a ResNet with identity activation (an affine flow map).

Fig. 5 (``regression_data``). Points x ~ U[low, high], y = x + ε, ε ~ N(0, noise²), pushed through the 2-D
ResNet with W = diag(w_x, w_y), b = (b_x, b_y). Each coordinate moves by its own affine map
x ↦ α_x x + β_x, y ↦ α_y y + β_y, with (Δt = T/L, r = 1 + Δt w)

    Euler, l layers:  α = r^l,     β = (b/w)(r^l − 1)            flow:  α = e^{wt},  β = (b/w)(e^{wt} − 1).

The least-squares fit of y on x is equivariant under such maps (Cov(X, Y) = α_x α_y Cov(x, y), Var X =
α_x² Var x), so the cloud's LS line y = ŝ x + ĉ is mapped exactly to

    s = ŝ α_y/α_x,    c = α_y ĉ + β_y − s β_x,

for the data's own line, both for the ResNet and for the flow. For the caption's W = diag(1, −1),
b = (−1, 0) and the noise-free line (1, 0) the flow gives s(t) = e^{−2t}, c(t) = e^{−t} − e^{−2t}; the
ResNet gives s_l = ((1 − Δt)/(1 + Δt))^l, a second-order approximation of e^{−2t} (ln((1 − u)/(1 + u)) =
−2u − 2u³/3 − …): in general the slope's Euler error is −t Δt (w_y² − w_x²)/2 + O(Δt²), second order
exactly when w_x² = w_y². The intercept's error is first order. The data's line differs from the noise-free
one by the OLS sampling error, Cov(ĉ, ŝ) = noise² (XᵀX)^{−1} with the design X = [1, x].

Fig. 8 (``novel_target``). A 1-D identity ResNet with one weight and bias shared by its L layers is the
regressor x ↦ α(w) x + β(w, b). Fitted to labels y = a x + c + ε by gradient descent through the ResNet,
its optimum is the OLS line (â, ĉ) of the data mapped back by ``line_map_parameters_discrete``; the
noise-free parameters are those of (a, c), and they differ by the sampling error propagated through the
Jacobian of that map. The optimal mean squared residual has mean noise² (n − 2)/n and standard deviation
noise² sqrt(2(n − 2))/n.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..closed_forms import least_squares_line, line_map_parameters, line_map_parameters_discrete
from ..config import ConfigError, ExperimentConfig
from ..data import regression_cloud
from ..dispatch import jit
from ..field import NeuralField
from ..particles import resnet_forward
from ..plotting_figures import novel_target_panels, regression_panels
from ..training import fit
from .base import ExperimentResult, Logger, make_key, round_off, stage
from .common import field_from_config, optimizer_from_config
from .euler_error import affine_flow_error_bound, growth_defect, observed_order
from .particle_setup import require_activation, require_regression_data, save_stride, scalar_parameters

__all__ = ["run_novel_target", "run_regression_data"]

# statistical checks allow this many standard deviations of the sampling error
SAMPLING_SIGMAS = 4.0
# the optimiser must land within this fraction of a standard deviation of the sampling error (plus the
# sqrt(eps) accuracy limit of any minimiser)
OPTIMISATION_FRACTION = 0.1
ORDER_TOL = 0.1
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "SGD", "lbfgs": "L-BFGS"}


def _regression_data(cfg: ExperimentConfig, n_quick: int) -> jax.Array:
    require_regression_data(cfg)
    n = min(cfg.data.particles, n_quick) if cfg.quick else cfg.data.particles
    if n < 3:
        raise ConfigError(f"data.particles: got {n}; allowed: an integer >= 3 (a least-squares line and its "
                          "residual variance)")
    return regression_cloud(make_key(cfg.seed), n=n, noise=cfg.data.noise, low=cfg.data.low,
                            high=cfg.data.high)


def ols_covariance(x, noise: float) -> np.ndarray:
    """Cov of the OLS (intercept, slope) for labels with N(0, noise²) errors at fixed x: noise² (XᵀX)^{−1}."""
    x = np.asarray(x, dtype=float)
    design = np.stack([np.ones_like(x), x], axis=1)
    return noise**2 * np.linalg.inv(design.T @ design)


def flow_coefficients(w: float, b: float, ts, dt: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(α, β) of x ↦ α x + β over [0, t] for x' = w x + b: the flow (``dt=None``), α = e^{wt}, or Euler
    with step Δt, α = (1 + Δt w)^{t/Δt}; in both β = b (α − 1)/w (b t for w = 0), via expm1/log1p."""
    ts = np.asarray(ts, dtype=float)
    log_alpha = w * ts if dt is None else ts / dt * np.log1p(dt * w)
    beta = b * ts if w == 0 else b * np.expm1(log_alpha) / w
    return np.exp(log_alpha), beta


def mapped_line(s0, c0, coeff_x, coeff_y) -> tuple[np.ndarray, np.ndarray]:
    """The image s = s0 α_y/α_x, c = α_y c0 + β_y − s β_x of the line y = s0 x + c0."""
    (ax, bx), (ay, by) = coeff_x, coeff_y
    s = s0 * ay / ax
    return s, ay * c0 + by - s * bx


def line_euler_bounds(w, b, s_flow, mean_x_flow, means0, ts, dt):
    """Bounds on |s_ResNet − s_flow| and |c_ResNet − c_flow| for the image of one line (diagonal W)."""
    dx, dy = growth_defect(w[0], ts, dt), growth_defect(w[1], ts, dt)
    if np.any(dx >= 1):
        raise ValueError(f"Δt = {dt} is too large for the slope bound (growth defect {np.max(dx):.3g} >= 1)")
    ds = np.abs(s_flow) * np.maximum(dy, dx / (1.0 - dx))
    Dx = affine_flow_error_bound(w[0], b[0], means0[0], ts, dt)
    Dy = affine_flow_error_bound(w[1], b[1], means0[1], ts, dt)
    return ds, Dy + ds * np.abs(mean_x_flow) + (np.abs(s_flow) + ds) * Dx


def run_regression_data(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 5: the regression cloud through the 2-D ResNet; slopes and intercepts of its LS line over t."""
    require_activation(cfg, ("identity",), "the flow map is then affine")
    W, b = np.asarray(cfg.model.W, dtype=float), np.asarray(cfg.model.b, dtype=float)
    if W.shape != (2, 2) or b.shape != (2,) or W[0, 1] != 0 or W[1, 0] != 0:
        raise ConfigError(f"model.W, model.b: got W={cfg.model.W!r}, b={cfg.model.b!r}; allowed: a diagonal "
                          "2×2 W and a 2-vector b (each coordinate then has its own affine map)")
    w = np.diag(W)
    result = ExperimentResult()
    cloud = _regression_data(cfg, 1000)
    n, L = cloud.shape[0], cfg.model.layers
    field = field_from_config(cfg.model)
    stride = save_stride(L)
    stage(log, 1, 3, f"ResNet on {n} points, {L} layers, T = {cfg.model.T:g}")
    traj = np.asarray(resnet_forward(field, cloud, save_every=stride))
    ts = np.arange(traj.shape[0]) * stride * field.dt
    slopes, intercepts = (np.asarray(v) for v in jax.vmap(least_squares_line)(traj[..., 0], traj[..., 1]))

    s0, c0 = slopes[0], intercepts[0]
    means0 = traj[0].mean(axis=0)
    discrete = [flow_coefficients(w[k], b[k], ts, field.dt) for k in range(2)]
    flow = [flow_coefficients(w[k], b[k], ts) for k in range(2)]
    s_disc, c_disc = mapped_line(s0, c0, *discrete)
    s_flow, c_flow = mapped_line(s0, c0, *flow)
    # LS line of the mapped cloud = mapped LS line of the data, to round-off of L layers and n-term sums
    eps = round_off(L + n)
    scale_c = np.max(np.abs(traj[..., 1].mean(axis=1)) + np.abs(slopes * traj[..., 0].mean(axis=1)))
    result.check("slope_vs_mapped_data_line_max_rel", np.max(np.abs(slopes / s_disc - 1.0)), 0.0, eps)
    result.check("intercept_vs_mapped_data_line_max_abs", np.max(np.abs(intercepts - c_disc)), 0.0,
                 eps * scale_c)

    stage(log, 2, 3, "Euler error against the flow, and its order with 2L layers")
    mean_x_flow = flow[0][0] * means0[0] + flow[0][1]
    ds, dc = line_euler_bounds(w, b, s_flow[-1:], mean_x_flow[-1:], means0, ts[-1:], field.dt)
    result.check("slope_at_T_vs_flow", slopes[-1] - s_flow[-1], 0.0, ds[0] + eps * abs(s_flow[-1]))
    result.check("intercept_at_T_vs_flow", intercepts[-1] - c_flow[-1], 0.0, dc[0] + eps * scale_c)
    fine = np.asarray(resnet_forward(field_from_config(cfg.model, layers=2 * L), cloud))
    s_fine, c_fine = (float(v) for v in least_squares_line(fine[:, 0], fine[:, 1]))
    slope_order = 2.0 if np.isclose(w[0] ** 2, w[1] ** 2) else 1.0
    result.check("slope_error_order", observed_order(abs(slopes[-1] - s_flow[-1]), abs(s_fine - s_flow[-1])),
                 slope_order, ORDER_TOL)
    result.check("intercept_error_order", observed_order(abs(intercepts[-1] - c_flow[-1]),
                                                         abs(c_fine - c_flow[-1])), 1.0, ORDER_TOL)

    stage(log, 3, 3, "against the noise-free line y = x (sampling error of the data's line)")
    s_law, c_law = mapped_line(1.0, 0.0, *flow)
    # (c_T, s_T) = M (ĉ, ŝ) + const for the flow: ∂c/∂ĉ = α_y, ∂c/∂ŝ = −(α_y/α_x) β_x, ∂s/∂ŝ = α_y/α_x
    (ax, bx), (ay, _) = (coeff[:, -1] for coeff in np.asarray(flow))
    M = np.array([[ay, -ay / ax * bx], [0.0, ay / ax]])
    sd_c, sd_s = np.sqrt(np.diag(M @ ols_covariance(traj[0, :, 0], cfg.data.noise) @ M.T))
    result.check("slope_at_T_vs_noise_free_law", slopes[-1] - s_law[-1], 0.0,
                 SAMPLING_SIGMAS * sd_s + ds[0] + eps * abs(s_law[-1]))
    result.check("intercept_at_T_vs_noise_free_law", intercepts[-1] - c_law[-1], 0.0,
                 SAMPLING_SIGMAS * sd_c + dc[0] + eps * scale_c)
    result.metrics.update({
        "particles": n, "layers": L, "data_line": [float(s0), float(c0)],
        "slope_T": float(slopes[-1]), "intercept_T": float(intercepts[-1]),
        "slope_T_flow_noise_free": float(s_law[-1]), "intercept_T_flow_noise_free": float(c_law[-1]),
        "slope_T_resnet_noise_free": float(mapped_line(1.0, 0.0, *discrete)[0][-1]),
        "intercept_T_resnet_noise_free": float(mapped_line(1.0, 0.0, *discrete)[1][-1]),
    })
    result.figures["fig5_regression_data"] = regression_panels(
        traj, ts, (slopes, intercepts), mapped_line(1.0, 0.0, *flow), mapped_line(1.0, 0.0, *discrete),
        w=w, b=b, noise=cfg.data.noise, layers=L)
    return result


def run_novel_target(cfg: ExperimentConfig, log: Logger) -> ExperimentResult:
    """Fig. 8: (w, b) fitted through the ResNet to a novel target line, against the closed forms."""
    require_activation(cfg, ("identity",), "the regressor is then affine and the closed forms hold")
    w0, b0 = scalar_parameters(cfg)
    a, c = cfg.target.slope, cfg.target.intercept
    if a is None or c is None:
        raise ConfigError(f"target.slope and target.intercept: got {a!r} and {c!r}; allowed: a slope > 0 and "
                          "an intercept (the novel target line y = a x + c)")
    result = ExperimentResult()
    cloud = _regression_data(cfg, 1000)
    x = cloud[:, 0]
    y = a * x + c + (cloud[:, 1] - cloud[:, 0])  # the cloud's noise ε on the target line
    n, T, L, noise = x.shape[0], cfg.model.T, cfg.model.layers, cfg.data.noise

    def loss(params) -> jax.Array:  # mean squared error of the ResNet x ↦ x_L with one shared (w, b)
        field = NeuralField.constant(params["w"], params["b"], num_layers=L, T=T)
        return jnp.mean((resnet_forward(field, x[:, None])[:, 0] - y) ** 2)

    stage(log, 1, 2, f"fit (w, b) through {L} layers on {n} points: {cfg.training.optimizer}, "
                     f"{cfg.training.steps} steps")
    path = []
    start = {"w": jnp.asarray(w0, dtype=float), "b": jnp.asarray(b0, dtype=float)}
    fitted = fit(start, loss, optimizer=optimizer_from_config(cfg), steps=cfg.training.steps, progress=False,
                 callback=lambda k, p, v: path.append((float(p["w"]), float(p["b"]))))
    theta = np.array([float(fitted.params["w"]), float(fitted.params["b"])])
    final_loss = float(loss(fitted.params))
    path.append(tuple(theta))

    stage(log, 2, 2, "closed forms: discrete (exact for the ResNet) and continuous (the neural ODE)")

    @jit
    def discrete_parameters(line):  # (slope, intercept) ↦ (w, b) realised exactly by the L Euler layers
        return jnp.stack(line_map_parameters_discrete(line[0], line[1], T, L))

    optimum = np.asarray(discrete_parameters(jnp.stack(least_squares_line(x, y))))
    noise_free = np.asarray(discrete_parameters(jnp.array([a, c], dtype=float)))
    continuous = np.array([float(v) for v in line_map_parameters(a, c, T)])
    # sampling covariance of (w, b) through the Jacobian of (a, c) ↦ (w, b); OLS gives Cov of (c, a)
    jac = np.asarray(jit(jax.jacfwd(discrete_parameters))(jnp.array([a, c], dtype=float)))
    cov = jac @ ols_covariance(x, noise)[::-1, ::-1] @ jac.T
    sd = np.sqrt(np.diag(cov))
    accuracy = OPTIMISATION_FRACTION * sd + np.sqrt(np.finfo(float).eps) * (1.0 + np.abs(optimum))
    for k, name in enumerate(("w", "b")):
        result.check(f"{name}_vs_data_optimum", theta[k] - optimum[k], 0.0, accuracy[k])
        result.check(f"{name}_vs_noise_free_closed_form", theta[k] - noise_free[k], 0.0,
                     SAMPLING_SIGMAS * sd[k] + accuracy[k])
    residual_mean = noise**2 * (n - 2) / n
    result.check("final_loss_vs_noise_variance", final_loss - residual_mean, 0.0,
                 SAMPLING_SIGMAS * noise**2 * np.sqrt(2.0 * (n - 2)) / n + round_off(L + n))
    # the closed forms through the ResNet: the discrete one is exact, the continuous one O(Δt) off
    xs = jnp.linspace(cfg.data.low, cfg.data.high, 11)
    line = np.asarray(a * xs + c)
    for name, (wk, bk) in (("discrete", noise_free), ("continuous", continuous)):
        out = np.asarray(resnet_forward(NeuralField.constant(wk, bk, num_layers=L, T=T), xs[:, None])[:, 0])
        bound = round_off(L) * np.max(np.abs(line))
        if name == "continuous":
            bound += float(np.max(affine_flow_error_bound(wk, bk, xs, T, T / L)))
        result.check(f"resnet_with_{name}_closed_form_vs_target_line", np.max(np.abs(out - line)), 0.0, bound)
    result.metrics.update({
        "particles": n, "layers": L, "fitted": theta.tolist(), "data_optimum": optimum.tolist(),
        "noise_free_discrete": noise_free.tolist(), "noise_free_continuous": continuous.tolist(),
        "sampling_sd": sd.tolist(), "final_loss": final_loss, "loss_history": fitted.history.tolist(),
    })
    result.figures["fig8_novel_target"] = novel_target_panels(
        np.asarray(x), np.asarray(y), {"original": (w0, b0), "fitted": tuple(theta), "target": (a, c)},
        {"Euler closed form of (a, c)": noise_free, "ODE closed form of (a, c)": continuous,
         "Euler closed form of the data's LS line": optimum},
        (noise_free, cov), np.array(path), fitted.history, final_loss, noise, T, L,
        f"{OPTIMIZER_NAMES[cfg.training.optimizer]} ({cfg.training.steps} steps)")
    return result
