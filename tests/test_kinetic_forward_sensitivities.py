"""Forward sensitivities of the kinetic solvers (``adjoint="forward"``).

``jax.grad`` through a solve with ``adjoint="forward"`` carries the tangents of the field's parameters
(and of a traced diffusion) through the loop and contracts them with the cotangent; f0's cotangent comes
from reverse mode. It must give the gradient of the same discrete solver as the checkpointed adjoint, to
round-off, and a central difference; its memory must not grow with the number of steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kinetic_cases import B_1D, CASES, GRID_1D, W_1D, assert_gradients_agree, initial, loss, parameters

import meanfield_jax as mfj
from meanfield_jax.chang_cooper import heun_flux_coefficients, heun_whole_step_stencil
from meanfield_jax.fokker_planck import _heun_stages, _heun_update_1d, _heun_update_1d_forward

FORWARD_CASES = [
    "vlasov_muscl_1d",
    "vlasov_muscl_zero_flux_2d",
    "vlasov_feedback_1d",
    "vlasov_integer_leaf_1d",
    "fokker_planck_explicit_1d",
    "fokker_planck_explicit_2d",
    "fokker_planck_implicit_2d",
]


@pytest.mark.parametrize("case", FORWARD_CASES)
def test_forward_sensitivities_equal_the_checkpointed_gradient(case):
    f0 = initial(CASES[case][0])
    gradient = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=(0, 4))
    reference = gradient(case, *parameters(case), f0, "checkpointed")
    for argnums in ((1, 2, 3), (1, 2), (3,)):  # the field and f0, the field alone (no reverse pass), f0 alone
        grads = jax.grad(loss, argnums=argnums)(case, *parameters(case), f0, "forward")
        assert_gradients_agree(grads, [reference[i - 1] for i in argnums])


def test_forward_sensitivities_match_central_differences_in_the_field_and_the_diffusion():
    """d/dε of a Fokker–Planck loss along a random direction of (W, b, K): Δt moves with W and K."""
    f0 = initial(GRID_1D)
    key_w, key_b = jax.random.split(jax.random.key(1))
    dW, db, dK = jax.random.normal(key_w, W_1D.shape), jax.random.normal(key_b, B_1D.shape), 0.7

    def fp_loss(W, b, K):
        field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
        f = mfj.solve_fokker_planck(field, f0, GRID_1D, K, save_at=[0.0, 0.45, 1.0], max_steps=300,
                                    adjoint="forward").f
        return jnp.sum(f[1] * GRID_1D.x) + 2.0 * jnp.sum(f[2] * GRID_1D.x**2)

    K = jnp.asarray(0.4)
    gW, gb, gK = jax.grad(fp_loss, argnums=(0, 1, 2))(W_1D, B_1D, K)
    along = jax.jit(lambda eps: fp_loss(W_1D + eps * dW, B_1D + eps * db, K + eps * dK))
    eps = 1e-6
    central = (along(eps) - along(-eps)) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(gW, dW) + jnp.vdot(gb, db) + gK * dK, central, rtol=1e-6)


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_a_solve_that_is_not_differentiated_is_the_default_one(solver):
    field = mfj.NeuralField(W_1D, B_1D, activation="tanh", T=1.0)
    f0 = initial(GRID_1D)
    kwargs = {"diffusion": 0.4} if solver == "fokker_planck" else {}
    solve = mfj.solve_vlasov if solver == "vlasov" else mfj.solve_fokker_planck
    default, forward = (solve(field, f0, GRID_1D, save_at=[0.0, 0.45, 1.0], adjoint=a, **kwargs)
                        for a in ("checkpointed", "forward"))
    np.testing.assert_array_equal(forward.f, default.f)
    assert int(forward.num_steps) == int(default.num_steps)


def test_forward_sensitivities_are_reverse_mode_only():
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(loss, argnums=2)("fokker_planck_explicit_1d", W_1D, B_1D, initial(GRID_1D), "forward")


@pytest.mark.parametrize("full", [True, False])
def test_forward_tangent_of_a_one_pass_step_is_that_of_the_two_stages(full):
    """The written tangent (the four-point stencil's on a whole step, the stages' otherwise) against JAX's
    tangent of Heun's two stages, w.r.t. α, β, f and Δt_k, at s = 1 (whole) and s = 0.6 (landing)."""
    n, h, dt = 40, 0.2, 0.01
    keys = jax.random.split(jax.random.key(2), 8)
    alpha, beta = (jax.random.uniform(k, (n - 1,), minval=0.5, maxval=2.0) for k in keys[:2])
    f = jax.random.uniform(keys[2], (n,))
    d_alpha, d_beta, df = (jax.random.normal(k, s) for k, s in zip(keys[3:6], [(n - 1,), (n - 1,), (n,)]))
    d_dt, s = 0.3 * dt, (1.0 if full else 0.6)

    def one_pass(alpha, beta, f, dt, step=_heun_update_1d_forward):
        update = heun_flux_coefficients(alpha, beta, h, dt)
        coefficients = ((alpha, beta),)
        stencil = heun_whole_step_stencil(update)
        args = (coefficients, update, stencil, f, s * dt, jnp.asarray(s), jnp.asarray(full))
        return step(*args, (h,))

    def stages(alpha, beta, f, dt):
        return _heun_stages(((alpha, beta),), f, s * dt, (h,))

    primals, tangents = (alpha, beta, f, jnp.asarray(dt)), (d_alpha, d_beta, df, jnp.asarray(d_dt))
    forward, d_forward = jax.jvp(one_pass, primals, tangents)
    expected, d_expected = jax.jvp(stages, primals, tangents)
    np.testing.assert_array_equal(forward, one_pass(*primals, step=_heun_update_1d))  # the solver's value
    scale, d_scale = (float(jnp.max(jnp.abs(x))) for x in (expected, d_expected))
    np.testing.assert_allclose(forward, expected, rtol=0, atol=1e-15 * scale)
    np.testing.assert_allclose(d_forward, d_expected, rtol=0, atol=1e-13 * d_scale)


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_forward_sensitivities_under_vmap_over_fields(solver):
    """jax.vmap of the gradient over three one-layer fields with their own CFL steps (so that whole and
    landing steps, and the steps past the end, differ between members): each member's gradient is the one
    computed alone, with forward sensitivities and with the checkpointed adjoint."""
    grid = mfj.Grid1D(-3.0, 3.0, 40)
    f0 = grid.project(lambda x: jnp.exp(-2 * (x - 0.3) ** 2))
    W = jnp.asarray([-0.5, -1.0, -1.7])[:, None, None, None] * jnp.ones((3, 1, 1, 1))
    b = jnp.asarray([0.3, -0.2, 0.1])[:, None, None]

    def mean(W, b, adjoint):
        field = mfj.NeuralField(W, b, T=1.0)  # identity activation: the CFL step shrinks as |W| grows
        if solver == "vlasov":
            sol = mfj.solve_vlasov(field, f0, grid, save_at=[0.4, 1.0], max_steps=60, adjoint=adjoint)
        else:
            sol = mfj.solve_fokker_planck(field, f0, grid, diffusion=0.05, save_at=[0.4, 1.0], max_steps=60,
                                          adjoint=adjoint)
        return mfj.moments(sol.f[-1], grid, order=1)[1] + mfj.moments(sol.f[0], grid, order=1)[1] ** 2

    batched = jax.jit(jax.vmap(jax.grad(mean, argnums=(0, 1)), in_axes=(0, 0, None)), static_argnums=2)
    got = batched(W, b, "forward")
    for k in range(3):
        want = jax.grad(mean, argnums=(0, 1))(W[k], b[k], "checkpointed")
        for g, w in zip(got, want):
            np.testing.assert_allclose(g[k], w, rtol=1e-10, atol=1e-14)
