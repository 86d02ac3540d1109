"""A conditional that stays a conditional under ``jax.vmap``.

``lax.cond(p, f, g, x)`` runs one branch. Under ``jax.vmap`` with a batched predicate JAX rewrites it as
``select(p, f(x), g(x))``: both branches run, for the whole batch, at every call. In the kinetic solvers
each field has its own CFL step, so under a vmap over fields the loop's time is batched, and so is every
predicate that depends on it: the skipped steps past a save time, the barriers between Runge–Kutta stages,
the recomputation of the coefficients when a step enters a new layer (which then ran at every step). The
selects also let XLA fuse across what were barriers. A batch of four solves took 1.9–5x the time of the
same four solves one after the other (benchmarks/kinetic.py, "batch").

:func:`batch_cond` is ``lax.cond`` where the predicate is not batched. With a batched predicate p it runs

    cond(all p, vmap f, cond(any p, select(p, vmap f, vmap g), vmap g)),

so a branch runs, for the whole batch, only when some member takes it, and both only when the members
disagree. With a predicate shared by the batch it is one ``lax.cond`` of the batched branches, whose
outputs are batched where a batched input reaches them in either branch (found on the branches' jaxprs),
as through ``lax.cond``: a JVP rule that forms value and tangent in one conditional then keeps the value
unbatched under a vmap over tangent directions (the forward sensitivities). Derivatives are those of
``lax.cond`` (a ``custom_jvp`` whose rule is ``lax.cond``'s JVP), so forward and reverse mode work as
for ``lax.cond``; a vmap of a derivative gets ``lax.cond``'s batching (the select) back.

:func:`behind_conditional` uses a conditional for its other effect: XLA does not fuse across one, so what
its branches compute is written to memory by kernels of its own before anything reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jax.extend.core import Jaxpr, Var
from jaxtyping import Array, ArrayLike

__all__ = ["batch_cond", "behind_conditional"]


def batch_cond(pred: ArrayLike, true_fun: Callable[..., Any], false_fun: Callable[..., Any], *operands: Any):
    """``jax.lax.cond(pred, true_fun, false_fun, *operands)`` that runs no branch needlessly under vmap.

    The branches may close over traced values (they are closure-converted: every array they close over,
    integers too, becomes an explicit input). Both must return the same structure, shapes and dtypes.
    """
    if not isinstance(pred, jax.core.Tracer):  # a concrete predicate: nothing to batch
        return jax.lax.cond(pred, true_fun, false_fun, *operands)
    true_arrays, run_true = _closure_converted(true_fun, operands)
    false_arrays, run_false = _closure_converted(false_fun, operands)

    def plain(pred, true_arrays, false_arrays, operands):
        return jax.lax.cond(
            pred, lambda ops: run_true(ops, true_arrays), lambda ops: run_false(ops, false_arrays), operands
        )

    batched = custom_vmap(plain)

    @batched.def_vmap
    def _rule(axis_size: int, in_batched, pred, true_arrays, false_arrays, operands):
        true_batched, false_batched, operands_batched = in_batched[1:]
        if not in_batched[0]:  # one branch for the whole batch, as lax.cond's own batching
            true, false = (run_true, true_arrays, true_batched), (run_false, false_arrays, false_batched)
            return _shared_predicate(axis_size, pred, true, false, operands, operands_batched)
        # unbatched inputs stay unbatched (in_axes None), not copied axis_size times
        true_axes, false_axes, operand_axes = map(_axes, (true_batched, false_batched, operands_batched))

        def every(run, arrays, array_axes):
            return jax.vmap(run, in_axes=(operand_axes, array_axes), axis_size=axis_size)(operands, arrays)

        def every_true(_):
            return every(run_true, true_arrays, true_axes)

        def every_false(_):
            return every(run_false, false_arrays, false_axes)

        def mixed(_):
            return jax.tree.map(lambda a, b: _select(pred, a, b), every_true(None), every_false(None))

        # batch_cond, not lax.cond: under an outer vmap these predicates are batched too
        def not_all(_):
            return batch_cond(jnp.any(pred), mixed, every_false, None)

        out = batch_cond(jnp.all(pred), every_true, not_all, None)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def call(pred, true_arrays, false_arrays, operands):
        return batched(pred, true_arrays, false_arrays, operands)

    @call.defjvp
    def _jvp(primals, tangents):
        pred = primals[0]
        return jax.jvp(lambda *args: plain(pred, *args), primals[1:], tangents[1:])

    return call(pred, true_arrays, false_arrays, tuple(operands))


def _shared_predicate(axis_size: int, pred: Array, true: tuple, false: tuple, operands: Any, batched: Any):
    """``lax.cond(pred, ...)`` over a batch with one predicate for all members: an output stays unbatched
    where neither branch's value depends on a batched input (so that, e.g., the value of a JVP stays
    unbatched under a vmap over tangent directions, as it does through ``lax.cond``). ``true`` and
    ``false``: (run, the arrays it closes over, their batched flags); ``batched``: the operands' flags."""
    structure, out_batched = None, None
    for run, arrays, arrays_batched in (true, false):
        out, depends = _dependence(run, (operands, arrays), (batched, arrays_batched))
        structure = jax.tree.structure(out)
        out_batched = depends if out_batched is None else [a or b for a, b in zip(out_batched, depends)]
    out_axes = jax.tree.unflatten(structure, [0 if b else None for b in out_batched])

    def branch(run, arrays, arrays_batched):
        in_axes = _axes((batched, arrays_batched))
        vmapped = jax.vmap(run, in_axes=in_axes, out_axes=out_axes, axis_size=axis_size)
        return lambda _: vmapped(operands, arrays)

    # batch_cond, not lax.cond: under an outer vmap that batches pred it stays a conditional
    out = batch_cond(pred, branch(*true), branch(*false), None)
    return out, jax.tree.unflatten(structure, out_batched)


