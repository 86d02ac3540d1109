"""The package's compiled calls: low-overhead dispatch for the solvers' entry points, and XLA options.

``eqx.filter_jit`` splits every argument into arrays and the rest and hashes the rest on each call; for a
solve on a small grid that dispatch (~0.1 ms measured per call, against ~0.02 ms for ``jax.jit``) is a large
part of the whole call. :func:`jit_arrays` compiles a function with ``jax.jit`` (static arguments named)
and uses it whenever every leaf of the other arguments is a JAX array (or a tracer), as for a NeuralField,
a grid and a density; otherwise (a callable diffusion, a user field holding Python numbers or functions)
it falls back to ``eqx.filter_jit``, which treats such leaves as static. Both compile the same function.

Every compiled call of the package passes :data:`COMPILER_OPTIONS` to XLA (through :func:`jit`,
:func:`filter_jit` or :func:`jit_arrays`). On CPU: vectors of 512 bits where the processor has them
(AVX-512), where XLA's own default is 256 bits; and copy insertion with region analysis, which leaves
fewer copies of loop-carried buffers in the adjoints' loops. The first changes values by round-off at
most, the second not at all (both measured in ``docs/scaling.md``). They are passed for calls outside
any transformation: JAX refuses compiler options for a jit inside a user's ``jax.jit`` (whose program is
compiled with its own) or under ``jax.grad``, and eager ``jax.vmap`` calls go without them too.
``XLA_FLAGS`` sets options for every program. A processor without AVX-512 compiles its vectors as before,
and other backends do not read the CPU options. An option that ``XLA_FLAGS`` names, as it is when the
package is imported (the vector width 256, say, on a processor that lowers its clock for wide vectors), is
left to it.

:func:`odd_count_on_cpu` tells the kernels whose arrays would hold an odd count of values to make it even.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import equinox as eqx
import jax
from jax._src import core as jax_core

__all__ = [
    "COMPILER_OPTIONS",
    "PREFERRED_OPTIONS",
    "compiler_options",
    "filter_jit",
    "jit",
    "jit_arrays",
    "odd_count_on_cpu",
]

PREFERRED_OPTIONS = {
    "xla_cpu_prefer_vector_width": 512,
    "xla_cpu_copy_insertion_use_region_analysis": True,
}


def compiler_options(xla_flags: str | None = None) -> dict[str, int | bool]:
    """The XLA options of the package's compiled calls (:data:`PREFERRED_OPTIONS`), less those that
    ``xla_flags`` (default: the ``XLA_FLAGS`` environment variable) sets itself."""
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    return {name: value for name, value in PREFERRED_OPTIONS.items() if name not in flags}


COMPILER_OPTIONS = MappingProxyType(compiler_options())  # XLA_FLAGS as it is when the package is imported


def _at_top_level() -> bool:
    """Whether no JAX transformation is tracing (JAX's own test of its trace state). The package passes
    its options only then: JAX refuses compiler options for a jit staged into another program (under
    ``jax.jit``, ``lax.scan``) or differentiated by ``jax.grad``."""
    return jax_core.trace_state_clean()


def _with_options(compile_: Callable[..., Callable], fn: Callable[..., Any], kwargs: dict) -> Callable:
    """``fn`` compiled by ``compile_`` with :data:`COMPILER_OPTIONS` for calls at the top level, and
    without them under a transformation (where the outer program, if any, is compiled with its own)."""
    plain = compile_(fn, **kwargs)
    tuned = compile_(fn, compiler_options=dict(COMPILER_OPTIONS), **kwargs) if COMPILER_OPTIONS else plain

    @functools.wraps(fn)
    def call(*args, **call_kwargs):
        return (tuned if _at_top_level() else plain)(*args, **call_kwargs)

    return call


def jit(fn: Callable[..., Any] | None = None, **kwargs: Any) -> Callable[..., Any]:
    """``jax.jit(fn, **kwargs)``, with :data:`COMPILER_OPTIONS` when called outside any transformation."""
    if fn is None:
        return functools.partial(jit, **kwargs)
    return _with_options(jax.jit, fn, kwargs)


def filter_jit(fn: Callable[..., Any] | None = None, **kwargs: Any) -> Callable[..., Any]:
    """``eqx.filter_jit(fn, **kwargs)``, with :data:`COMPILER_OPTIONS` as for :func:`jit`."""
    if fn is None:
        return functools.partial(filter_jit, **kwargs)
    return _with_options(eqx.filter_jit, fn, kwargs)


def odd_count_on_cpu(count: int) -> bool:
    """Whether ``count`` values would make a slow elementwise kernel: XLA's CPU backend neither splits a
    kernel over an odd count of values across threads nor vectorises it (at 100 001 values against
    100 000, measured: tanh 2.3x, exp 2.6x, expm1 3.2x, threefry bits 5–6x, erfinv 8–9x the time). Callers
    then evaluate one value more (a copy of the last) and drop it."""
    return count % 2 == 1 and jax.default_backend() == "cpu"


def jit_arrays(fn: Callable[..., Any], static_argnames: tuple[str, ...]) -> Callable[..., Any]:
    """``fn`` compiled by :func:`jit` (``jax.jit``, ``static_argnames``) for array-only arguments, else by
    :func:`filter_jit` (``eqx.filter_jit``; see the module docstring)."""
    names = list(inspect.signature(fn).parameters)
    static_positions = frozenset(names.index(name) for name in static_argnames)
    fast = jit(fn, static_argnames=static_argnames)
    general = filter_jit(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        dynamic = [a for i, a in enumerate(args) if i not in static_positions]
        dynamic += [v for k, v in kwargs.items() if k not in static_argnames]
        if all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(dynamic)):
            return fast(*args, **kwargs)
        return general(*args, **kwargs)

    return call
