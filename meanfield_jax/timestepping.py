"""Fixed-length, differentiable time loops that land exactly on save times and layer boundaries.

The PDE solvers advance a state with a one-step map ``step(state, t, Δt)`` (an SSP Runge–Kutta step, say).
The velocity field is piecewise constant in time (layer l on [l Δt_L, (l + 1) Δt_L)), so a step must not
straddle a layer boundary, and the solution is wanted exactly at the save times. Let the *stops*
τ_1 < τ_2 < … be the union of the save times and the layer boundaries. From t_k the loop takes

    Δt_k = min(Δt_max, τ_next − t_k),   t_{k+1} = τ_next if Δt_max ≥ τ_next − t_k else τ_prev + j Δt_max,

with τ_prev the last stop reached (or the start) and j the steps taken since (j = round((t_k − τ_prev) /
Δt_max)): every stop is hit exactly (t is snapped onto it), Δt_max is the CFL step, and t is never a running
sum. A sum t_k + Δt_max gathers a rounding a step: over random step sizes (up to 8192 steps between two
stops) the last step fell more than 16 ulp short of its stop in 7 % of the cases in float32 and 3 % in
float64, and the loop, one sliver step over its count, ran out of steps. τ_prev + j Δt_max is within two
roundings of the exact time, so a remainder within 16 ulp of the stop counts as a hit, and a piece between
two stops takes the ⌈length / Δt_max⌉ steps that :func:`steps_needed` counts (which forgives a remainder
within 8 ulp, not the 10⁻¹² of a step it forgave before, under which it could count a step too few).

The loop is a ``lax.scan`` of fixed length per save interval, as in diffrax: the length is computed from
Δt_max when it is concrete, and from ``max_steps`` when Δt_max is traced (under ``jax.grad`` the field, hence
the CFL step, is traced). Steps past the end of an interval have Δt_k = 0 and are skipped by a conditional
(:func:`~meanfield_jax.conditional.batch_cond`, which stays one under ``jax.vmap``), or, with
``self_masking``, by the step itself;
both paths do the same arithmetic, so derivatives equal finite differences of the concrete solver. Running
out of ``max_steps`` is a runtime error naming it. With ``adjoint="checkpointed"`` the inner loop is split
into segments under ``jax.checkpoint`` (:func:`meanfield_jax.adjoint.checkpointed_scan`: √n segments of √n
steps, nested once more beyond 256 steps): reverse-mode memory grows like √n (n^{1/3}) instead of n, at
the price of one extra forward pass per level; ``"direct"`` stores every step. Each step is itself under
``jax.checkpoint`` too, so the reverse pass holds the intermediates of one step at a time rather than of a
whole block (measured on the MUSCL solver: 2.3x faster gradients and a quarter of the memory).
``"discrete"`` runs the loop as an :func:`meanfield_jax.adjoint.adjoint_scan` whose reverse step is JAX's
VJP of one step (:class:`meanfield_jax.adjoint.VJPStep`): the same checkpoints, but each step is
differentiated on its own, without the nested checkpoint transforms (less memory, and usually faster,
see benchmarks/README.md); being a ``jax.custom_vjp`` it is reverse mode only (``jax.jvp``/``jacfwd``
refuse it: use the default for them). The kinetic solvers also take ``adjoint="forward"``
(:func:`meanfield_jax.adjoint.forward_sensitivities` around the whole solve): the loop then runs as with
``"direct"``, and JAX's forward mode carries the parameters' tangents through it.

With ``piece_constant`` the loop over an interval's steps becomes a loop over its *pieces* (the spans
between consecutive stops: a layer, or the part of one between save times), each a fixed-length scan of
steps that share a quantity computed once at the start of the piece (the layer's flux coefficients). Reverse
mode then sums that quantity's cotangent over the piece's steps and differentiates its computation once per
piece, instead of carrying it and its cotangent from step to step. The scan over the pieces is checkpointed
like the steps (√P pieces' states kept, one more forward sweep).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .adjoint import ADJOINTS, VJPStep, adjoint_scan, check_adjoint, checkpointed_scan
from .arguments import concrete_scalar, number
from .conditional import batch_cond
from .sharding_types import mesh_typed, typed_as

__all__ = [
    "ADJOINTS", "integrate", "landing_times", "piece_table", "resolve_save_times", "steps_needed",
    "steps_per_piece",
]

State = Any
Step = Callable[..., State]  # step(state, t, dt[, full][, q]): full with self_masking, q with piece_constant


def resolve_save_times(
    t_final: float | None, save_at: ArrayLike | None, default_final: float, t0: float = 0.0
) -> np.ndarray:
    """The sorted save times: ``save_at`` if given (``t_final`` is then ignored), else [t0, t_final]; t_final
    defaults to the field's T."""
    t0 = number(t0, "t0")
    if not (math.isfinite(t0) and t0 >= 0):
        raise ValueError(f"t0 must be a finite time >= 0, got t0={t0}")
    if save_at is None:
        t_final = number(default_final if t_final is None else t_final, "t_final")
        if not (math.isfinite(t_final) and t_final > t0):
            raise ValueError(f"t_final must be a finite time > t0={t0:g}, got t_final={t_final}")
        return np.array([t0, t_final])
    try:
        save = np.atleast_1d(np.asarray(save_at, dtype=float))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_at must be a list of times, got {save_at!r}") from exc
    if save.ndim != 1 or save.size == 0:
        raise ValueError(f"save_at must be a non-empty 1-D list of times, got {save_at!r}")
    if not np.all(np.isfinite(save)) or np.any(save < t0):
        raise ValueError(f"save_at must hold finite times >= t0={t0:g}, got {save.tolist()}")
    if np.any(np.diff(save) <= 0):
        raise ValueError(f"save_at must be strictly increasing, got {save.tolist()}")
    if save[-1] <= t0:
        raise ValueError(f"save_at must reach past the start t0={t0:g}, got {save.tolist()}")
    return save


