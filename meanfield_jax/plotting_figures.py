"""Matplotlib figures of the particle experiments (Figs. 2, 3, 5, 8 and Table 1 of the main paper).

Conventions as in :mod:`meanfield_jax.plotting`: exact solutions as lines, the ResNet's particles or
moments as markers, cars blue and trucks red, titles carrying the parameters.
"""

from __future__ import annotations

import numpy as np

from .plotting import COLOURS, new_figure

__all__ = [
    "classification_table_figure",
    "desired_value_panels",
    "novel_target_panels",
    "regression_panels",
    "vehicle_panels",
]

CLASS_COLOURS = ("tab:blue", "tab:red")  # car, truck
CLASS_NAMES = ("car", "truck")


def _bias_label(b: float, feedback: float | None) -> str:
    if feedback is None:
        return f"b = {b:.4g}"
    sign = "−" if feedback < 0 else "+"
    factor = "" if abs(feedback) == 1 else f"{abs(feedback):g} "
    return f"b = {b:.4g} {sign} {factor}m$_1$(t)/m$_0$"


def desired_value_panels(panels: dict, energy: float, variance: float, subtitle: str = ""):
    """Fig. 2: energy E(t) = m2 and variance V(t), ResNet (markers) and moment ODE (lines), one panel per
    bias model; the desired values are dashed horizontal lines."""
    fig, axes = new_figure(ncols=len(panels))
    for ax, (case, (ts, E_p, V_p, E_exact, V_exact, w, b, fb)) in zip(axes, panels.items()):
        stride = max(1, len(ts) // 25)
        for k, (name, exact, particles, target) in enumerate(
            (("E", E_exact, E_p, energy), ("V", V_exact, V_p, variance))
        ):
            colour = COLOURS[2 + k]
            ax.plot(ts, exact, color=colour, label=f"{name}(t) moment ODE")
            ax.plot(ts[::stride], particles[::stride], "o", ms=3.5, mfc="none", color=colour,
                    label=f"{name}(t) ResNet")
            ax.axhline(target, color=colour, ls="--", lw=1.0, label=f"desired {name}$_d$ = {target:g}")
        ax.set_yscale("log")
        ax.set_title(f"{case} bias: σ = id, w = {w:.4g}, {_bias_label(b, fb)}", fontsize=10)
        ax.set_xlabel("t")
        ax.set_ylabel("energy m$_2$, variance")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, ncol=2)
    fig.suptitle(f"Energy and variance against their desired values E$_d$ = {energy:g}, V$_d$ = {variance:g}"
                 f"{subtitle}", fontsize=11)
    fig.tight_layout()
    return fig


def _class_trajectories(ax, run, classes, labels=None) -> None:
    """x_l against the layer l, one line per vehicle coloured by its true class; exact X_T as crosses."""
    layers = np.arange(run.trajectories.shape[0])
    L = layers[-1]
    for i in range(run.trajectories.shape[1]):
        colour = CLASS_COLOURS[classes[i]]
        ax.plot(layers, run.trajectories[:, i], color=colour, lw=0.9, alpha=0.8)
        if labels is not None:
            ax.annotate(labels[i], (L, run.trajectories[-1, i]), xytext=(4, 0), textcoords="offset points",
                        fontsize=7, va="center", color=colour)
    ax.plot(np.full(run.exact.shape, L), run.exact, "kx", ms=4, label="exact X$_T$ (characteristics)")
    for c, name in enumerate(CLASS_NAMES):
        ax.plot([], [], color=CLASS_COLOURS[c], label=f"{name}s (ResNet x$_l$)")
    ax.axhline(run.threshold, color="grey", ls=":", lw=1.0, label=f"threshold x* = {run.threshold:g}")
    ax.set_xlabel("layer l")
    ax.set_ylabel("neuron activation x$_l$")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")


def _model_label(activation: str, run) -> str:
    T = run.dt * (run.trajectories.shape[0] - 1)
    return f"σ = {activation}, x* = {run.threshold:g}, T = {T:g}, {run.trajectories.shape[0] - 1} layers"


