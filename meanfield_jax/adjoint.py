"""Gradients through long loops x_{l+1} = Φ_l(x_l), l = 0, …, N − 1, with memory bounded in N.

Reverse-mode differentiation of a loop needs the states x_l in reverse order. Storing all of them
(``adjoint="direct"``) costs N states. Both strategies here store a checkpoint every k ≈ √N steps
and, going backwards segment by segment, recompute the k states of one segment from its checkpoint:
≈ 2√N stored states and one extra forward sweep. Beyond N = 256 steps the segments are themselves split
the same way (:func:`segment_plan`): with m levels of checkpoints no level holds more than ~16 states
(N^{1/m} each), at the price of one more forward sweep per level, so that memory grows like N^{1/m}
rather than √N (10x the depth from 100 to 1000 steps: 1.3x the memory instead of 3.2x).

* :func:`checkpointed_scan`: ``jax.checkpoint`` on each segment; JAX differentiates the step.
  Works for any step function.
* :func:`adjoint_scan`: the discrete adjoint, for steps that provide their own reverse step
  (an :class:`AbstractAdjointStep`; :class:`VJPStep` uses JAX's VJP of one step as its reverse step).
  With the cotangent p_l = ∂J/∂x_l,

      p_N = ∂J/∂x_N,   p_l = (∂Φ_l/∂x_l)ᵀ p_{l+1},   ∂J/∂θ_l = (∂Φ_l/∂θ_l)ᵀ p_{l+1},

  which is exactly the gradient of the discrete loop (not of a continuous adjoint ODE). A hand-written
  reverse step fuses these products and keeps only what it needs (e.g. σ'(z_l) instead of every
  intermediate), and the parameter gradients are per-step arrays, never per-step copies of the state.
  It is a ``jax.custom_vjp``: reverse mode only (``jax.jvp``/``jacfwd``/``hessian`` refuse it).

Both give the gradient of the same discrete loop as plain reverse mode, up to round-off.

* :func:`forward_sensitivities`: no reverse sweep at all. The tangents of the P parameters are carried
  through the loop by forward mode and contracted with the output's cotangent: memory independent of N,
  time that of a loop carrying P tangents; the kinetic solvers' ``adjoint="forward"``.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, PyTree

from .conditional import batch_cond, behind_conditional
from .sharding_types import stacked_spec

__all__ = [
    "ADJOINTS",
    "KINETIC_ADJOINTS",
    "AbstractAdjointStep",
    "Adjoint",
    "VJPStep",
    "adjoint_scan",
    "check_adjoint",
    "checkpoint_interval",
    "checkpointed_scan",
    "forward_sensitivities",
    "loop_adjoint",
    "materialised_vjp",
    "segment_plan",
    "zero_cotangent",
]

Adjoint = Literal["checkpointed", "direct", "discrete"]
ADJOINTS: tuple[str, ...] = ("checkpointed", "direct", "discrete")
# The kinetic solvers also offer forward sensitivities (:func:`forward_sensitivities`): few parameters.
KINETIC_ADJOINTS: tuple[str, ...] = (*ADJOINTS, "forward")
# Above this many states per level (N > 16² steps with one level of segments) another level is added.
MAX_STATES_PER_LEVEL = 16


def check_adjoint(adjoint: str) -> None:
    """Raise a ValueError unless ``adjoint`` names one of :data:`ADJOINTS`."""
    if not isinstance(adjoint, str) or adjoint not in ADJOINTS:
        raise ValueError(f"adjoint must be one of {', '.join(map(repr, ADJOINTS))}, got adjoint={adjoint!r}")


def loop_adjoint(adjoint: str) -> str:
    """The time loop's own adjoint for a solver's ``adjoint``: forward sensitivities run a plain loop."""
    return "direct" if adjoint == "forward" else adjoint


def checkpoint_interval(num_steps: int) -> int:
    """Segment length k ≈ √N, where N/k checkpoints plus k recomputed states is smallest.

    A divisor of N within a factor 2 of √N is preferred (all segments then have the same length);
    otherwise k = ⌈√N⌉ and the first N mod k steps form a shorter head segment.
    """
    root = math.sqrt(num_steps)
    divisors = [k for k in range(max(1, math.ceil(root / 2)), math.floor(2 * root) + 1) if num_steps % k == 0]
    if divisors:
        return min(divisors, key=lambda k: (num_steps // k + k, k))
    return max(1, math.isqrt(max(num_steps - 1, 0)) + 1)


def segment_plan(num_steps: int) -> tuple[int, ...]:
    """Segment lengths of the nested checkpoint levels, outermost first: (k_1, k_2, …, k_m).

    One level, (:func:`checkpoint_interval`(N),), while N ≤ 16²; otherwise m + 1 = ⌈log N / log 16⌉ levels
    in all, the outer segments k_1 ≈ N^{m/(m+1)} long (N^{1/(m+1)} of them) and each split by
    ``segment_plan(k_1)``: every level then stores about N^{1/(m+1)} ≤ 16 checkpoints.
    """
    levels = max(2, math.ceil(math.log(max(num_steps, 2)) / math.log(MAX_STATES_PER_LEVEL) - 1e-9))
    if levels <= 2:
        return (checkpoint_interval(num_steps),)
    outer = max(1, round(num_steps ** ((levels - 1) / levels)))
    return (outer, *segment_plan(outer))


def _split_segments(xs: PyTree, num_steps: int, k: int) -> tuple[PyTree, PyTree]:
    """Split per-step inputs into a head of N mod k steps and ⌊N/k⌋ segments of k steps."""
    r, m = num_steps % k, num_steps // k
    head = jax.tree.map(lambda a: a[:r], xs)
    body = jax.tree.map(lambda a: a[r:].reshape(m, k, *a.shape[1:]), xs)
    return head, body


def _join_segments(head: PyTree, body: PyTree) -> PyTree:
    """Inverse of :func:`_split_segments` for per-step outputs."""
    return jax.tree.map(
        lambda h, b: jnp.concatenate([h, b.reshape(-1, *b.shape[2:])], axis=0), head, body
    )


def _num_steps(xs: PyTree) -> int:
    return jax.tree.leaves(xs)[0].shape[0]


def _scan_steps(step: Callable[[Array, Any], Array], carry: Array, xs: PyTree) -> Array:
    if _num_steps(xs) == 0:
        return carry
    return jax.lax.scan(lambda c, x: (step(c, x), None), carry, xs)[0]


def checkpointed_scan(
    step: Callable[[Array, Any], Array], carry: Array, xs: PyTree, *, adjoint: Adjoint = "checkpointed"
) -> Array:
    """The final carry of ``carry ← step(carry, xs[l])`` for l = 0, …, N − 1.

    With ``adjoint="checkpointed"`` each segment of ≈ √N steps (:func:`checkpoint_interval`) is wrapped in
    ``jax.checkpoint``, so reverse mode stores only the segments' first states and recomputes the rest
    (nested for long loops, :func:`segment_plan`); ``"direct"`` is the plain scan (every state stored).
    Both give the same numbers.
    """
    if adjoint == "direct" or _num_steps(xs) == 0:
        return _scan_steps(step, carry, xs)
    num_steps = _num_steps(xs)
    plan = segment_plan(num_steps)
    head, body = _split_segments(xs, num_steps, plan[0])
    # a segment of an outer level is itself checkpointed by its own plan
    run = _scan_steps if len(plan) == 1 else checkpointed_scan
    segment = jax.checkpoint(functools.partial(run, step), prevent_cse=False)
    carry = segment(carry, head)
    return jax.lax.scan(lambda c, x: (segment(c, x), None), carry, body)[0]


def zero_cotangent(leaf: Any) -> Array | None:
    """Zeros for a floating-point leaf; None (no cotangent) for integer arrays and PRNG keys."""
    if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact):
        return jnp.zeros_like(leaf)
    return None


class AbstractAdjointStep(eqx.Module):
    """One step x_{l+1} = Φ(x_l; θ_l, s) of a loop, with its hand-written reverse (adjoint) step.

    θ_l are the per-step inputs (a slice of ``xs``), s the inputs shared by all steps (``shared``).
    Subclasses hold only static configuration, so that the step can be a non-differentiable argument.

    ``unrolled_segments``: whether the backward pass writes out each innermost segment's steps (at most
    ~16, :func:`segment_plan`) instead of looping over them. Each recomputed state and residual is then a
    buffer of its own, where the loops write them into a segment's buffer and read them back (XLA's
    in-place dynamic-update-slice runs on one thread): worth it for small cheap steps (the particles),
    not for large ones (the kinetic steps: no faster or slower, and up to 5.6x the compile time). The
    backward pass then never calls :meth:`read`.
    """

    unrolled_segments: ClassVar[bool] = False

    @abc.abstractmethod
    def forward(self, x: Array, xs_l: PyTree, shared: PyTree) -> tuple[Array, PyTree]:
        """Return x_{l+1} and the residual (whatever :meth:`backward` needs besides x_l)."""

    @abc.abstractmethod
    def backward(
        self, x: Array, residual: PyTree, p: Array, xs_l: PyTree, shared: PyTree
    ) -> tuple[Array, PyTree, PyTree]:
        """Given x_l, its residual and p_{l+1}, return (p_l, ∂J/∂θ_l, this step's part of ∂J/∂s).

        Cotangents follow the structure of ``xs_l`` and ``shared``, with None for leaves that are not
        floating point (integer indices, PRNG keys); see :func:`zero_cotangent`.
        """

    def read(self, buffers: PyTree, i: Array) -> PyTree:
        """(x_l, residual) for the backward pass: entry i of the buffers its segment was recomputed into."""
        return _read(buffers, i)


class VJPStep(AbstractAdjointStep):
    """A step x_{l+1} = fn(x_l, xs_l, shared) whose reverse step is JAX's VJP of ``fn`` at x_l.

    For steps without a hand-written adjoint (the PDE solvers' SSP Runge–Kutta steps): the reverse step
    p_l = (∂fn/∂x_l)ᵀ p_{l+1}, ∂J/∂shared += (∂fn/∂shared)ᵀ p_{l+1} is ``jax.vjp`` of ``fn`` at the recomputed
    x_l, so every step is differentiated on its own. ``fn`` must not close over traced values, integer ones
    included: pass them in ``shared`` (:func:`equinox.filter_closure_convert` hoists every closed-over
    array). Leaves of x and ``shared`` that are not floating point (counters, layer indices) get no
    cotangent: their entries of p pass through unchanged.

    With ``copy_reads`` the backward pass copies x_l out of its segment's buffer (behind a conditional,
    :func:`~meanfield_jax.conditional.behind_conditional`) before the VJP reads it. Otherwise XLA fuses the
    dynamic slice of the buffer into every kernel that reads x_l, and into a pad as a bounds-checked read
    per element: measured, the Fokker–Planck gradient 4–15 % faster at 10³–10⁵ cells with the copy, the
    MUSCL one up to 15 % slower (at 10³ cells; benchmarks/README.md).
    """

    fn: Callable = eqx.field(static=True)
    copy_reads: bool = eqx.field(static=True, default=False)

    def forward(self, x, xs_l, shared):
        return self.fn(x, xs_l, shared), ()

    def backward(self, x, residual, p, xs_l, shared):
        x_diff, x_rest = eqx.partition(x, eqx.is_inexact_array)
        s_diff, s_rest = eqx.partition(shared, eqx.is_inexact_array)

        def differentiable(xd, sd):
            out = self.fn(eqx.combine(xd, x_rest), xs_l, eqx.combine(sd, s_rest))
            return eqx.filter(out, eqx.is_inexact_array)

        _, vjp = jax.vjp(differentiable, x_diff, s_diff)
        p_diff, p_rest = eqx.partition(p, eqx.is_inexact_array)
        p_x, d_shared = vjp(p_diff)
        return eqx.combine(p_x, p_rest), None, d_shared

    def read(self, buffers, i):
        return behind_conditional(_read, buffers, i) if self.copy_reads else _read(buffers, i)


def materialised_vjp(fn: Callable[..., PyTree]) -> Callable[..., PyTree]:
    """``fn`` itself, with the same cotangents, computed so that XLA materialises them before any consumer.

    XLA fuses elementwise work into its consumers, duplicating it where need be, but not across a
    conditional. In JAX's VJP of a stencil, the cotangents of all inputs come from one chain of elementwise
    operations; when one of them feeds a reduction (the cotangent of a scalar Δt folded into the face
    velocities), XLA re-evaluates the stencil's adjoint inside the reduction's kernel, which runs on one
    thread on CPU. Here the VJP of ``fn`` runs inside a conditional: its cotangents are computed once, by
    kernels split across threads, and reductions then read them. The residuals are the inputs alone: the
    backward pass evaluates ``fn`` again inside its VJP (as under ``jax.checkpoint``). The predicate is
    "some cotangent is non-zero"; otherwise the VJP, being linear in the cotangent, is zero for finite
    inputs, and zero is returned (where 0 · inf would have given NaN). The conditional is a
    :func:`~meanfield_jax.conditional.batch_cond`: under ``jax.vmap`` it stays one.

    ``fn`` maps floating-point arrays (pytrees) to floating-point arrays and must not close over traced
    values. The result is a ``jax.custom_vjp``: reverse mode only, so it is used by the discrete adjoint
    (:class:`VJPStep`), which has no forward mode anyway.
    """

    @jax.custom_vjp
    def call(*args):
        return fn(*args)

    def forward(*args):
        return fn(*args), args

    def backward(args, cotangent):
        def vjp(operands):
            primals, ct = operands
            return jax.vjp(fn, *primals)[1](ct)

        def zero(operands):
            return jax.tree.map(jnp.zeros_like, operands[0])

        nonzero = jnp.stack([jnp.any(leaf != 0) for leaf in jax.tree.leaves(cotangent)]).any()
        return batch_cond(nonzero, vjp, zero, (args, cotangent))

    call.defvjp(forward, backward)
    return call


def forward_sensitivities(
    fn: Callable[[PyTree, PyTree], PyTree],
    params: PyTree,
    rest: PyTree,
    reverse: Callable[[PyTree, PyTree], PyTree] | None = None,
) -> PyTree:
    """``fn(params, rest)``, whose reverse-mode derivative w.r.t. ``params`` is formed by forward mode.

    Forward sensitivity analysis (CVODES' forward sensitivities, diffrax's ``ForwardMode``): for each of
    the P floating-point numbers θ_j in the leaves of ``params`` that are differentiated, the tangent
    ∂y/∂θ_j of the outputs y is carried through the loop beside the state (``jax.jvp``, the P directions
    batched by ``jax.vmap``). The forward pass keeps these P tangents and the reverse pass contracts them,
    ∂J/∂θ_j = ⟨∂J/∂y, ∂y/∂θ_j⟩. Nothing per step is stored or recomputed: memory is P times the outputs
    whatever the number of steps, and the time that of a forward pass carrying P tangents, the cheaper
    choice when P is a handful (a 1-D field's W and b), the costlier when P is large. The leaves of
    ``rest`` (an initial density, say) are differentiated by reverse mode through ``reverse`` (the same
    function as ``fn``, written for reverse mode; default ``fn``), run again in the reverse pass, and only
    when they are differentiated (the ``custom_vjp``'s symbolic zeros tell which).
    A ``jax.custom_vjp``: reverse mode only (``jax.jvp`` refuses it; for forward mode differentiate the
    solver with another adjoint).
    """
    reverse = fn if reverse is None else reverse
    dynamic, static = eqx.partition(params, eqx.is_inexact_array)
    rest_dynamic, rest_static = eqx.partition(rest, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(dynamic)
    rest_leaves, rest_treedef = jax.tree.flatten(rest_dynamic)

    def solve(d: list[Array], r: list[Array], function: Callable[[PyTree, PyTree], PyTree] = fn) -> PyTree:
        return function(
            eqx.combine(jax.tree.unflatten(treedef, d), static),
            eqx.combine(jax.tree.unflatten(rest_treedef, r), rest_static),
        )

    @jax.custom_vjp
    def call(d: list[Array], r: list[Array]) -> PyTree:
        return solve(d, r)

    def forward(d, r):
        values, rest_values = [x.value for x in d], [x.value for x in r]
        moving = [x.value if x.perturbed else None for x in d]  # a residual that names the θ_j

        def pushforward(direction: Array) -> tuple[PyTree, PyTree]:
            tangents = _split(direction, moving, [jnp.zeros_like(v) for v in values])
            return jax.jvp(lambda v: solve(v, rest_values), (values,), (tangents,))

        if _size(moving) == 0:  # only ``rest`` is differentiated
            out, sensitivities = solve(values, rest_values), None
        else:
            directions = jnp.eye(_size(moving), dtype=jnp.result_type(*[v for v in moving if v is not None]))
            out, sensitivities = jax.vmap(pushforward, out_axes=(None, 0))(directions)
            sensitivities = jax.tree.map(lambda y, s: s if _is_inexact(y) else None, out, sensitivities)
        rest_moving = [x.value if x.perturbed else None for x in r]
        keep = (values, rest_values) if any(x.perturbed for x in r) else None
        return out, (sensitivities, moving, rest_moving, keep)

    def backward(residuals, cotangent):
        sensitivities, moving, rest_moving, keep = residuals
        pairs = zip(_leaves(sensitivities), _leaves(cotangent)) if sensitivities is not None else ()
        terms = [jnp.tensordot(s, g, axes=g.ndim) for s, g in pairs if s is not None and _nonzero(g)]
        d_theta = sum(terms) if terms else jnp.zeros(_size(moving))
        d_params = _split(d_theta, moving, [None] * len(moving))
        if keep is None:
            return d_params, [None] * len(rest_moving)
        values, rest_values = keep
        _, vjp = jax.vjp(lambda r_: solve(values, r_, reverse), rest_values)
        (d_rest,) = vjp(jax.tree.map(_instantiated, cotangent, is_leaf=_is_symbolic_zero))
        return d_params, [g if m is not None else None for g, m in zip(d_rest, rest_moving)]

    call.defvjp(forward, backward, symbolic_zeros=True)
    return call(leaves, rest_leaves)


def _size(moving: list[Array | None]) -> int:
    return sum(v.size for v in moving if v is not None)


def _split(vector: Array, moving: list[Array | None], fill: list[Any]) -> list[Any]:
    """``vector`` cut into arrays shaped like the non-None entries of ``moving``; ``fill`` elsewhere."""
    out, start = list(fill), 0
    for i, v in enumerate(moving):
        if v is not None:
            out[i] = vector[start : start + v.size].reshape(v.shape).astype(v.dtype)
            start += v.size
    return out


def _is_inexact(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)


def _is_symbolic_zero(x: Any) -> bool:
    return isinstance(x, SymbolicZero)


def _nonzero(g: Any) -> bool:
    return not _is_symbolic_zero(g) and _is_inexact(g)


def _leaves(tree: PyTree) -> list[Any]:
    """The leaves of ``tree``, None and symbolic zeros kept as leaves (so trees of one structure align)."""
    return jax.tree.leaves(tree, is_leaf=lambda x: x is None or _is_symbolic_zero(x))


def _instantiated(g: Any) -> Any:
    return np.zeros(g.shape, g.dtype) if _is_symbolic_zero(g) else g


def _forward_only(step: AbstractAdjointStep, shared: PyTree) -> Callable[[Array, Any], Array]:
    return lambda x, xs_l: step.forward(x, xs_l, shared)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def adjoint_scan(
    step: AbstractAdjointStep, x0: Array, xs: PyTree, shared: PyTree, blocks: int = 1
) -> Array:
    """x_N of x_{l+1} = ``step.forward``(x_l, xs[l], shared), differentiated by the discrete adjoint.

    The forward pass of a gradient stores x at the start of every segment of ≈ √N steps. The backward
    pass walks the segments in reverse: it recomputes the segment's states and residuals from its
    checkpoint, then applies ``step.backward`` from the segment's end to its start, accumulating the
    cotangents of ``shared`` and emitting those of ``xs`` step by step.

    ``blocks`` > 1 declares that the last axis of x0 (and of the residuals) indexes independent problems
    sharing ``xs`` and ``shared``: the backward pass then runs on ``blocks`` groups of them one after the
    other (each group made of runs of consecutive entries spread over the axis, :func:`_to_groups`), so
    that its working set stays in cache, and sums their parameter cotangents. The last axis must be
    a multiple of ``blocks``.
    """
    del blocks
    return _scan_steps(_forward_only(step, shared), x0, xs)


def _checkpoints(step, shared, x0, xs, group=lambda a: a) -> tuple[Array, Array]:
    """(x_N, the states at the starts of the outermost segments of ``segment_plan(N)`` after the head)."""
    num_steps = _num_steps(xs)
    head, body = _split_segments(xs, num_steps, segment_plan(num_steps)[0])
    forward = _forward_only(step, shared)
    x = _scan_steps(forward, x0, head)
    m = _num_steps(body)
    # each segment's end goes to the next entry (the first start before the loop, the last segment after
    # it): stored as it starts, a state the segment's loop then advances in place made XLA copy it twice
    first = group(x)
    stored = _write(_stacked_zeros(first, m), first, 0)

    def segment(carry, inputs):
        x, stored = carry
        j, xs_seg = inputs
        x = _scan_steps(forward, x, xs_seg)
        return (x, _write(stored, group(x), j + 1)), None

    leading = jax.tree.map(lambda a: a[:-1], body)
    (x, stored), _ = jax.lax.scan(segment, (x, stored), (jnp.arange(m - 1), leading))
    return _scan_steps(forward, x, _read(body, m - 1)), stored


def _adjoint_scan_fwd(step, x0, xs, shared, blocks):
    group = (lambda a: a) if blocks == 1 else functools.partial(_to_groups, blocks=blocks)
    x_final, checkpoints = _checkpoints(step, shared, x0, xs, group)
    return x_final, (group(x0), checkpoints, xs, shared)


def _write(buffers: PyTree, values: PyTree, i: Array) -> PyTree:
    return jax.tree.map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, i, 0), buffers, values)


def _read(buffers: PyTree, i: Array) -> PyTree:
    return jax.tree.map(lambda b: jax.lax.dynamic_index_in_dim(b, i, 0, keepdims=False), buffers)


def _backward_pass(step, x0, checkpoints, p_final, xs, shared):
    """(p_0, ∂J/∂xs, ∂J/∂shared) by segments in reverse, recomputing each segment from its checkpoint
    (:func:`_innermost_backward`), or, with nested levels, its inner checkpoints and then recursing."""
    plan = segment_plan(_num_steps(xs))
    if len(plan) == 1:
        return _innermost_backward(step, x0, checkpoints, p_final, xs, shared)

    def segment_adjoint(carry, segment):
        p, d_shared = carry
        x_start, xs_seg = segment
        _, inner_checkpoints = _checkpoints(step, shared, x_start, xs_seg)
        p, d_xs_seg, d_shared_seg = _backward_pass(step, x_start, inner_checkpoints, p, xs_seg, shared)
        return (p, jax.tree.map(jnp.add, d_shared, d_shared_seg)), d_xs_seg

    head, body = _split_segments(xs, _num_steps(xs), plan[0])
    carry = (p_final, jax.tree.map(zero_cotangent, shared))
    carry, d_body = jax.lax.scan(segment_adjoint, carry, (checkpoints, body), reverse=True)
    return _with_head(segment_adjoint, carry, x0, head, d_body)


def _with_head(segment_adjoint, carry, x0, head, d_body):
    """Finish a backward pass with the head segment (if any): (p_0, ∂J/∂xs, ∂J/∂shared)."""
    if _num_steps(head) == 0:
        p0, d_shared = carry[:2]
        return p0, jax.tree.map(lambda b: b.reshape(-1, *b.shape[2:]), d_body), d_shared
    carry, d_head = segment_adjoint(carry, (x0, head))
    return carry[0], _join_segments(d_head, d_body), carry[1]


def _innermost_backward(step, x0, checkpoints, p_final, xs, shared):
    """The last level: recompute a segment's states and residuals from its checkpoint, then step back."""
    num_steps = _num_steps(xs)
    k = segment_plan(num_steps)[0]
    head, body = _split_segments(xs, num_steps, k)
    carry = (p_final, jax.tree.map(zero_cotangent, shared))
    if step.unrolled_segments:
        segment_adjoint = _unrolled_segment_adjoint(step, shared)
    else:
        segment_adjoint = _looped_segment_adjoint(step, shared)
        carry = (*carry, _segment_buffers(step, shared, x0, _read(xs, 0), k))
    carry, d_body = jax.lax.scan(segment_adjoint, carry, (checkpoints, body), reverse=True)
    return _with_head(segment_adjoint, carry, x0, head, d_body)


def _segment_buffers(step, shared, x, xs_l, k: int) -> PyTree:
    """One buffer of k entries for a segment's states and residuals, reused by every segment."""
    return _stacked_zeros(jax.eval_shape(lambda x, xs_l: (x, step.forward(x, xs_l, shared)[1]), x, xs_l), k)


def _stacked_zeros(example: PyTree, k: int) -> PyTree:
    """Zero buffers of k entries shaped like the leaves of ``example``, laid out like what is written into
    them (under explicit sharding an update must match its buffer)."""
    return jax.tree.map(lambda s: jnp.zeros((k, *s.shape), s.dtype, out_sharding=stacked_spec(s)), example)


def _looped_segment_adjoint(step, shared) -> Callable:
    """A segment's adjoint as two loops: the recompute fills the carried buffers with (x_l, residual_l) for
    l = 0 … k − 1 (x_0 before its loop, x_{l+1} after step l, the last step run for its residual alone), the
    reverse loop reads them back (``step.read``)."""

    def recompute(carry, inputs):
        x, (states, residuals) = carry
        i, xs_l = inputs
        x_next, residual = step.forward(x, xs_l, shared)
        # x_{l+1} is stored rather than x_l, which the step has read: XLA then need not copy the carried
        # state at every step to keep x_l alive for the store
        return (x_next, (_write(states, x_next, i + 1), _write(residuals, residual, i))), None

    def segment_adjoint(carry, segment):
        p, d_shared, (states, residuals) = carry
        x_start, xs_seg = segment
        k = _num_steps(xs_seg)
        steps = jnp.arange(k)
        # the states before the last step, then the last one's residual alone: its result is not read
        before_last = jax.tree.map(lambda a: a[:-1], xs_seg)
        buffers = (_write(states, x_start, 0), residuals)
        (x, (states, residuals)), _ = jax.lax.scan(recompute, (x_start, buffers), (steps[:-1], before_last))
        buffers = (states, _write(residuals, step.forward(x, _read(xs_seg, k - 1), shared)[1], k - 1))

        def reverse_step(carry, inputs):
            p, d_shared = carry
            i, xs_l = inputs
            x, residual = step.read(buffers, i)
            p, d_xs_l, d_shared_l = step.backward(x, residual, p, xs_l, shared)
            return (p, jax.tree.map(jnp.add, d_shared, d_shared_l)), d_xs_l

        (p, d_shared), d_xs_seg = jax.lax.scan(reverse_step, (p, d_shared), (steps, xs_seg), reverse=True)
        return (p, d_shared, buffers), d_xs_seg

    return segment_adjoint


def _unrolled_segment_adjoint(step, shared) -> Callable:
    """A segment's adjoint with its steps written out (``unrolled_segments``): every recomputed state and
    residual is a value of its own, read back by the reverse steps without a buffer between them."""

    def segment_adjoint(carry, segment):
        p, d_shared = carry
        x, xs_seg = segment
        inputs = [_read(xs_seg, i) for i in range(_num_steps(xs_seg))]
        stored = []
        for xs_l in inputs:
            x_next, residual = step.forward(x, xs_l, shared)
            stored.append((x, residual))
            x = x_next
        d_xs = [None] * len(stored)
        for i in reversed(range(len(stored))):
            p, d_xs[i], d_shared_l = step.backward(*stored[i], p, inputs[i], shared)
            d_shared = jax.tree.map(jnp.add, d_shared, d_shared_l)
        return (p, d_shared), jax.tree.map(lambda *steps: jnp.stack(steps), *d_xs)

    return segment_adjoint


# Each group is made of this many runs of consecutive entries (fewer where m is not divisible), spread over m.
GROUP_RUNS = 16


def _runs(m: int, blocks: int) -> int:
    """The number c of runs per group: the largest power of two <= GROUP_RUNS with c · blocks dividing m."""
    c = GROUP_RUNS
    while m % (c * blocks):
        c //= 2
    return c


def _to_groups(a: Array, blocks: int) -> Array:
    """(..., m) → (blocks, ..., m / blocks): the entries as c runs of r = m / (c · blocks) (:func:`_runs`),
    run k of group j being the entries (k · blocks + j) r … (k · blocks + j + 1) r − 1.

    Copying runs is a copy of contiguous memory (single entries, j, j + blocks, …, made this copy 3x slower
    for particles in one dimension), and every group still takes entries from the whole axis: a device that
    holds a contiguous share of it (m / D entries, D dividing c) holds a part of every group, so the groups
    are not moved between devices.
    """
    m = a.shape[-1]
    c = _runs(m, blocks)
    a = a.reshape(*a.shape[:-1], c, blocks, m // (c * blocks))
    a = jnp.moveaxis(a, -2, 0)
    return a.reshape(*a.shape[:-2], m // blocks)


def _from_groups(a: Array, m: int) -> Array:
    """Inverse of :func:`_to_groups` for an axis of m entries."""
    blocks = a.shape[0]
    c = _runs(m, blocks)
    a = a.reshape(*a.shape[:-1], c, m // (c * blocks))
    a = jnp.moveaxis(a, 0, -2)
    return a.reshape(*a.shape[:-3], m)


def _adjoint_scan_bwd(step, blocks, residuals, p_final):
    x0, checkpoints, xs, shared = residuals
    if blocks == 1:
        return _backward_pass(step, x0, checkpoints, p_final, xs, shared)

    def one_group(totals, group):
        j, x0_g, p_g = group
        checkpoints_g = jax.lax.dynamic_index_in_dim(checkpoints, j, axis=1, keepdims=False)
        p0_g, d_xs, d_shared = _backward_pass(step, x0_g, checkpoints_g, p_g, xs, shared)
        return jax.tree.map(jnp.add, totals, (d_xs, d_shared)), p0_g

    # x0 and the checkpoints were stored grouped by the forward pass: (blocks, ...) and (m, blocks, ...)
    totals = jax.tree.map(zero_cotangent, (xs, shared))
    groups = (jnp.arange(blocks), x0, _to_groups(p_final, blocks))
    (d_xs, d_shared), p0 = jax.lax.scan(one_group, totals, groups)
    return _from_groups(p0, p_final.shape[-1]), d_xs, d_shared


adjoint_scan.defvjp(_adjoint_scan_fwd, _adjoint_scan_bwd)