# The loop lands on a stop from within 16 ulp of it (``snap_tol`` in integrate); the count forgives half of
# that, so it is never short of the steps the loop takes, in float64 or in float32 (whose tolerance is wider).
_COUNT_SLACK = 8 * float(np.finfo(np.float64).eps)


def _steps_across(start: float, stop: float, dt_max: float) -> int:
    """Steps of at most Δt_max from ``start`` onto ``stop`` (at least one): a remainder within 8 ulp of
    ``stop`` takes no step of its own."""
    return max(1, math.ceil((stop - start - _COUNT_SLACK * abs(stop)) / dt_max))


def steps_needed(targets: ArrayLike, stops: ArrayLike, t0: float, dt_max: float) -> int:
    """Largest number of steps any save interval needs (a step never straddles a stop).

    ``stops`` are sorted. Plain Python floats (the same IEEE arithmetic as NumPy's) and a bisection for
    each interval's stops: a few microseconds for a handful of times, where NumPy's calls on tiny arrays
    cost tens (this runs on every call of a solver)."""
    stops = np.ravel(stops).astype(float).tolist()
    worst, start = 0, float(t0)
    for end in np.ravel(targets).astype(float).tolist():
        count, edge = 0, start
        for s in stops[bisect.bisect_right(stops, start) : bisect.bisect_right(stops, end)]:
            count += _steps_across(edge, s, dt_max)
            edge = s
        worst, start = max(worst, count), end
    return max(worst, 1)


@jax.custom_jvp
def _nan_derivatives_if(x: Any, bad: Array) -> Any:
    """``x``, whose derivatives are NaN where ``bad``. The error raised when the loop runs out of
    ``max_steps`` is a check on the solution's value; a compiled gradient that does not use that value
    drops the check, and would otherwise return the finite gradient of a truncated solve."""
    return x


@_nan_derivatives_if.defjvp
def _nan_derivatives_if_jvp(primals, tangents):
    x, bad = primals
    t, _ = tangents
    return x, jax.tree.map(lambda leaf: jnp.where(bad, jnp.nan, 1.0).astype(leaf.dtype) * leaf, t)


