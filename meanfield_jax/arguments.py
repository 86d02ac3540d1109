"""Checks of the arguments a public call is given, made in Python before anything is compiled."""

from __future__ import annotations

import numbers
from typing import Any

import jax

__all__ = ["concrete_scalar", "whole_number"]


def concrete_scalar(x: Any) -> float | None:
    """A scalar's value as a Python float now, or None while it is traced (its value known only inside the
    compiled program)."""
    try:
        return float(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def whole_number(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer >= ``minimum`` (a NumPy integer too, not a bool), else a
    ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {name}={value!r}")
    return int(value)