def vehicle_panels(lengths, classes, run, span: tuple[float, float], activation: str):
    """Fig. 3: histogram of the vehicle lengths by class (left) and their trajectories over the layers."""
    fig, axes = new_figure(ncols=2)
    bins = np.linspace(span[0], span[1], 13)
    axes[0].hist([lengths[classes == c] for c in (0, 1)], bins=bins, stacked=True, color=CLASS_COLOURS,
                 edgecolor="white", label=[f"{name}s ({np.sum(classes == c)})" for c, name in
                                           enumerate(CLASS_NAMES)])
    axes[0].axvline(run.threshold, color="grey", ls=":", lw=1.0)
    axes[0].set_xlabel("vehicle length [m]")
    axes[0].set_ylabel("count")
    axes[0].set_title(f"{lengths.size} vehicle lengths ~ U[{span[0]:g}, {span[1]:g}]", fontsize=10)
    axes[0].legend(fontsize=8)
    _class_trajectories(axes[1], run, classes)
    axes[1].set_title(f"ResNet trajectories, {_model_label(activation, run)}", fontsize=10)
    fig.tight_layout()
    return fig


def classification_table_figure(rows: list[dict], run, activation: str):
    """Table 1: trajectories of the example vehicles (left) and the table of lengths, true classes,
    outputs x_T, tanh(x_T − x*) and predicted classes (right)."""
    fig, axes = new_figure(ncols=2, width=5.4)
    classes = np.array([CLASS_NAMES.index(row["class"]) for row in rows])
    _class_trajectories(axes[0], run, classes, labels=[f"{row['length']:g} m" for row in rows])
    axes[0].set_title(f"ResNet trajectories, {_model_label(activation, run)}", fontsize=10)
    header = ["length [m]", "true class", "x$_T$", f"tanh(x$_T$ − {run.threshold:g})", "predicted"]
    cells = [[f"{row['length']:g}", row["class"], f"{row['x_T']:.3f}", f"{row['output']:+.4f}",
              row["predicted"]] for row in rows]
    axes[1].axis("off")
    table = axes[1].table(cellText=cells, colLabels=header, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.6)
    for i, row in enumerate(rows, start=1):
        ok = row["class"] == row["predicted"]
        table[i, 4].set_facecolor("#d8f0d8" if ok else "#f6d0d0")
    correct = sum(row["class"] == row["predicted"] for row in rows)
    axes[1].set_title(f"Table 1: {correct}/{len(rows)} classified correctly", fontsize=10)
    fig.tight_layout()
    return fig


