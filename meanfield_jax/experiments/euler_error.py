"""Error bounds of the explicit-Euler ResNet against the neural ODE it discretises.

The tolerances of the particle experiments come from these bounds, not from observed errors.

Linear growth. For u = Δt a > −1 and l = t/Δt steps, ln(1 + u) − u ∈ [−u²/(2 min(1, 1 + u)), 0], hence

    e^{at} (1 − δ) ≤ (1 + Δt a)^l ≤ e^{at},   δ = t Δt a² / (2 min(1, 1 + Δt a)).

Affine flow. Euler on x' = a x + b gives x_l = r^l (x0 + b/a) − b/a with r = 1 + Δt a, the flow
X(t) = e^{at} (x0 + b/a) − b/a, so

    |X(t) − x_l| ≤ |a x0 + b| |a| t Δt e^{at} / (2 min(1, 1 + Δt a))      (0 for a = 0: Euler is exact).

Nonlinear flow. For x' = F(x) with Lipschitz constant Λ and |ẍ| ≤ M along the exact solution, the
classical global bound of explicit Euler is |X(t_l) − x_l| ≤ (Δt M / (2Λ)) (e^{Λ t} − 1).

Measured order. With errors e_L, e_{2L} at L and 2L layers, the observed order is log₂(e_L / e_{2L}).
"""

from __future__ import annotations

import numpy as np

__all__ = ["affine_flow_error_bound", "growth_defect", "lipschitz_error_bound", "observed_order"]


def _stable_step(a, dt) -> np.ndarray:
    """min(1, 1 + Δt a), after checking that Euler does not overshoot (1 + Δt a > 0)."""
    r = 1.0 + dt * np.asarray(a, dtype=float)
    if np.any(r <= 0):
        raise ValueError(f"1 + dt*a must be > 0 (no overshooting Euler step), got dt={dt!r}, a={a!r}")
    return np.minimum(1.0, r)


def growth_defect(a, t, dt: float) -> np.ndarray:
    """δ with e^{at}(1 − δ) ≤ (1 + Δt a)^{t/Δt} ≤ e^{at}: δ = t Δt a² / (2 min(1, 1 + Δt a))."""
    a = np.asarray(a, dtype=float)
    return np.asarray(t, dtype=float) * dt * a**2 / (2.0 * _stable_step(a, dt))


def affine_flow_error_bound(a, b, x0, t, dt: float) -> np.ndarray:
    """Bound on |X(t) − x_l| for x' = a x + b from x0: |a x0 + b| |a| t Δt e^{at} / (2 min(1, 1 + Δt a))."""
    a = np.asarray(a, dtype=float)
    t = np.asarray(t, dtype=float)
    return np.abs(a * np.asarray(x0, dtype=float) + b) * np.abs(a) * t * dt * np.exp(a * t) / (
        2.0 * _stable_step(a, dt)
    )


def lipschitz_error_bound(dt: float, t, lipschitz: float, accel: float) -> np.ndarray:
    """Classical Euler bound (Δt M / (2Λ)) (e^{Λt} − 1) for Lipschitz constant Λ > 0 and |ẍ| ≤ M."""
    if not lipschitz > 0:
        raise ValueError(f"lipschitz must be > 0, got lipschitz={lipschitz!r}")
    return dt * accel / (2.0 * lipschitz) * np.expm1(lipschitz * np.asarray(t, dtype=float))


def observed_order(error_coarse: float, error_fine: float) -> float:
    """log₂(e_L / e_{2L}): the convergence order measured by halving the step."""
    return float(np.log2(error_coarse / error_fine))
