"""The written adjoint of a MUSCL SSP step (``meanfield_jax.muscl_adjoint``) against JAX's VJP of the same
stages, in 1-D and 2-D, and the limiters' derivatives against those of JAX's own min and max (the ties
included)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kinetic_cases import count_primitives

import meanfield_jax as mfj
from meanfield_jax import muscl_adjoint, reconstruction
from meanfield_jax.kinetic_common import BOUNDARIES, SSP_STEPPERS, grid_axes, pad_axis
from meanfield_jax.reconstruction import LIMITERS
from meanfield_jax.transport import _Config, _muscl_step

GRID = mfj.Grid1D(-1.0, 2.0, 24)
GRID_2D = mfj.Grid2D((-1.0, 2.0, 16), (0.0, 1.0, 18))
# every limiter with every wall, the three steppers spread over them
COMBINATIONS = [
    (limiter, boundary, stepper)
    for (limiter, boundary), stepper in zip(itertools.product(sorted(LIMITERS), BOUNDARIES),
                                            itertools.cycle(sorted(SSP_STEPPERS)))
]


def kinked(rng, shape):
    """Cell averages with the limiter's kinks along the first axis: zeros, a plateau, a straight line (so
    Δ⁻ = Δ⁺)."""
    f = rng.uniform(0.1, 1.0, shape)
    f[:3] = 0.0
    f[5:9] = 0.5
    f[11:16] = (0.25 + 0.125 * np.arange(5)).reshape((5,) + (1,) * (len(shape) - 1))
    return f


def state_and_velocity(rng):
    """A 1-D state with kinks, face velocities of both signs with exact zeros (where JAX splits the
    derivative of max(C, 0) and min(C, 0) evenly)."""
    n = GRID.n
    velocity = rng.uniform(-1.5, 1.5, n + 1)
    velocity[[0, 7, 12, n]] = 0.0
    return jnp.asarray(kinked(rng, (n,))), jnp.asarray([0.3, -0.1]), jnp.asarray(velocity)


def state_and_velocities_2d(rng):
    nx, ny = GRID_2D.shape
    f = kinked(rng, (nx, ny))  # kinks along x
    f[10:] = kinked(rng, (ny, nx)).T[10:]  # and along y
    u, v = rng.uniform(-1.5, 1.5, (nx + 1, ny)), rng.uniform(-1.5, 1.5, (nx, ny + 1))
    u[[0, 3, nx]] = 0.0
    v[:, [0, 5, ny]] = 0.0
    return jnp.asarray(f), jnp.asarray([0.3, -0.1, 0.2, 0.05]), (jnp.asarray(u), jnp.asarray(v))


def assert_written_adjoint_equals_jax_vjp(config, grid, f, outflow, velocities, rng):
    dt = jnp.asarray(0.25 * min(ax.dx for ax in grid_axes(grid)) / 1.5)
    p, q = jnp.asarray(rng.normal(size=f.shape)), jnp.asarray(rng.normal(size=outflow.shape))

    def written(velocities, f, outflow, dt):
        return _muscl_step(config, grid, velocities, f, outflow, dt)

    def stages(velocities, f, outflow, dt):
        return _muscl_step.fun(config, grid, velocities, f, outflow, dt)

    args = (velocities, f, outflow, dt)
    out_written, vjp_written = jax.vjp(jax.jit(written), *args)
    out_jax, vjp_jax = jax.vjp(jax.jit(stages), *args)  # both compiled: the same kernels, bitwise
    for a, b in zip(out_written, out_jax):
        np.testing.assert_array_equal(a, b)
    got, want = jax.jit(vjp_written)((p, q)), vjp_jax((p, q))
    for name, a, b in zip(("velocity", "velocity", "f", "outflow", "dt"), jax.tree.leaves(got),
                          jax.tree.leaves(want)):
        scale = float(jnp.max(jnp.abs(b)))
        if name != "outflow" and config.boundary != "periodic":
            assert scale > 0.1, name  # every input moves the step
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14 * max(scale, 1.0), err_msg=name)


def set_packing(monkeypatch, packed: bool | str) -> None:
    """φ's two partials written as one array (minmod, MC) at any grid size, or at none; ``"unconditional"``:
    packed, and the slopes' table formed without its conditional (as on large grids)."""
    monkeypatch.setattr(muscl_adjoint, "PACKED_PARTIALS_FROM", 0 if packed else 2**62)
    monkeypatch.setattr(muscl_adjoint, "UNCONDITIONAL_TABLE_FROM", 0 if packed == "unconditional" else 2**62)


