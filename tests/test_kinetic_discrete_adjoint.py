"""The discrete adjoint of the kinetic solvers' time loop (``adjoint="discrete"``).

It must give the gradient of the same discrete solver as plain reverse mode: against the checkpointed
adjoint to round-off (w.r.t. W, b and f0, with layer boundaries and a save time inside the loop, so that
steps are cut short and Δt depends on the field), and against a central difference.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kinetic_cases import (
    B_1D,
    B_2D,
    CASES,
    GRID_1D,
    W_1D,
    W_2D,
    assert_gradients_agree,
    initial,
    loss,
    parameters,
)

import meanfield_jax as mfj


@pytest.mark.parametrize("case", list(CASES))
def test_discrete_adjoint_equals_checkpointed_gradient(case):
    f0 = initial(CASES[case][0])
    gradient = eqx.filter_jit(jax.grad(loss, argnums=(1, 2, 3)))
    grads = {a: gradient(case, *parameters(case), f0, a) for a in ("checkpointed", "discrete")}
    assert_gradients_agree(grads["discrete"], grads["checkpointed"])


def test_discrete_adjoint_matches_central_difference():
    """d/dε of the loss along a random direction of (W, b): the traced CFL step moves with W."""
    f0 = initial(GRID_1D)
    key_w, key_b = jax.random.split(jax.random.key(0))
    dW, db = jax.random.normal(key_w, W_1D.shape), jax.random.normal(key_b, B_1D.shape)
    case = "vlasov_muscl_1d"
    gW, gb = jax.grad(loss, argnums=(1, 2))(case, W_1D, B_1D, f0, "discrete")
    forward = jax.jit(lambda eps: loss(case, W_1D + eps * dW, B_1D + eps * db, f0, "discrete"))
    eps = 1e-6
    central = (forward(eps) - forward(-eps)) / (2 * eps)
    derivative = jnp.vdot(gW, dW) + jnp.vdot(gb, db)
    np.testing.assert_allclose(derivative, central, rtol=1e-6)


def test_discrete_adjoint_of_a_float32_density_under_a_float64_field():
    """The written Fokker–Planck step adjoint keeps each cotangent in its primal's dtype."""
    f0 = initial(GRID_1D).astype(jnp.float32)
    grads = {a: jax.grad(loss, argnums=(1, 3))("fokker_planck_explicit_1d", W_1D, B_1D, f0, a)
             for a in ("checkpointed", "discrete")}
    assert grads["discrete"][1].dtype == jnp.float32
    for discrete, checkpointed in zip(grads["discrete"], grads["checkpointed"]):
        scale = float(jnp.abs(checkpointed).max())
        np.testing.assert_allclose(discrete, checkpointed, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("case", list(CASES))
def test_discrete_adjoint_is_reverse_mode_only(case):
    """Each solver really takes the custom_vjp path: forward mode refuses it."""
    W, b = parameters(case)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(loss, argnums=2)(case, W, b, initial(CASES[case][0]), "discrete")


def _limited_fluxes(f, c):
    """A stencil with kinks (max/min of the velocities) and a reduction, as the face fluxes have."""
    return [jnp.maximum(c, 0.0) * f[:-1] + jnp.minimum(c, 0.0) * f[1:], jnp.sum(f**2) * c[::2]]


def test_materialised_vjp_has_the_values_and_cotangents_of_the_function():
    key_f, key_c, key_g = jax.random.split(jax.random.key(1), 3)
    f, c = jax.random.uniform(key_f, (9,)), jax.random.normal(key_c, (8,))
    wrapped = mfj.adjoint.materialised_vjp(_limited_fluxes)
    value, vjp = jax.vjp(wrapped, f, c)
    expected, expected_vjp = jax.vjp(_limited_fluxes, f, c)
    cotangent = [jax.random.normal(key_g, (8,)), jnp.arange(1.0, 5.0)]
    for got, want in zip([*value, *vjp(cotangent)], [*expected, *expected_vjp(cotangent)]):
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)
        assert float(jnp.max(jnp.abs(want))) > 0.1
    # a zero cotangent takes the other branch, which returns zeros: what the VJP gives (it is linear)
    for got in vjp([jnp.zeros(8), jnp.zeros(4)]):
        np.testing.assert_array_equal(got, 0.0)


def test_materialised_vjp_under_vmap_and_not_in_forward_mode():
    """Batched cotangents (zero in one output, the other, both or none) give each example's own VJP;
    forward mode refuses it."""
    f = jax.random.uniform(jax.random.key(2), (4, 9))
    c = jnp.linspace(-1.0, 1.0, 8)
    g = jnp.stack([jnp.zeros(8), jnp.ones(8), jnp.zeros(8), jnp.linspace(-2.0, 3.0, 8)])
    h = jnp.stack([jnp.zeros(4), jnp.zeros(4), jnp.ones(4), jnp.ones(4)])

    def pullback(fn, f, g, h):
        return jax.vjp(fn, f, c)[1]([g, h])

    batched = jax.vmap(lambda f, g, h: pullback(mfj.adjoint.materialised_vjp(_limited_fluxes), f, g, h))
    for k, got in enumerate(zip(*batched(f, g, h))):
        for a, b in zip(got, pullback(_limited_fluxes, f[k], g[k], h[k])):
            np.testing.assert_allclose(a, b, rtol=1e-15, atol=1e-15)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(mfj.adjoint.materialised_vjp(_limited_fluxes), (f[0], c), (f[0], c))


