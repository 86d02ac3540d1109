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

__all__ = ["explicit_spec", "mesh_typed", "replicated_spec", "stacked_spec", "transposed_spec", "typed_as"]


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


def mesh_typed(types: Any) -> Any:
    """``types`` (``jax.ShapeDtypeStruct`` leaves) with the leaves whose type names no sharding replicated
    over the mesh that another leaf's names, if any (under Explicit axes a scalar made outside a loop has no
    sharding in its type, one made inside it a replicated one)."""
    meshes = [t.sharding.mesh for t in jax.tree.leaves(types) if getattr(t, "sharding", None) is not None]
    if not meshes:
        return types
    replicated = jax.sharding.NamedSharding(meshes[0], PartitionSpec())

    def typed(t: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:
        return t if t.sharding is not None else jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=replicated)

    return jax.tree.map(typed, types)


def typed_as(x: Any, like: jax.ShapeDtypeStruct) -> Any:
    """``x`` resharded to the sharding in the type of ``like`` where that names one and differs."""
    sharding = getattr(like, "sharding", None)
    if sharding is None or jax.typeof(x).sharding == sharding:
        return x
    return jax.sharding.reshard(x, sharding)
