"""Working memory of gradients through the kinetic solvers against the number of time steps.

The bytes of the compiled gradient (XLA's temporary buffers), not time: with the default checkpointed
adjoint and with the discrete adjoint, 10x the steps per save interval (100 -> 1000, where the segments
nest one level deeper) must cost well under the √10 ≈ 3.2x of one level of √n segments, while storing
every step grows ~10x, and forward sensitivities (``adjoint="forward"``) store nothing per step; the
discrete adjoint needs less than the checkpointed one (transport), or the same (within 5 %, 1-D
Fokker–Planck, whose step is one pass over f under both).
"""

import jax
import jax.numpy as jnp
import pytest

import meanfield_jax as mfj

GRID = mfj.Grid1D(-4.0, 4.0, 256)


def gradient_temp_bytes(solver: str, steps: int, adjoint: str) -> int:
    f0 = GRID.project(lambda x: jnp.exp(-(x**2)))

    def first_moment(W):
        field = mfj.NeuralField(W, jnp.zeros(1), activation="tanh", T=1.0)
        if solver == "vlasov":
            sol = mfj.solve_vlasov(field, f0, GRID, max_steps=steps, adjoint=adjoint)
        else:
            sol = mfj.solve_fokker_planck(field, f0, GRID, diffusion=0.5, max_steps=steps, adjoint=adjoint)
        return jnp.sum(sol.f[-1] * GRID.x)

    compiled = jax.jit(jax.grad(first_moment)).lower(jnp.ones((1, 1))).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_gradient_memory_grows_far_slower_than_the_number_of_steps(solver):
    adjoints = ("checkpointed", "discrete", "direct", "forward")
    nbytes = {(a, steps): gradient_temp_bytes(solver, steps, a) for a in adjoints for steps in (100, 1000)}
    growth = {a: nbytes[a, 1000] / nbytes[a, 100] for a in adjoints}
    assert growth["checkpointed"] < 2.0, growth
    assert growth["discrete"] < 2.0, growth
    assert growth["direct"] > 7.0, growth
    assert growth["forward"] < 1.1, growth  # the tangents, carried beside the state: nothing per step
    # the discrete adjoint differentiates one step at a time, without the nested checkpoint transforms: less
    # memory for transport; a 1-D Fokker–Planck step is one pass over f under both, and they need the same
    limit = 0.9 if solver == "vlasov" else 1.05
    assert nbytes["discrete", 1000] < limit * nbytes["checkpointed", 1000], nbytes