def integrate(
    step: Step,
    state0: State,
    save_at: np.ndarray,
    dt_max: ArrayLike,
    layer_stops: np.ndarray,
    *,
    t0: float = 0.0,
    max_steps: int | None = None,
    adjoint: str = "checkpointed",
    saved: Callable[[State], Any] = lambda state: state,
    self_masking: bool = False,
    copy_states: bool = False,
    piece_constant: Callable[[Array], Any] | None = None,
    runtime_checks: bool = True,
) -> tuple[Any, dict]:
    """Advance ``state0`` from t0 and return ``saved(state)`` at ``save_at`` (stacked on a leading axis).

    Args:
        step: one step, ``step(state, t, dt) -> state``; it may assume [t, t + dt] lies in one layer.
        state0: a pytree of arrays at time t0.
        save_at: concrete, strictly increasing save times >= t0 (t0 itself may be included).
        dt_max: the largest stable step (may be traced).
        layer_stops: concrete times the steps must land on (layer boundaries).
        max_steps: bound on the steps between two consecutive save times, required when ``dt_max`` is
            traced and the number of steps cannot be computed. Running out of it is a runtime error, and
            a compiled gradient that never looks at the solution itself comes back NaN.
        adjoint: ``"checkpointed"``, ``"direct"`` or ``"discrete"`` (see module docstring).
        saved: the part of the state that is saved (default all of it), e.g. without a carried cache of
            the current layer's coefficients; the time variable takes its floating-point type.
        self_masking: call ``step(state, t, dt, full)`` for every step of the fixed-length scan, with dt = 0
            past the end of the save interval, where the step must return the state unchanged (it can then
            put that conditional inside a custom derivative, whose residuals are not copied out of it), and
            ``full`` true for a step of the whole length ``dt_max``, false for one landing on a stop (a step
            prepared once for ``dt_max`` then knows when its length is fixed).
        copy_states: with ``adjoint="discrete"``, copy each recomputed state out of its segment's buffer
            before the reverse step reads it (:class:`~meanfield_jax.adjoint.VJPStep`'s ``copy_reads``).
        piece_constant: run the loop piece by piece (see the module docstring): q = piece_constant(t)
            at the midpoint t of each piece between two stops, passed to every step of that piece as
            ``step(state, t, dt[, full], q)``, so that a quantity fixed on a layer (its flux coefficients) is
            computed once per piece and, in reverse mode, its cotangent summed inside the piece rather than
            carried from step to step.
        runtime_checks: raise running out of steps and a non-finite solution from inside the compiled
            program (``eqx.error_if``). False leaves the raising to the caller: ``info`` then holds
            ``ran_out`` and ``non_finite`` (the first save interval whose state is not finite, or −1), and
            the saved states are NaN if the loop ran out. A program split over devices needs this: one
            device raising in its callback while the others waited in a collective hung, then aborted.

    Returns:
        The saved parts, and ``{"num_steps": steps taken, "max_steps": steps per interval}`` (with
        ``ran_out`` and ``non_finite`` if not ``runtime_checks``).
    """
    check_adjoint(adjoint)
    save_at = np.asarray(save_at, dtype=float)
    targets, stops = _targets_and_stops(save_at, layer_stops, t0)
    concrete_dt = concrete_scalar(dt_max)
    if concrete_dt is not None:
        if not (concrete_dt > 0 and math.isfinite(concrete_dt)):
            raise ValueError(f"the time step must be finite and positive, got dt={concrete_dt}")
        n_inner = steps_needed(targets, stops, t0, concrete_dt)
        if max_steps is not None and n_inner > max_steps:
            raise ValueError(f"max_steps={max_steps} is too small: {n_inner} steps are needed between saves")
    elif max_steps is None:
        raise ValueError(
            "the CFL time step is traced (e.g. under jax.grad w.r.t. the field), so the number of steps "
            "cannot be computed: pass max_steps= (a bound on the steps between two save times)"
        )
    else:
        n_inner = int(max_steps)

    leaves = jax.tree_util.tree_leaves(saved(state0))
    dtype = jnp.result_type(*[leaf.dtype for leaf in leaves], float)
    edges_j = jnp.asarray(np.concatenate([[t0], stops]), dtype)  # the start, then every stop
    dt_max = jnp.asarray(dt_max, dtype)
    snap_tol = 16 * jnp.finfo(dtype).eps  # a remainder below this is round-off of the time: land on the stop

    # the discrete adjoint differentiates one step at a time, so the step needs no checkpoint of its own
    inner_step = step if adjoint == "discrete" else jax.checkpoint(step, prevent_cse=False)

    def steps_towards(call: Step):
        """One step of the fixed-length scan towards the next stop (at most the carried end)."""

        def one_step(carry, _):
            state, t, end, count = carry
            # ≥ 1, as t ≥ edges_j[0]; the search unrolled: as a loop of its own (the default method) inside
            # every step it took 1.2-1.3x the time of a solve on 10³ Fokker–Planck cells
            i = jnp.searchsorted(edges_j, t, side="right", method="scan_unrolled")
            edge = edges_j[i - 1]  # the last stop reached (or the start), and t = edge + j Δt_max
            nxt = jnp.minimum(edges_j[jnp.minimum(i, edges_j.shape[0] - 1)], end)
            rem = nxt - t
            hits = rem <= dt_max + snap_tol * jnp.abs(nxt)
            dt = jnp.where(hits, rem, dt_max)
            active = rem > 0
            if self_masking:
                state = call(state, t, dt, ~hits)
            else:
                state = batch_cond(active, lambda s: call(s, t, dt), lambda s: s, state)
            j = jnp.round((t - edge) / dt_max)
            t = jnp.where(active, jnp.where(hits, nxt, edge + (j + 1) * dt_max), t)
            return state, t, end, count + active.astype(jnp.int32)

        return one_step

    def run_steps(one_step, carry, length: int):
        step_numbers = jnp.arange(length)
        if adjoint == "discrete":  # every array the step closes over (integers too) becomes a shared input
            # Under a mesh of Explicit axes a scalar made outside the loop has no sharding in its type, one
            # made inside it a replicated one: the step is converted at the types of its result (replicated
            # where they name no sharding), and every call's carry is given them (no mesh: no change)
            types = mesh_typed(jax.eval_shape(one_step, carry, step_numbers[0]))
            carry = jax.tree.map(typed_as, carry, types)
            converted = eqx.filter_closure_convert(one_step, carry, step_numbers[0])
            shared, static = eqx.partition(converted, eqx.is_array)

            def fn(c, l, arrays):
                return eqx.combine(arrays, static)(jax.tree.map(typed_as, c, types), l)

            adjoint_step = VJPStep(fn, copy_states)
            return adjoint_scan(adjoint_step, carry, step_numbers, shared)
        return checkpointed_scan(one_step, carry, step_numbers, adjoint=adjoint)

    if piece_constant is None:

        def interval(carry, end):
            state, t, count = carry
            state, t, _, count = run_steps(steps_towards(inner_step), (state, t, end, count), n_inner)
            return (state, t, count), (saved(state), t)

        xs = jnp.asarray(targets, dtype)
    else:  # piece by piece: the spans between the stops of each interval (piece_table), empty ones skipped
        table = piece_table(save_at, layer_stops, t0)
        n_piece = steps_per_piece(table, n_inner, concrete_dt)
        padded = bool(np.any(np.diff(table, axis=1) == 0))

        def piece(carry, span):
            state, t, count, short = carry
            start, stop = span
            q = piece_constant((start + stop) / 2)
            one_step = steps_towards(lambda *args: inner_step(*args, q))
            state, t, _, count = run_steps(one_step, (state, t, stop, count), n_piece)
            return state, t, count, short | (t != stop)

        def nonempty_piece(carry, span):
            return batch_cond(span[1] > span[0], lambda c: piece(c, span), lambda c: c, carry)

        def interval(carry, spans):
            state, t, count = carry
            state, t, count, short = checkpointed_scan(  # √P pieces' states kept in reverse mode, not P
                nonempty_piece if padded else piece, (state, t, count, jnp.asarray(False)), spans,
                adjoint="direct" if adjoint == "direct" else "checkpointed",
            )
            # a piece that ran out of steps marks the interval as not reached (NaN is no save time)
            return (state, t, count), (saved(state), jnp.where(short, jnp.nan, t))

        xs = (jnp.asarray(table[:, :-1], dtype), jnp.asarray(table[:, 1:], dtype))

    init = (state0, jnp.asarray(t0, dtype), jnp.asarray(0, jnp.int32))
    (_, _, count), (kept, reached) = jax.lax.scan(interval, init, xs)
    ran_out = jnp.any(reached != jnp.asarray(targets, dtype))
    kept = _nan_derivatives_if(kept, ran_out)
    bad = jnp.stack([jnp.any(~jnp.isfinite(leaf), axis=tuple(range(1, leaf.ndim)))
                     for leaf in jax.tree_util.tree_leaves(kept)]).any(axis=0)
    info = {"num_steps": count, "max_steps": n_inner}
    if runtime_checks:
        # The checks act on a scalar zero that is then added to the saved states, so that they run whenever
        # a state is used. Given the states themselves, a check's callback pinned them to one device: a solve
        # on a grid split over devices gathered and all-reduced every saved density (seen in the compiled
        # program).
        check = eqx.error_if(jnp.zeros((), dtype), ran_out, ran_out_message(n_inner))
        check = eqx.branched_error_if(
            check, jnp.any(bad), jnp.argmax(bad), [non_finite_message(t) for t in targets]
        )
        kept = jax.tree_util.tree_map(lambda leaf: leaf + check.astype(leaf.dtype), kept)
    else:
        kept = jax.tree_util.tree_map(lambda leaf: jnp.where(ran_out, jnp.nan, leaf), kept)
        info |= {"ran_out": ran_out, "non_finite": jnp.where(jnp.any(bad), jnp.argmax(bad), -1)}
    if save_at[0] == t0:
        kept = jax.tree_util.tree_map(lambda s0, s: jnp.concatenate([s0[None], s]), saved(state0), kept)
    return kept, info


