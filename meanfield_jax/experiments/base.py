"""What an experiment returns: figures, checks against exact results, and extra metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

__all__ = ["Check", "ExperimentResult", "make_key", "round_off", "stage"]


@dataclass(frozen=True)
class Check:
    """|value − expected| ≤ tol."""

    value: float
    expected: float
    tol: float

    @property
    def passed(self) -> bool:
        return bool(math.isfinite(self.value) and abs(self.value - self.expected) <= self.tol)

    def to_json(self) -> dict[str, Any]:
        return {"value": float(self.value), "expected": float(self.expected), "tol": float(self.tol),
                "passed": self.passed}


@dataclass
class ExperimentResult:
    """Figures (name → matplotlib Figure), checks (name → Check) and free-form metrics."""

    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, value, expected, tol) -> None:
        self.checks[name] = Check(float(np.asarray(value)), float(expected), float(tol))


def round_off(steps: int = 1) -> float:
    """A bound on accumulated round-off after ``steps`` conservative updates in the active precision."""
    eps = float(np.finfo(np.float64 if jax.config.jax_enable_x64 else np.float32).eps)
    return 10.0 * eps * max(steps, 1)


def make_key(seed: int) -> jax.Array:
    """The PRNG key of a run: every random draw of an experiment derives from the config's seed."""
    return jax.random.PRNGKey(seed)


Logger = Callable[[str], None]


def stage(log: Logger, index: int, total: int, what: str) -> None:
    """Report progress through an experiment's stages."""
    log(f"[{index}/{total}] {what}")