# grids no other test uses, so that the solver is traced afresh and the spy below sees the trace
FRESH_GRIDS = {"1d": mfj.Grid1D(-4.0, 4.0, 37), "2d": mfj.Grid2D((-3.0, 3.0, 9), (-2.0, 2.0, 7))}


def _calls_per_adjoint(grid, solve, calls: list, layers: int | None = None) -> list[int]:
    """len(calls) after the gradient of a final moment through ``solve(field, f0, adjoint)`` by the
    checkpointed adjoint, and again after the discrete one (a spy appends to ``calls``); the field has the
    first ``layers`` layers of the test fields (default all of them)."""
    W, b = (W_1D, B_1D) if grid.d == 1 else (W_2D, B_2D)
    W, b = W[:layers], b[:layers]
    f0 = initial(grid)

    def final_moment(W, adjoint):
        f = solve(mfj.NeuralField(W, b, activation="tanh", T=1.0), f0, adjoint).f[-1]
        return jnp.sum(f * jnp.arange(f.size).reshape(f.shape))

    counts = []
    for adjoint in ("checkpointed", "discrete"):
        jax.grad(final_moment)(W, adjoint)
        counts.append(len(calls))
    return counts


@pytest.mark.parametrize(("dim", "scheme", "used"), [
    ("1d", "muscl", "ssp_step_adjoint"), ("1d", "cweno3", "materialised_vjp"),
    ("2d", "muscl", "ssp_step_adjoint"), ("2d", "cweno3", None)])
def test_which_discrete_transport_adjoint_is_used(monkeypatch, dim, scheme, used):
    """The discrete adjoint differentiates a MUSCL step by its written adjoint; in 1-D it routes the face
    fluxes of the other schemes through materialised_vjp (in 2-D no faster); the checkpointed adjoint
    (which needs forward mode) uses neither. The written step skips itself past the end of a save interval
    (the time loop's ``self_masking``), the others are skipped by the loop. Both gradients are compared
    above."""
    grid = FRESH_GRIDS[dim]
    calls, masking = [], []
    for spied in ("ssp_step_adjoint", "materialised_vjp"):
        original = getattr(mfj.transport, spied)

        def spy(*args, original=original, spied=spied):
            calls.append(spied)
            return original(*args)

        monkeypatch.setattr(mfj.transport, spied, spy)
    integrate = mfj.transport.integrate

    def spied_integrate(*args, **kwargs):
        masking.append(kwargs.get("self_masking", False))
        return integrate(*args, **kwargs)

    monkeypatch.setattr(mfj.transport, "integrate", spied_integrate)

    def solve(field, f0, adjoint):
        return mfj.solve_vlasov(field, f0, grid, scheme=scheme, adjoint=adjoint, max_steps=40)

    after_checkpointed, after_discrete = _calls_per_adjoint(grid, solve, calls)
    assert after_checkpointed == 0
    assert set(calls[after_checkpointed:after_discrete]) == ({used} if used else set())
    assert masking == [False, used == "ssp_step_adjoint"]


@pytest.mark.parametrize(("dim", "layers", "pieces"), [("1d", 1, True), ("1d", 3, True), ("1d", 3, False),
                                                     ("2d", 3, True), ("2d", 3, False)])
def test_only_the_discrete_explicit_fokker_planck_step_uses_the_written_adjoint(
    monkeypatch, dim, layers, pieces
):
    """The discrete adjoint differentiates Heun's step by its written adjoint (which needs no forward
    mode): in 1-D that of the one-pass update (heun_update_vjp; with several layers, layer piece by layer
    piece), in 2-D (by layer pieces or with the coefficients carried), and in 1-D with layer pieces too
    short to pay, that of the two stages (fitted_operator_vjp); the checkpointed adjoint lets JAX
    differentiate the two stages. Both gradients are compared above."""
    grid = FRESH_GRIDS[dim]
    if not pieces:
        monkeypatch.setattr(mfj.fokker_planck, "PIECE_MIN_STEPS", {1: 10**9, 2: 10**9})
    name = "heun_update_vjp" if grid.d == 1 and pieces else "fitted_operator_vjp"
    calls = []
    for spied in ("heun_update_vjp", "fitted_operator_vjp"):
        written = getattr(mfj.chang_cooper, spied)

        def spy(*args, written=written, spied=spied, **kwargs):
            calls.append(spied)
            return written(*args, **kwargs)

        monkeypatch.setattr(mfj.fokker_planck, spied, spy)

    def solve(field, f0, adjoint):
        return mfj.solve_fokker_planck(field, f0, grid, diffusion=0.3, adjoint=adjoint, max_steps=60)

    after_checkpointed, after_discrete = _calls_per_adjoint(grid, solve, calls, layers)
    assert after_checkpointed == 0
    assert set(calls[after_checkpointed:after_discrete]) == {name}
