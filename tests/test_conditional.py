"""batch_cond: lax.cond's values and derivatives; under vmap a branch runs only where a member takes it."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj
from meanfield_jax.conditional import batch_cond, behind_conditional

PREDICATES = [[True, False, True], [True, True, True], [False, False, False]]


def _branches(scale, shift):
    """Branches that close over a traced float and a traced integer array."""
    return (lambda x: x * scale + shift, lambda x: x - 1.0)


@pytest.mark.parametrize("pred", PREDICATES)
def test_values_under_vmap_are_those_of_lax_cond_member_by_member(pred):
    pred = jnp.asarray(pred)
    x = jnp.arange(6.0).reshape(3, 2)
    scale, shift = jnp.asarray([2.0, 3.0, 4.0]), jnp.asarray([1, 2, 3])

    def ours(p, x, s, k):
        return batch_cond(p, *_branches(s, k), x)

    expected = np.stack([jax.lax.cond(pred[i], *_branches(scale[i], shift[i]), x[i]) for i in range(3)])
    np.testing.assert_array_equal(jax.jit(jax.vmap(ours))(pred, x, scale, shift), expected)
    # a predicate shared by the batch (not batched) and batched operands
    shared = jax.vmap(ours, in_axes=(None, 0, 0, 0))(pred[1], x, scale, shift)
    np.testing.assert_array_equal(shared, x * scale[:, None] + shift[:, None] if pred[1] else x - 1.0)


def test_a_branch_no_member_takes_does_not_run_under_vmap():
    """The true branch raises when it runs. lax.cond under vmap runs it (a select of both branches);
    batch_cond does not, as long as no member's predicate holds."""

    def raising(x):
        return eqx.error_if(x, x > -1.0, "the true branch ran")  # a run-time check, true for these x

    x, never = jnp.arange(3.0), jnp.zeros(3, bool)

    def run(cond):
        batched = jax.jit(jax.vmap(lambda p, x: cond(p, raising, jnp.negative, x)))
        return jax.block_until_ready(batched(never, x))

    with pytest.raises(Exception, match="the true branch ran"):
        run(jax.lax.cond)
    out = run(batch_cond)
    np.testing.assert_array_equal(out, -x)


def test_derivatives_are_those_of_lax_cond():
    def loss(cond, scale, x):
        y = cond(jnp.sum(x) > 0, lambda x: jnp.sin(scale * x), lambda x: scale * x**2, x)
        return jnp.sum(y**2)

    scales, xs = jnp.asarray([0.7, -1.3]), jnp.asarray([[0.2, 0.5], [-0.4, -0.3]])
    for scale, x in zip(scales, xs):
        for argnums in (0, 1):
            a = jax.grad(lambda s, x: loss(batch_cond, s, x), argnums)(scale, x)
            b = jax.grad(lambda s, x: loss(jax.lax.cond, s, x), argnums)(scale, x)
            np.testing.assert_allclose(a, b, rtol=1e-15)
        tangent = jnp.ones_like(x)
        np.testing.assert_allclose(
            jax.jvp(functools.partial(loss, batch_cond, scale), (x,), (tangent,))[1],
            jax.jvp(functools.partial(loss, jax.lax.cond, scale), (x,), (tangent,))[1],
            rtol=1e-15,
        )
    batched = jax.vmap(jax.grad(lambda s, x: loss(batch_cond, s, x)))(scales, xs)
    expected = [jax.grad(lambda s, x: loss(jax.lax.cond, s, x))(s, x) for s, x in zip(scales, xs)]
    np.testing.assert_allclose(batched, expected, rtol=1e-15)


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_solvers_under_vmap_over_fields_with_their_own_steps_and_layers(solver):
    """Three fields of three layers with different CFL steps: vmap gives each field's own solution and
    gradient (members reach their layer boundaries, and the end, after different numbers of steps)."""
    grid = mfj.Grid1D(-3.0, 3.0, 48)
    f0 = grid.project(lambda x: jnp.exp(-2 * (x - 0.3) ** 2))
    W = jnp.asarray([-0.5, -1.0, -1.5])[:, None, None, None] * jnp.ones((3, 3, 1, 1))
    b = jnp.asarray([[0.3], [-0.2], [0.1]])[None] * jnp.ones((3, 3, 1))

    def final(W, b):
        field = mfj.NeuralField(W, b, T=1.0)  # identity activation: the CFL rate grows with |W|
        if solver == "vlasov":
            sol = mfj.solve_vlasov(field, f0, grid, save_at=[0.5, 1.0], max_steps=60)
        else:
            sol = mfj.solve_fokker_planck(field, f0, grid, diffusion=0.05, save_at=[0.5, 1.0], max_steps=60)
        return sol.f, sol.num_steps

    def mean(W, b):
        return mfj.moments(final(W, b)[0][-1], grid, order=1)[1]

    solutions, steps = jax.jit(jax.vmap(final))(W, b)
    assert len(set(np.asarray(steps).tolist())) == 3  # every field takes its own number of steps
    gradients = jax.jit(jax.vmap(jax.grad(mean, argnums=(0, 1))))(W, b)
    for k in range(3):
        np.testing.assert_allclose(solutions[k], final(W[k], b[k])[0], rtol=1e-12, atol=1e-14)
        for got, want in zip(gradients, jax.grad(mean, argnums=(0, 1))(W[k], b[k])):
            np.testing.assert_allclose(got[k], want, rtol=1e-10, atol=1e-14)