def _axes(batched: Any) -> Any:
    """vmap's in_axes from custom_vmap's batched flags."""
    return jax.tree.map(lambda b: 0 if b else None, batched)


def _dependence(run: Callable[..., Any], inputs: tuple, batched: tuple) -> tuple[Any, list[bool]]:
    """(the shapes of one member's ``run(*inputs)``, for each output leaf whether it depends on an input
    flagged in ``batched``), from the jaxpr of one member (:func:`_depends`)."""
    leaves, treedef = jax.tree.flatten(inputs)
    flags = jax.tree.leaves(batched)
    member = [
        jax.ShapeDtypeStruct(x.shape[1:] if b else x.shape, x.dtype, weak_type=jax.typeof(x).weak_type)
        for x, b in zip(leaves, flags)
    ]
    one_member = jax.make_jaxpr(lambda *ls: run(*jax.tree.unflatten(treedef, ls)), return_shape=True)
    closed, out = one_member(*member)
    return out, _depends(closed.jaxpr, flags)


def _depends(jaxpr: Any, flags: list[bool]) -> list[bool]:
    """Which outputs of ``jaxpr`` depend on its inputs flagged in ``flags``: a forward pass over its
    equations, into the jaxpr of a call (``jax.jit``, ``custom_jvp``: as JAX's JVP leaves jitted functions,
    value and tangent in one call) and of a scan's body (to a fixed point over its carries), and an
    equation's outputs depending on all its inputs otherwise."""
    dependent = {v for v, b in zip(jaxpr.invars, flags) if b}
    for eqn in jaxpr.eqns:
        inputs = [isinstance(v, Var) and v in dependent for v in eqn.invars]
        if not any(inputs):
            continue
        called = _called_jaxpr(eqn)
        if called is None:
            outputs = [True] * len(eqn.outvars)
        elif eqn.primitive.name == "scan":
            outputs = _scan_depends(called, inputs, eqn.params["num_consts"], eqn.params["num_carry"])
        else:
            outputs = _depends(called, inputs)
        dependent.update(v for v, d in zip(eqn.outvars, outputs) if d)
    return [isinstance(v, Var) and v in dependent for v in jaxpr.outvars]


def _scan_depends(body: Any, inputs: list[bool], num_consts: int, num_carry: int) -> list[bool]:
    """:func:`_depends` through a scan: a carry that one step makes dependent is an input of the next, so
    the body's pass is repeated with those carries flagged until no flag changes."""
    carry = slice(num_consts, num_consts + num_carry)
    while True:
        outputs = _depends(body, inputs)
        carried = [a or b for a, b in zip(inputs[carry], outputs[:num_carry])]
        if carried == inputs[carry]:
            return outputs
        inputs = [*inputs[:num_consts], *carried, *inputs[carry.stop :]]


def _called_jaxpr(eqn: Any) -> Any:
    """The jaxpr an equation calls with its own inputs and outputs, or None."""
    for key in ("jaxpr", "call_jaxpr"):
        param = eqn.params.get(key)
        called = getattr(param, "jaxpr", param)  # a ClosedJaxpr's jaxpr
        if not isinstance(called, Jaxpr):
            continue
        if (len(called.invars), len(called.outvars)) == (len(eqn.invars), len(eqn.outvars)):
            return called
    return None


def _closure_converted(fun: Callable[..., Any], operands: tuple) -> tuple[Any, Callable[..., Any]]:
    """(the arrays ``fun`` closes over, run(operands, arrays) = fun(*operands) with those arrays)."""
    arrays, static = eqx.partition(eqx.filter_closure_convert(fun, *operands), eqx.is_array)
    return arrays, lambda operands, arrays: eqx.combine(arrays, static)(*operands)


def _select(pred: Array, a: Array, b: Array) -> Array:
    """``a`` where the batch member's predicate holds, else ``b`` (pred has one entry per leading index)."""
    return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - 1)), a, b)


def behind_conditional(fn: Callable[..., Any], *operands: Any, cond: Callable = batch_cond) -> Any:
    """``fn(*operands)``, computed by kernels of its own and written to memory before anything reads it.

    XLA fuses elementwise work (a slice, a dynamic slice, a pad) into each consumer and re-evaluates it
    there, and it does not fuse across a conditional; so ``fn`` runs in both branches of ``cond`` (a
    :func:`batch_cond` by default, which stays one under ``jax.vmap``) whose predicate holds at run time but
    is not a constant XLA could fold: x_m == x_m for the middle entry x_m of the first floating-point
    operand with entries (false only for NaN, and both branches are the same). Without one, ``fn`` is called
    as it is. ``fn`` must not close over traced values: pass them in ``operands``.
    """
    leaves = [x for x in jax.tree.leaves(operands) if jnp.issubdtype(x.dtype, jnp.inexact) and x.size > 0]
    if not leaves:
        return fn(*operands)
    x = leaves[0]
    middle = x.ravel()[x.size // 2]  # not a ghost cell: its constant would fold
    return cond(middle == middle, fn, fn, *operands)
