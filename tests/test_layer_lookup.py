"""Per-layer quantities of the kinetic solvers: computed once for a single layer, carried and refreshed at
layer changes for several (kinetic_common.layer_lookup). Both must give the same solution and gradient.

Oracle: a field of three identical layers on [0, 1] is the one-layer field, and with save times on the
layer boundaries both solves take the same steps; so the solutions agree to round-off and the gradient
w.r.t. the one layer's (W, b) is the sum over the three layers' gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj

GRID = mfj.Grid1D(-4.0, 4.0, 40)
F0 = GRID.project(lambda x: jnp.exp(-2.0 * (x - 0.5) ** 2))
SAVES = [0.0, 1 / 3, 2 / 3, 1.0]  # the layer boundaries of three layers on [0, 1]
W_ONE, B_ONE = jnp.array([[[0.8]]]), jnp.array([[0.3]])  # one layer, and the same layer three times
W_THREE, B_THREE = jnp.tile(W_ONE, (3, 1, 1)), jnp.tile(B_ONE, (3, 1))


def tanh_field(W, b):
    return mfj.NeuralField(W, b, activation="tanh", T=1.0)


def solve(solver, field, adjoint, f0=F0):
    if solver == "vlasov":
        return mfj.solve_vlasov(field, f0, GRID, save_at=SAVES, max_steps=40, adjoint=adjoint)
    return mfj.solve_fokker_planck(
        field, f0, GRID, diffusion=0.4, save_at=SAVES, max_steps=250, adjoint=adjoint
    )


def solution_and_gradient(solver, W, b, adjoint):
    def first_moment(W, b):
        return jnp.sum(solve(solver, tanh_field(W, b), adjoint).f[-1] * GRID.x)

    return solve(solver, tanh_field(W, b), adjoint), jax.grad(first_moment, argnums=(0, 1))(W, b)


@pytest.mark.parametrize("adjoint", ["checkpointed", "discrete"])
@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_one_layer_and_three_equal_layers_agree(solver, adjoint):
    one, (dW_one, db_one) = solution_and_gradient(solver, W_ONE, B_ONE, adjoint)
    three, (dW_three, db_three) = solution_and_gradient(solver, W_THREE, B_THREE, adjoint)
    assert int(one.num_steps) == int(three.num_steps)
    np.testing.assert_allclose(three.f, one.f, rtol=0, atol=1e-14)
    np.testing.assert_allclose(jnp.sum(dW_three, axis=0), dW_one[0], rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(db_three, axis=0), db_one[0], rtol=1e-12)
    assert float(jnp.abs(dW_one).max()) > 1e-3  # the drift does move the first moment
    # the three layers' shares differ (the density they act on moves), so the sum is a real check
    assert float(jnp.ptp(dW_three[:, 0, 0])) > 1e-6


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_carried_layer_quantity_is_neither_saved_nor_sets_the_time_type(solver):
    """The carried coefficients stay out of the saved states: saving 200 times on a 2-D grid costs a
    two-layer field no more working memory than a one-layer field, and a float32 density (which the
    Fokker–Planck solver keeps) steps in float32 time whatever the number of layers, so one and three
    equal layers agree bit for bit (on a 2-D grid, where both take Heun's two stages; in 1-D one layer
    takes the one-pass form, compared above to round-off)."""
    grid = mfj.Grid2D((-3.0, 3.0, 12), (-3.0, 3.0, 12))
    f0 = grid.project(lambda x, y: jnp.exp(-(x**2 + y**2)))
    if solver == "fokker_planck":
        f32 = f0.astype(jnp.float32)
        W_one, b_one = jnp.array([[[-0.5, 0.2], [0.1, -0.4]]]), jnp.array([[0.1, -0.2]])
        one, three = (
            mfj.solve_fokker_planck(tanh_field(jnp.tile(W_one, (k, 1, 1)), jnp.tile(b_one, (k, 1))), f32,
                                    grid, diffusion=0.3, save_at=SAVES, max_steps=250)
            for k in (1, 3)
        )
        assert three.f.dtype == jnp.float32
        assert int(one.num_steps) == int(three.num_steps)
        np.testing.assert_array_equal(three.f, one.f)

    saves = np.linspace(0.0, 1.0, 201)

    def temp_bytes(layers):
        W2 = jnp.tile(jnp.array([[[-0.5, 0.2], [0.1, -0.4]]]), (layers, 1, 1))
        field = tanh_field(W2, jnp.zeros((layers, 2)))
        if solver == "vlasov":
            run = jax.jit(lambda fl: mfj.solve_vlasov(fl, f0, grid, save_at=saves, max_steps=8).f)
        else:
            run = jax.jit(lambda fl: mfj.solve_fokker_planck(fl, f0, grid, diffusion=0.3, save_at=saves,
                                                             max_steps=8).f)
        return run.lower(field).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(2) < 1.5 * temp_bytes(1)


def test_largest_over_layers_is_differentiated_through_the_largest_layer():
    """max_l v(w, l) (the CFL bounds' maximum over layers): its value is the largest layer value, and its
    derivative, in reverse and forward mode, that of the layer attaining it; away from a tie both equal
    central finite differences."""
    from meanfield_jax.kinetic_common import largest_over_layers

    rng = np.random.default_rng(0)
    w, direction = jnp.asarray(rng.normal(size=(5, 7))), jnp.asarray(rng.normal(size=(5, 7)))

    def value(w, l):
        return jnp.sum(jnp.exp(w[l]))

    def bound(w):
        return largest_over_layers(value, w, 5)

    values = np.array([float(value(w, l)) for l in range(5)])
    worst = int(np.argmax(values))
    assert float(bound(w)) == values.max() and np.sort(values)[-2] < values.max() - 0.1  # no tie
    grad = jax.grad(bound)(w)
    np.testing.assert_allclose(grad, jnp.zeros_like(w).at[worst].set(jnp.exp(w[worst])), rtol=1e-14)
    _, tangent = jax.jvp(bound, (w,), (direction,))
    np.testing.assert_allclose(tangent, jnp.vdot(grad, direction), rtol=1e-13)
    eps = 1e-6
    fd = (bound(w + eps * direction) - bound(w - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(fd, tangent, rtol=1e-7)