def test_behind_conditional_gives_fn_values_from_a_conditional_also_under_vmap():
    """fn's values (a slice of a buffer and an integer passed along), computed inside a conditional that
    XLA keeps (its predicate is not a constant), one conditional per call also under vmap; NaN entries
    take the same branch's values; without a floating-point operand fn is called as it is."""
    buffers, i = jnp.arange(12.0).reshape(3, 4), jnp.asarray(2)

    def read(b, i):
        return jax.lax.dynamic_index_in_dim(b, i, keepdims=False), i + 1

    row, j = jax.jit(lambda b, i: behind_conditional(read, b, i))(buffers, i)
    np.testing.assert_array_equal(row, buffers[2])
    assert int(j) == 3
    text = jax.jit(lambda b, i: behind_conditional(read, b, i)[0]).lower(buffers, i).compile().as_text()
    assert "conditional(" in text
    batched = jax.jit(jax.vmap(lambda b: behind_conditional(read, b, i)[0]))
    stack = jnp.stack([buffers, -buffers])
    np.testing.assert_array_equal(batched(stack), stack[:, 2])
    assert "conditional(" in batched.lower(stack).compile().as_text()
    nan = buffers.at[1, 2].set(jnp.nan)  # the middle entry: the predicate is false, the branches the same
    np.testing.assert_array_equal(behind_conditional(read, nan, i)[0], buffers[2])
    assert behind_conditional(lambda k: k * 2, jnp.asarray(3)) == 6


def test_a_shared_predicate_keeps_unbatched_outputs_unbatched():
    """With one predicate for the whole batch, an output that no batched input reaches stays unbatched (as
    through lax.cond), so a vmap may return it with out_axes None; the batched one is each member's."""
    x, ds = jnp.arange(3.0), jnp.arange(12.0).reshape(4, 3)

    branches = (lambda a, b: (a * 2.0, b * a), lambda a, b: (a + 1.0, b - a))

    def both(p, d):
        return batch_cond(p, *branches, x, d)

    run = jax.jit(jax.vmap(both, in_axes=(None, 0), out_axes=(None, 0)))
    for p in (True, False):
        shared, per_member = run(jnp.asarray(p), ds)
        expected = [jax.lax.cond(p, *branches, x, d) for d in ds]
        np.testing.assert_array_equal(shared, expected[0][0])
        np.testing.assert_array_equal(per_member, np.stack([e[1] for e in expected]))


def _assert_each_members_cond(branches, x, ds):
    """batch_cond of two-output branches on (x, d), vmapped over ds with the predicate shared: each
    member's lax.cond, for both predicate values."""
    run = jax.jit(jax.vmap(lambda p, d: batch_cond(p, *branches, x, d), in_axes=(None, 0)))
    for p in (True, False):
        got = run(jnp.asarray(p), ds)
        expected = [jax.lax.cond(p, *branches, x, d) for d in ds]
        for k in range(2):
            np.testing.assert_array_equal(got[k], np.stack([e[k] for e in expected]))


