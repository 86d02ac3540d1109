"""Shardings that are part of an array's type (a mesh of ``AxisType.Explicit`` axes).

Under a mesh whose axes are Explicit (the default of ``jax.make_mesh``, used inside ``jax.set_mesh``), every
array's type carries its sharding, and JAX asks the program to say what it wants where the answer is
ambiguous: the result of a contraction over a sharded axis, the buffer an update is written into, an array
created from nothing (random draws, zeros). Under Auto axes (``jax.sharding.Mesh``, the default of
:func:`~meanfield_jax.sharding.particle_mesh`) or on one device the compiler decides, and a sharding given
as a bare ``PartitionSpec`` is an error outside a mesh context. :func:`explicit_spec` tells the two apart,
so that the solvers name a sharding only where the types hold one.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import PartitionSpec

__all__ = ["explicit_spec", "replicated_spec", "stacked_spec", "transposed_spec"]


def explicit_spec(x: Any) -> PartitionSpec | None:
    """The ``PartitionSpec`` in the type of ``x`` (an array, a tracer or a ``jax.ShapeDtypeStruct``) when it
    names a mesh axis, else None (replicated, Auto axes, or one device)."""
    sharding = getattr(x, "sharding", None) if isinstance(x, jax.ShapeDtypeStruct) else jax.typeof(x).sharding
    spec = getattr(sharding, "spec", None)
    if spec is None or all(entry is None for entry in spec):
        return None
    return spec


def stacked_spec(x: Any) -> PartitionSpec | None:
    """The spec of a stack of arrays like ``x`` on a new leading axis (None as for :func:`explicit_spec`)."""
    spec = explicit_spec(x)
    return None if spec is None else PartitionSpec(None, *spec)


def replicated_spec(x: Any, ndim: int) -> PartitionSpec | None:
    """A replicated spec of ``ndim`` entries for a result computed from ``x`` (a contraction over its
    sharded axis, say) where the type of ``x`` holds a sharding, else None."""
    return None if explicit_spec(x) is None else PartitionSpec(*([None] * ndim))


def transposed_spec(x: Any) -> PartitionSpec | None:
    """The spec of ``x.T`` (None as for :func:`explicit_spec`)."""
    spec = explicit_spec(x)
    return None if spec is None else PartitionSpec(*reversed(tuple(spec)))
