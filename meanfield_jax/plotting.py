"""Matplotlib figures of the experiments (drawn like the paper's: particles as markers, exact as lines)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["close", "moment_panels", "new_figure"]

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.8):
    """A figure with a grid of axes (always returned as a flat array)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes.ravel()


def moment_panels(panels: dict, w: float, b: float):
    """Fig. 1: m0, m1, m2 against t; one panel per case (b = 0, feedback), exact lines, particle markers."""
    fig, axes = new_figure(ncols=len(panels))
    for ax, (ts, m_particles, m_exact, fb) in zip(axes, panels.values()):
        stride = max(1, len(ts) // 25)
        for k in range(m_exact.shape[1]):
            ax.plot(ts, m_exact[:, k], color=COLOURS[k], label=f"$m_{k}$ exact")
            ax.plot(ts[::stride], m_particles[::stride, k], "o", ms=3.5, mfc="none", color=COLOURS[k],
                    label=f"$m_{k}$ ResNet")
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
