"""Repeated calls with the same shapes do not recompile (user-level jit and our internal caches)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import meanfield_jax as mfj

COMPILES: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda name, *args, **kwargs: COMPILES.append(name) if "backend_compile" in name else None
)


def _fields(count):
    return [mfj.NeuralField.constant(-1.0 - 0.01 * k, 0.2 + 0.01 * k, num_layers=4, activation="tanh")
            for k in range(count)]


def test_a_jitted_loss_through_the_resnet_traces_once():
    x = jnp.linspace(-1.0, 1.0, 32)[:, None]

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def loss_and_grad(field):
        return eqx.filter_value_and_grad(lambda f: jnp.mean(mfj.resnet_forward(f, x) ** 2))(field)

    for field in _fields(3):
        loss_and_grad(field)


def test_solvers_do_not_recompile_for_new_parameter_values():
    grid = mfj.Grid1D(-3.0, 3.0, 48)
    f0 = grid.project(lambda x: jnp.exp(-4.0 * x**2))
    first, *others = _fields(3)

    def run(field):
        mfj.solve_vlasov(field, f0, grid, save_at=[0.0, 0.5, 1.0]).f.block_until_ready()
        mfj.solve_fokker_planck(field, f0, grid, diffusion=0.5, save_at=[0.0, 1.0]).f.block_until_ready()
        mfj.fokker_planck_steady_state(field, grid, diffusion=0.5).block_until_ready()
        np.asarray(mfj.resnet_forward(field, f0[:, None]))

    run(first)
    COMPILES.clear()
    for field in others:
        run(field)
    assert COMPILES == []
    # the counter does see compilations: a new grid size compiles the solvers again
    finer = mfj.Grid1D(-3.0, 3.0, 50)
    mfj.solve_vlasov(first, finer.project(lambda x: jnp.exp(-4.0 * x**2)), finer).f.block_until_ready()
    assert COMPILES


def test_fokker_planck_solves_with_nearby_step_counts_share_one_compilation():
    """The scan length is the step count rounded up (kinetic_common.shared_scan_length): solves whose CFL
    steps differ a little compile once, and the extra steps of length 0 leave the density bitwise as the
    scan of the exact count (``max_steps`` equal to it) gives it."""
    grid = mfj.Grid1D(-3.0, 3.0, 48)
    f0 = grid.project(lambda x: jnp.exp(-4.0 * x**2))
    (field,) = _fields(1)

    def solve(diffusion, max_steps=None):  # one save interval: its step count is the solve's
        return mfj.solve_fokker_planck(field, f0, grid, diffusion=diffusion, max_steps=max_steps)

    first = solve(0.5)
    COMPILES.clear()
    second = solve(0.55)
    assert COMPILES == []
    assert int(first.num_steps) < int(second.num_steps)  # the two solves take different numbers of steps
    for diffusion, sol in ((0.5, first), (0.55, second)):
        exact = solve(diffusion, max_steps=int(sol.num_steps))
        assert int(exact.num_steps) == int(sol.num_steps)
        np.testing.assert_array_equal(np.asarray(exact.f), np.asarray(sol.f))
