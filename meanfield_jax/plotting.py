"""Matplotlib figures of the experiments (drawn like the paper's: particles as markers, exact as lines)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["close", "density_2d_panels", "density_snapshots", "moment_panels", "new_figure"]

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.8):
    """A figure with a grid of axes (always returned as a flat array)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes.ravel()


def moment_panels(panels: dict, w: float, b: float):
    """Fig. 1: m0, m1, m2 against t; one panel per case (b = 0, feedback): exact lines, particle circles and
    (when given) kinetic crosses."""
    fig, axes = new_figure(ncols=len(panels))
    for ax, (ts, m_particles, m_exact, fb, m_pde) in zip(axes, panels.values()):
        stride = max(1, len(ts) // 25)
        for k in range(m_exact.shape[1]):
            ax.plot(ts, m_exact[:, k], color=COLOURS[k], label=f"$m_{k}$ exact")
            ax.plot(ts[::stride], m_particles[::stride, k], "o", ms=3.5, mfc="none", color=COLOURS[k],
                    label=f"$m_{k}$ ResNet")
            if m_pde is not None:
                ax.plot(ts[stride // 2 :: stride], m_pde[stride // 2 :: stride, k], "x", ms=3.5,
                        color=COLOURS[k], label=f"$m_{k}$ PDE")
        sign = "−" if (fb or 0) < 0 else "+"
        bias = f"b = {b:g}" if fb is None else f"b = {b:g} {sign} {abs(fb):g} m$_1$(t)/m$_0$"
        ax.set_title(f"σ = id, w = {w:g}, {bias}")
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    """Release a figure's memory."""
    plt.close(fig)


def density_snapshots(x, ts, fs, exact=None, title: str = "", xlabel: str = "x", ax=None):
    """1-D densities f(t_k, x) at the save times (lines), with the exact solution dashed when given."""
    fig = None
    if ax is None:
        fig, axes = new_figure()
        ax = axes[0]
    for k, (t, f) in enumerate(zip(ts, fs)):
        colour = COLOURS[k % len(COLOURS)]
        ax.plot(x, f, color=colour, label=f"t = {float(t):g}")
        if exact is not None:
            ax.plot(x, exact[k], "--", color="k", lw=0.8, label="exact" if k == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("f(t, x)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if fig is not None:
        fig.tight_layout()
    return fig


def density_2d_panels(grid, ts, fs, lines=None, title: str = ""):
    """2-D densities at the save times as colour maps; ``lines[k] = (slope, intercept)`` is overlaid."""
    fig, axes = new_figure(ncols=len(ts), width=4.2, height=3.6)
    X, Y = (np.asarray(a) for a in grid.mesh())
    for k, (ax, t, f) in enumerate(zip(axes, ts, fs)):
        ax.pcolormesh(X, Y, np.asarray(f), shading="auto", cmap="viridis")
        if lines is not None:
            s, c = lines[k]
            xs = np.array([grid.xaxis.lo, grid.xaxis.hi])
            ax.plot(xs, s * xs + c, "w--", lw=1, label=f"y = {s:.3g} x + {c:.3g}")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_ylim(grid.yaxis.lo, grid.yaxis.hi)
        ax.set_title(f"{title} t = {float(t):g}")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.tight_layout()
    return fig
