"""Low-overhead compiled calls for the solvers' entry points.

``eqx.filter_jit`` splits every argument into arrays and the rest and hashes the rest on each call; for a
solve on a small grid that dispatch (~0.1 ms measured per call, against ~0.02 ms for ``jax.jit``) is a large
part of the whole call. :func:`jit_arrays` compiles a function with ``jax.jit`` (static arguments named)
and uses it whenever every leaf of the other arguments is a JAX array (or a tracer), as for a NeuralField,
a grid and a density; otherwise (a callable diffusion, a user field holding Python numbers or functions)
it falls back to ``eqx.filter_jit``, which treats such leaves as static. Both compile the same function.

:func:`odd_count_on_cpu` tells the kernels whose arrays would hold an odd count of values to make it even.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax

__all__ = ["jit_arrays", "odd_count_on_cpu"]


def odd_count_on_cpu(count: int) -> bool:
    """Whether ``count`` values would make a slow elementwise kernel: XLA's CPU backend neither splits a
    kernel over an odd count of values across threads nor vectorises it (at 100 001 values against
    100 000, measured: tanh 2.3x, exp 2.6x, expm1 3.2x, threefry bits 5–6x, erfinv 8–9x the time). Callers
    then evaluate one value more (a copy of the last) and drop it."""
    return count % 2 == 1 and jax.default_backend() == "cpu"


def jit_arrays(fn: Callable[..., Any], static_argnames: tuple[str, ...]) -> Callable[..., Any]:
    """``fn`` compiled by ``jax.jit(fn, static_argnames=...)`` for array-only arguments, else by
    ``eqx.filter_jit`` (see the module docstring)."""
    names = list(inspect.signature(fn).parameters)
    static_positions = frozenset(names.index(name) for name in static_argnames)
    fast = jax.jit(fn, static_argnames=static_argnames)
    general = eqx.filter_jit(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        dynamic = [a for i, a in enumerate(args) if i not in static_positions]
        dynamic += [v for k, v in kwargs.items() if k not in static_argnames]
        if all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(dynamic)):
            return fast(*args, **kwargs)
        return general(*args, **kwargs)

    return call