@pytest.mark.parametrize("packed", [False, True, "unconditional"])
@pytest.mark.parametrize(("limiter", "boundary", "stepper"), COMBINATIONS)
def test_written_step_adjoint_equals_jax_vjp_of_the_stages(limiter, boundary, stepper, packed, monkeypatch):
    set_packing(monkeypatch, packed)
    config = _Config("muscl", limiter, boundary, stepper, 0.5, "discrete")
    rng = np.random.default_rng(7)
    f, outflow, velocity = state_and_velocity(rng)
    assert_written_adjoint_equals_jax_vjp(config, GRID, f, outflow, (velocity,), rng)


@pytest.mark.parametrize(("limiter", "boundary", "stepper"), [
    ("mc", "outflow", "ssprk2"), ("minmod", "zero_flux", "ssprk3"), ("vanleer", "periodic", "euler")])
@pytest.mark.parametrize("packed", [False, True, "unconditional"])
def test_written_step_adjoint_in_2d(limiter, boundary, stepper, packed, monkeypatch):
    set_packing(monkeypatch, packed)
    config = _Config("muscl", limiter, boundary, stepper, 0.5, "discrete")
    rng = np.random.default_rng(11)
    f, outflow, velocities = state_and_velocities_2d(rng)
    assert_written_adjoint_equals_jax_vjp(config, GRID_2D, f, outflow, velocities, rng)


@pytest.mark.parametrize("grid", [GRID, GRID_2D], ids=["1d", "2d"])
def test_large_grids_form_the_slope_table_without_its_conditional(grid, monkeypatch):
    """From ``UNCONDITIONAL_TABLE_FROM`` cells a stage's adjoint has no conditional per axis for the table."""
    rng = np.random.default_rng(5)
    f, _, velocities = state_and_velocity(rng) if grid.d == 1 else state_and_velocities_2d(rng)
    velocities = (velocities,) if grid.d == 1 else velocities
    spacing = tuple(ax.dx for ax in grid_axes(grid))
    courant = tuple(pad_axis(v, axis, 3, 3) for axis, v in enumerate(velocities))

    def stage(f, p):
        return muscl_adjoint.stage_adjoint("mc", "outflow", spacing, courant, f, p, jnp.zeros(2 * grid.d))

    counts = []
    for threshold in (2**62, 0):
        monkeypatch.setattr(muscl_adjoint, "UNCONDITIONAL_TABLE_FROM", threshold)
        jax.clear_caches()  # make_jaxpr reuses a trace of the same function
        counts.append(count_primitives(jax.make_jaxpr(stage)(f, f).jaxpr, "cond"))
    jax.clear_caches()
    assert counts == [grid.d, 0]  # the table's conditional, one per axis


def test_a_step_of_length_zero_passes_the_cotangents_through():
    config = _Config("muscl", "mc", "outflow", "ssprk2", 0.5, "discrete")
    rng = np.random.default_rng(3)
    f, outflow, velocity = state_and_velocity(rng)
    p, q = jnp.asarray(rng.normal(size=GRID.n)), jnp.asarray(rng.normal(size=2))
    out, vjp = jax.vjp(lambda *a: _muscl_step(config, GRID, *a), (velocity,), f, outflow, jnp.asarray(0.0))
    np.testing.assert_array_equal(out[0], f)
    g_velocity, g_f, g_outflow, g_dt = vjp((p, q))
    np.testing.assert_array_equal(g_f, p)
    np.testing.assert_array_equal(g_outflow, q)
    assert not np.any(g_velocity[0]) and float(g_dt) == 0.0