def test_an_output_one_branch_batches_is_batched():
    """The first output depends on the batched operand in the false branch only: it is batched for both
    predicate values, each member's lax.cond."""
    x, ds = jnp.arange(3.0), jnp.arange(12.0).reshape(4, 3)
    branches = (lambda a, b: (a * 2.0, b * a), lambda a, b: (a + b, b - a))
    _assert_each_members_cond(branches, x, ds)


def test_a_shared_predicate_under_an_outer_vmap_stays_a_conditional():
    """An inner vmap with one predicate for its batch, inside an outer vmap that batches that predicate (as
    forward sensitivities vmapped over fields): the branch no member takes does not run (it raises if it
    does), and the values are each member's."""
    x, ds = jnp.arange(3.0), jnp.arange(12.0).reshape(4, 3)

    def raising(a, b):
        return eqx.error_if(a, a > -1.0, "the true branch ran"), b

    def member(p, d):
        return batch_cond(p, raising, lambda a, b: (-a, 2.0 * b), x, d)

    inner = jax.vmap(member, in_axes=(None, 0), out_axes=(None, 0))
    outer = jax.jit(jax.vmap(inner, in_axes=(0, None)))
    shared, per_member = jax.block_until_ready(outer(jnp.zeros(2, bool), ds))
    np.testing.assert_array_equal(shared, np.stack([-x, -x]))
    np.testing.assert_array_equal(per_member, np.stack([2.0 * ds, 2.0 * ds]))


def test_a_batched_predicate_under_an_outer_vmap_stays_a_conditional():
    """Predicates batched by both an inner and an outer vmap: the branch no member takes does not run (it
    raises if it does), and every member gets its own branch."""
    x = jnp.arange(3.0)

    def raising(a):
        return eqx.error_if(a, a > -1.0, "the true branch ran")

    def member(p, a):
        return batch_cond(p, raising, jnp.negative, a)

    nested = jax.jit(jax.vmap(jax.vmap(member, in_axes=(0, None)), in_axes=(0, None)))
    out = jax.block_until_ready(nested(jnp.zeros((2, 4), bool), x))
    np.testing.assert_array_equal(out, np.broadcast_to(-x, (2, 4, 3)))
    mixed = jnp.asarray([[True, False], [False, False]])
    safe = jax.jit(jax.vmap(jax.vmap(lambda p, a: batch_cond(p, jnp.sin, jnp.negative, a), in_axes=(0, None)),
                            in_axes=(0, None)))
    expected = [[jnp.sin(x) if p else -x for p in row] for row in mixed.tolist()]
    np.testing.assert_array_equal(safe(mixed, x), np.asarray(expected))


def test_an_output_a_scan_carries_from_a_batched_input_is_batched():
    """A scan in a branch whose carry reaches a batched operand only after a step (c ← (a, d) in one step,
    a ← c in the next): the scan's first output is batched, as JAX's own batching of the scan makes it
    (one pass through the body missed it), and each member gets lax.cond's value."""
    x, ds = jnp.arange(3.0), jnp.arange(12.0).reshape(4, 3)

    def carried(a, d):
        def step(carry, _):
            a, c = carry
            return (c, a + d), None

        return jax.lax.scan(step, (a, a), None, length=2)[0]

    branches = (carried, lambda a, d: (a, a))
    _assert_each_members_cond(branches, x, ds)


def test_a_2d_fokker_planck_solve_of_several_layers_under_vmap_over_fields():
    """Two 2-D fields of two layers, saved at 0.25 and 1 (the save intervals hold different numbers of layer
    pieces): vmap gives each field's own solution (it failed to trace before)."""
    grid = mfj.Grid2D((-3.0, 3.0, 12), (-3.0, 3.0, 12))
    f0 = grid.project(lambda x, y: jnp.exp(-(x**2) - y**2))
    Ws = jnp.asarray([-1.0, -2.0])[:, None, None, None] * jnp.ones((2, 2, 2, 2)) * jnp.eye(2)[None, None]

    def solve(W):
        field = mfj.NeuralField(W, jnp.zeros((2, 2)), activation="tanh")
        return mfj.solve_fokker_planck(field, f0, grid, 0.3, save_at=[0.25, 1.0], max_steps=100).f

    batched = jax.vmap(solve)(Ws)
    for k in range(2):
        np.testing.assert_allclose(batched[k], solve(Ws[k]), rtol=1e-12, atol=1e-15)