def ran_out_message(max_steps: int) -> str:
    """The error of a time loop that ran out of steps."""
    return (f"the time loop ran out of steps (max_steps={max_steps} per save interval): pass a larger "
            "max_steps")


def non_finite_message(t: float) -> str:
    """The error of a solution that became non-finite before the save time t."""
    return (f"the solution became non-finite (NaN or inf) before t = {t:g}: reduce cfl (or the time step), "
            "and check that the weights, biases and diffusion are finite and of moderate size")


def landing_times(targets: list[float], layer_stops: list[float], t0: float) -> list[float]:
    """Every time a step must land on, sorted: the save times after t0 (``targets``) and the layer boundaries
    (sorted). A boundary within round-off of a save time or of t0 (8 ulp, as :func:`steps_needed` forgives)
    is that time: 3 · 0.2 = 0.6000000000000001 against a save time 0.6 would otherwise cost a step of
    10⁻¹⁶ between the two (and, piece by piece, a piece of its own). The layer of a step is the one at its
    midpoint, so no step changes its layer by this."""
    near = set()
    for x in (t0, *targets):
        slack = _COUNT_SLACK * abs(x)
        lo, hi = bisect.bisect_left(layer_stops, x - slack), bisect.bisect_right(layer_stops, x + slack)
        near.update(layer_stops[lo:hi])
    return sorted({*layer_stops, *targets} - (near - {*targets}))