@pytest.mark.parametrize("limiter", sorted(LIMITERS))
@pytest.mark.parametrize("copies", [1, -(-reconstruction.SELECT_DERIVATIVE_FROM // 12)])
def test_limiter_derivatives_are_those_of_jax_min_and_max(limiter, copies, monkeypatch):
    """The limiters' min and max carry their derivative written with selects (on arrays of at least
    SELECT_DERIVATIVE_FROM values), and ``limiter_partials`` writes those of minmod and MC in closed form;
    both must be JAX's, with ties split evenly: |a| = |b|, and for MC 2 min(|a|, |b|) = |a + b|/2 (a = 1,
    b = 3)."""
    pairs = np.array([(1.0, 3.0), (3.0, 1.0), (-1.0, -3.0), (2.0, 2.0), (-0.5, -0.5), (1.0, -1.0), (0.0, 2.0),
                      (0.7, 0.2), (-0.2, -0.9), (1.0, 1.0 + 2**-52), (0.0, 0.0), (2.5, -0.3)])
    pairs = np.tile(pairs, (copies, 1))
    a, b = jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1])
    one, zero = jnp.ones_like(a), jnp.zeros_like(a)

    def partials():
        phi = LIMITERS[limiter]
        return [jax.jvp(phi, (a, b), tangent) for tangent in ((one, zero), (zero, one), (one, one))]

    ours = partials()
    closed_form = jax.jit(lambda a, b: reconstruction.limiter_partials(LIMITERS[limiter], a, b))(a, b)
    monkeypatch.setattr(reconstruction, "_minimum", jnp.minimum)
    monkeypatch.setattr(reconstruction, "_maximum", jnp.maximum)
    jax_partials = partials()
    for (value, derivative), (value_jax, derivative_jax) in zip(ours, jax_partials):
        np.testing.assert_array_equal(value, value_jax)
        np.testing.assert_allclose(derivative, derivative_jax, rtol=1e-15, atol=0)
    # the partials the written adjoint reads (closed forms for minmod and MC), bitwise JAX's
    np.testing.assert_array_equal(closed_form[0], jax_partials[0][0])
    for derivative, (_, derivative_jax) in zip(closed_form[1:], jax_partials[:2]):
        np.testing.assert_array_equal(derivative, derivative_jax)
    if reconstruction.packs_partials(LIMITERS[limiter]):  # halves packed into one number and back, exactly
        halves = [0.5 * d for d in closed_form[1:]]
        for dtype in (jnp.float32, jnp.float64):
            code = reconstruction.pack_half_partials(*(h.astype(dtype) for h in halves))
            assert code.dtype == dtype
            for unpacked, half in zip(reconstruction.unpack_half_partials(code), halves):
                np.testing.assert_array_equal(unpacked, half)


def test_discrete_gradients_of_a_batch_of_fields_under_vmap():
    """Fields with their own CFL steps (so the skipped steps differ within the batch): the batched written
    adjoint gives each field's own gradient."""
    f0 = GRID.project(lambda x: jnp.exp(-4.0 * (x - 0.5) ** 2))

    def moment(W, b):
        field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
        f = mfj.solve_vlasov(field, f0, GRID, save_at=[0.4, 1.0], adjoint="discrete", max_steps=40).f
        return jnp.sum(f[-1] * GRID.x) + jnp.sum(f[0] * GRID.x**2)

    W = jnp.array([[[[1.5]], [[-0.8]]], [[[0.6]], [[1.1]]]])
    b = jnp.array([[[0.2], [0.1]], [[-0.3], [0.4]]])
    batched = jax.jit(jax.vmap(jax.grad(moment, argnums=(0, 1))))(W, b)
    for k in range(2):
        one = jax.grad(moment, argnums=(0, 1))(W[k], b[k])
        for a, c in zip(batched, one):
            assert float(jnp.max(jnp.abs(c))) > 1e-3
            np.testing.assert_allclose(a[k], c, rtol=1e-12, atol=1e-14)