def _subsample(n: int, most: int = 1500) -> slice:
    return slice(None, None, max(1, n // most))


def regression_panels(traj, ts, fitted, law_flow, law_resnet, w, b, noise: float, layers: int):
    """Fig. 5: the data cloud at t = 0, T/2, T with its least-squares lines (left), and the slope (centre)
    and intercept (right) of the cloud's LS line over t against the flow law and the ResNet's law for the
    noise-free line y = x."""
    fig, axes = new_figure(ncols=3, width=4.4)
    n = traj.shape[1]
    pick = _subsample(n, 1000)
    shown = sorted({0, int(np.argmin(np.abs(ts - ts[-1] / 2))), len(ts) - 1})
    for k, colour in zip(shown, COLOURS):
        cloud = traj[k]
        axes[0].plot(cloud[pick, 0], cloud[pick, 1], ".", ms=2, color=colour, alpha=0.4)
        xs = np.array([cloud[:, 0].min(), cloud[:, 0].max()])
        s, c = fitted[0][k], fitted[1][k]
        axes[0].plot(xs, s * xs + c, color=colour, lw=1.5,
                     label=f"t = {ts[k]:g}: y = {s:.3g} x {'+' if c >= 0 else '−'} {abs(c):.3g}")
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].set_title(f"data cloud and its LS line ({n} points)", fontsize=10)
    axes[0].legend(fontsize=8, loc="upper left")
    stride = max(1, len(ts) // 25)
    for ax, k, name in ((axes[1], 0, "slope s(t)"), (axes[2], 1, "intercept c(t)")):
        ax.plot(ts, law_flow[k], color="k", lw=1.2, label="neural ODE, noise-free line y = x")
        ax.plot(ts, law_resnet[k], "--", color="tab:green", lw=1.2, label="exact Euler, noise-free line")
        ax.plot(ts[::stride], fitted[k][::stride], "o", ms=4, mfc="none", color=COLOURS[3],
                label="LS fit of the ResNet's cloud")
        ax.set_xlabel("t")
        ax.set_ylabel(name)
        ax.set_title(f"{name.split()[0]} of the least-squares line", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Regression data y = x + ε, ε ~ N(0, {noise:g}²), through the ResNet σ = id, "
                 f"W = diag({w[0]:g}, {w[1]:g}), b = ({b[0]:g}, {b[1]:g}), T = {ts[-1]:g}, {layers} layers",
                 fontsize=11)
    fig.tight_layout()
    return fig


def _sampling_ellipse(ax, centre, cov, sigmas: float) -> None:
    """The ellipse {θ : (θ − centre)ᵀ cov⁻¹ (θ − centre) = sigmas²} of a 2-D Gaussian."""
    angle = np.linspace(0.0, 2.0 * np.pi, 200)
    ring = centre[:, None] + sigmas * np.linalg.cholesky(cov) @ np.stack([np.cos(angle), np.sin(angle)])
    ax.plot(ring[0], ring[1], color="tab:grey", lw=0.8, label=f"{sigmas:g} sd of the sampling error")


def novel_target_panels(x, y, lines: dict, closed_forms: dict, sampling: tuple, path, history,
                        final_loss: float, noise: float, T: float, layers: int, optimizer: str):
    """Fig. 8: the data with the target line, the ResNet's map before and after fitting (left); the path of
    (w, b) during training, zoomed in around the closed-form parameters with the ellipse of the sampling
    error ``sampling = (centre, covariance)`` (centre); the loss history (right)."""
    from .closed_forms import line_map

    fig, axes = new_figure(ncols=3, width=4.4)
    pick = _subsample(x.size)
    axes[0].plot(x[pick], y[pick], ".", ms=2, color="tab:grey", alpha=0.5, label=f"data ({x.size} points)")
    xs = np.linspace(x.min(), x.max(), 2)
    for (key, colour) in (("original", COLOURS[0]), ("fitted", COLOURS[3])):
        w, b = lines[key]
        alpha, beta = (float(v) for v in line_map(w, b, T, layers))
        axes[0].plot(xs, alpha * xs + beta, color=colour, lw=2.0,
                     label=f"{key} ResNet x$_L$(x), w = {w:.4g}, b = {b:.4g}")
    a, c = lines["target"]
    axes[0].plot(xs, a * xs + c, "k--", lw=1.2, label=f"target y = {a:g} x + {c:g}")
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("y")
    axes[0].set_title("data, target and the ResNet's map", fontsize=10)
    axes[0].legend(fontsize=7, loc="lower right")

    ax = axes[1]
    ax.plot(path[:, 0], path[:, 1], ".-", color=COLOURS[3], ms=3, lw=0.8, label="training path")
    ax.plot(*path[0], "o", color=COLOURS[0], label="original (w, b)")
    ax.set_xlabel("w")
    ax.set_ylabel("b")
    ax.set_title("updated weight and bias", fontsize=10)
    ax.grid(alpha=0.3)
    zoom = ax.inset_axes((0.5, 0.5, 0.48, 0.48))
    _sampling_ellipse(zoom, *sampling, 2.0)
    zoom.plot(*path[-1], "o", color=COLOURS[3], ms=5, label="fitted")
    for (name, theta), marker in zip(closed_forms.items(), ("s", "^", "x")):
        kwargs = {"mfc": "none"} if marker != "x" else {}
        zoom.plot(*theta, marker, color="k", ms=7, label=name, **kwargs)
    zoom.tick_params(labelsize=6)
    handles = ax.get_legend_handles_labels()
    inner = zoom.get_legend_handles_labels()
    ax.legend(handles[0] + inner[0], handles[1] + inner[1], fontsize=6.5, loc="lower left")

    steps = np.arange(len(history) + 1)
    axes[2].semilogy(steps, np.append(history, final_loss), color=COLOURS[3], label="mean squared error")
    axes[2].axhline(noise**2, color="k", ls="--", lw=1.0, label=f"noise² = {noise**2:g}")
    axes[2].set_xlabel("optimiser step")
    axes[2].set_ylabel("loss")
    axes[2].set_title(f"loss history, final {final_loss:.4g}", fontsize=10)
    axes[2].grid(alpha=0.3, which="both")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"Novel target y = {a:g} x + {c:g}: (w, b) of the ResNet (σ = id, T = {T:g}, {layers} "
                 f"layers) fitted by {optimizer} from (w, b) = ({path[0][0]:g}, {path[0][1]:g})", fontsize=11)
    fig.tight_layout()
    return fig