def _targets_and_stops(
    save_at: np.ndarray, layer_stops: ArrayLike, t0: float
) -> tuple[np.ndarray, np.ndarray]:
    """The save times after t0, and every time a step must land on (:func:`landing_times`) up to the last."""
    targets = save_at[save_at > t0]
    stops = np.asarray(landing_times(targets.tolist(), np.ravel(layer_stops).astype(float).tolist(), t0))
    return targets, stops[(stops > t0) & (stops <= save_at[-1])]


def piece_table(save_at: ArrayLike, layer_stops: ArrayLike, t0: float = 0.0) -> np.ndarray:
    """The pieces of each save interval, the spans between consecutive stops in it: row i holds the interval's
    start, its stops and its end, padded at the end with copies of the end to the longest row's length
    (empty pieces), shape (intervals, P + 1)."""
    save_at = np.asarray(save_at, dtype=float)
    targets, stops = _targets_and_stops(save_at, layer_stops, t0)
    starts = np.concatenate([[t0], targets[:-1]])
    edges = [np.concatenate([[a], stops[(stops > a) & (stops <= b)]]) for a, b in zip(starts, targets)]
    widest = max(len(e) for e in edges)
    return np.stack([np.pad(e, (0, widest - len(e)), mode="edge") for e in edges])


def steps_per_piece(table: np.ndarray, max_steps: int, dt_max: float | None = None) -> int:
    """Scan length of each piece of :func:`piece_table`: with a concrete Δt_max, the most any piece needs,
    max ⌈s/Δt_max⌉ (s a piece's length, counted as in :func:`steps_needed`); else, from ``max_steps`` M per
    save interval of length S, max ⌈M s/S⌉, which suffices whenever M does for the whole interval
    (M ≥ Σ ⌈s_j/Δt_max⌉ ≥ S/Δt_max, so ⌈s/Δt_max⌉ ≤ ⌈M s/S⌉)."""
    if dt_max is not None:
        return max(_steps_across(a, b, dt_max) for row in table.tolist() for a, b in itertools.pairwise(row))
    most = float(np.max(np.diff(table, axis=1) / (table[:, -1] - table[:, 0])[:, None])) * max_steps
    return max(math.ceil(most * (1 - 1e-12)), 1)  # round-off in M s/S does not add a step

