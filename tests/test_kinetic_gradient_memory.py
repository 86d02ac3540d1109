"""Working memory of gradients through the kinetic solvers against the number of time steps.

The bytes of the compiled gradient (XLA's temporary buffers), not time: with the default checkpointed
adjoint and with the discrete adjoint, 10x the steps per save interval (100 -> 1000, where the segments
nest one level deeper) must cost well under the √10 ≈ 3.2x of one level of √n segments, while storing
every step grows ~10x.
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


def growth(solver: str, adjoint: str) -> float:
    return gradient_temp_bytes(solver, 1000, adjoint) / gradient_temp_bytes(solver, 100, adjoint)


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_gradient_memory_grows_far_slower_than_the_number_of_steps(solver):
    checkpointed, discrete, direct = (growth(solver, a) for a in ("checkpointed", "discrete", "direct"))
    assert checkpointed < 2.0, checkpointed
    assert discrete < 2.0, discrete
    assert direct > 7.0, direct
