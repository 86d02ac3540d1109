"""Checks of the arguments a public call is given, made in Python before anything is compiled."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np

__all__ = ["boolean", "concrete_scalar", "finite_values", "interval", "number", "real_values", "whole_number"]


def concrete_scalar(x: Any) -> float | None:
    """A scalar's value as a Python float now, or None while it is traced (its value known only inside the
    compiled program)."""
    try:
        return float(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def number(value: Any, name: str) -> float:
    """``value`` as a Python float, or a TypeError naming it (None, a bool, a string, an array of several
    values)."""
    if isinstance(value, str | bytes | bool | np.bool_):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from exc


def boolean(value: Any, name: str) -> bool:
    """``value`` if it is True or False (a NumPy bool too), else a TypeError naming it (a string such as
    "no" would otherwise count as true)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {name}={value!r}")
    return bool(value)


def real_values(x: Any, name: str) -> np.ndarray | None:
    """A concrete number or array as float values on the host (a TypeError naming it for a string, a bool
    or what is not a number); None while traced."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, str | bytes | bool | np.bool_):
        raise TypeError(f"{name} must be a real number or array, got {type(x).__name__}")
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real number or array, got {type(x).__name__}") from exc


def interval(low: Any, high: Any) -> None:
    """Concrete ``low`` and ``high`` (numbers, or arrays of bounds) must be finite with low < high throughout
    (a TypeError or ValueError naming them); traced ones pass."""
    lo, hi = real_values(low, "low"), real_values(high, "high")
    if lo is None or hi is None:
        return
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
        raise ValueError(f"low and high must be finite with low < high, got low={low!r}, high={high!r}")


def finite_values(x: Any, name: str) -> np.ndarray | None:
    """A concrete array's values on the host, once checked finite (a ValueError naming it and counting the
    NaN and inf values otherwise); None for a traced array, whose values are not known yet."""
    if isinstance(x, jax.core.Tracer):
        return None
    values = np.asarray(x)
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
        raise ValueError(f"{name} must be finite, got {bad} non-finite values (NaN or inf)")
    return values


def whole_number(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer >= ``minimum`` (a NumPy integer too, not a bool), else a
    ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {name}={value!r}")
    return int(value)
