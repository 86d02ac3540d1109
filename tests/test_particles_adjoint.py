"""Gradients of the particle ResNet: discrete adjoint, checkpointed and direct reverse mode.

Oracles: reverse mode of an independent plain ``lax.scan`` of the Euler / Euler–Maruyama steps (to
round-off, float64) and central finite differences, whose error must fall like h² (so the gradient is
exact, not just close). Also: the noise convention, the memory of the checkpointed gradients against the
depth, forward mode through the default, and that repeated calls do not re-trace.
"""

import functools
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kinetic_cases import primitive_equations

import meanfield_jax as mfj
from meanfield_jax import particles
from meanfield_jax.activations import ACTIVATIONS
from meanfield_jax.adjoint import (
    ADJOINTS,
    AbstractAdjointStep,
    _from_groups,
    _runs,
    _to_groups,
    adjoint_scan,
    checkpoint_interval,
    segment_plan,
)

T = 0.9
L = 4  # two segments of 2 layers (the 5-layer feedback test covers a shorter head segment)
N = 7


def plain_forward(W, b, x0, activation, feedback=None, diffusion=None, key=None):
    """x_{l+1} = x_l + Δt σ(W_l x_l + b_l [+ β x̄_l]) + sqrt(2 K(x_l) Δt) ξ_l as a plain scan on (n, d)."""
    sigma = ACTIVATIONS[activation].fn
    dt = T / W.shape[0]

    def layer(x, l):
        z = jnp.einsum("ij,nj->ni", W[l], x) + b[l][None, :]
        if feedback is not None:
            z = z + feedback * jnp.mean(x, axis=0, keepdims=True)
        x_next = x + dt * sigma(z)
        if diffusion is not None:
            K = jnp.reshape(diffusion(x), (x.shape[0], 1))
            x_next = x_next + jnp.sqrt(2.0 * dt * K) * jax.random.normal(jax.random.fold_in(key, l), x.shape)
        return x_next, None

    return jax.lax.scan(layer, x0, jnp.arange(W.shape[0]))[0]


def loss_of_output(x):
    """A non-polynomial scalar of the output with a different weight per component."""
    return jnp.sum(jnp.sin(x) * jnp.arange(1.0, x.shape[1] + 1.0)[None, :])


def problem(d, seed=0, layers=L, n=N):
    key = jax.random.PRNGKey(seed)
    kW, kb, kx = jax.random.split(key, 3)
    W = jax.random.normal(kW, (layers, d, d)) * 1.2 / np.sqrt(d)
    b = jax.random.normal(kb, (layers, d)) * 0.5
    x0 = jax.random.normal(kx, (n, d))
    return W, b, x0


def constant_diffusion(x):
    return jnp.full((x.shape[0],), 0.3)


def ours(activation, adjoint, feedback=None, stochastic=False):
    key = jax.random.PRNGKey(7)

    def J(W, b, x0):
        field = mfj.NeuralField(W, b, activation=activation, T=T, feedback=feedback)
        if stochastic:
            out = mfj.resnet_forward(field, x0, diffusion=0.3, key=key, adjoint=adjoint)
        else:
            out = mfj.resnet_forward(field, x0, adjoint=adjoint)
        return loss_of_output(out)

    return J


def reference(activation, feedback=None, stochastic=False):
    key = jax.random.PRNGKey(7)
    diffusion = constant_diffusion if stochastic else None
    return lambda W, b, x0: loss_of_output(plain_forward(W, b, x0, activation, feedback, diffusion, key))


def assert_round_off(got, want, tol=1e-12):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        scale = max(1.0, float(jnp.max(jnp.abs(w))))
        assert float(jnp.max(jnp.abs(g - w))) <= tol * scale


def central_difference_errors(J, args, grads, steps):
    """|∇J·v − (J(θ + hv) − J(θ − hv)) / 2h| for a fixed random direction v in (W, b, x0) and each h."""
    directions = [jax.random.normal(jax.random.PRNGKey(100 + i), a.shape) for i, a in enumerate(args)]
    slope = sum(float(jnp.vdot(g, v)) for g, v in zip(grads, directions))
    errors = []
    for h in steps:
        plus = J(*(a + h * v for a, v in zip(args, directions)))
        minus = J(*(a - h * v for a, v in zip(args, directions)))
        errors.append(abs(slope - float(plus - minus) / (2 * h)))
    return np.array(errors), slope


@pytest.mark.parametrize("stochastic", [False, True], ids=["deterministic", "stochastic"])
@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gradient_equals_reverse_mode_of_the_plain_scan_and_central_differences(activation, d, stochastic):
    """The discrete adjoint in every case (the two autodiff strategies for tanh, the same code path):
    to round-off against reverse mode of the plain scan; against central differences in a random
    direction of (W, b, x0), with an error falling like h² (so the gradient is exact)."""
    W, b, x0 = problem(d, seed=d)
    adjoints = ADJOINTS if activation == "tanh" else ("discrete",)

    @jax.jit
    def all_gradients(W, b, x0):
        argnums = (0, 1, 2)
        want = jax.value_and_grad(reference(activation, stochastic=stochastic), argnums)(W, b, x0)
        got = [jax.value_and_grad(ours(activation, a, stochastic=stochastic), argnums)(W, b, x0)
               for a in adjoints]
        return want, got

    want, got = all_gradients(W, b, x0)
    assert float(jnp.max(jnp.abs(want[1][0]))) > 1e-3  # a gradient that is not trivially zero
    for g in got:
        assert_round_off(g, want)

    steps = np.array([4e-3, 2e-3, 1e-3])
    J = jax.jit(ours(activation, "discrete", stochastic=stochastic))
    discrete_grads = got[adjoints.index("discrete")][1]
    errors, slope = central_difference_errors(J, (W, b, x0), discrete_grads, steps)
    orders = np.log(errors[:-1] / errors[1:]) / np.log(steps[:-1] / steps[1:])
    assert abs(slope) > 1e-2
    assert errors[-1] < 1e-4 * abs(slope)
    np.testing.assert_allclose(orders, 2.0, atol=0.25)


def test_feedback_field_gradient_includes_the_mean_coupling():
    W, b, x0 = problem(2, seed=3, layers=5)

    @jax.jit
    def gradients(W, b, x0):
        grad = functools.partial(jax.grad, argnums=(0, 1, 2))
        want = grad(reference("tanh", feedback=-0.7))(W, b, x0)
        got = [grad(ours("tanh", "discrete", feedback=-0.7))(W, b, x0)]
        return want, got, grad(reference("tanh"))(W, b, x0)

    want, got, uncoupled = gradients(W, b, x0)
    for g in got:
        assert_round_off(g, want)
    # the coupling matters: without it the gradient with respect to x0 is different
    assert float(jnp.max(jnp.abs(uncoupled[2] - want[2]))) > 1e-3


def test_gradient_with_respect_to_a_parameter_of_the_diffusion():
    """K(x) = κ (1 + x₁²): the discrete adjoint differentiates through K(x_l) and returns ∂J/∂κ."""
    W, b, x0 = problem(2, seed=5, layers=5)
    key = jax.random.PRNGKey(2)

    def J(kappa, W, x0, adjoint):
        K = lambda x: kappa * (1.0 + x[:, 0] ** 2)  # noqa: E731
        if adjoint is None:
            return loss_of_output(plain_forward(W, b, x0, "tanh", diffusion=K, key=key))
        field = mfj.NeuralField(W, b, activation="tanh", T=T)
        return loss_of_output(mfj.resnet_forward(field, x0, diffusion=K, key=key, adjoint=adjoint))

    kappa = jnp.asarray(0.4)
    grad = jax.jit(jax.grad(J, argnums=(0, 1, 2)), static_argnums=3)
    want = grad(kappa, W, x0, None)
    assert_round_off(grad(kappa, W, x0, "discrete"), want)
    h = 1e-5
    loss = jax.jit(J, static_argnums=3)
    fd = (loss(kappa + h, W, x0, None) - loss(kappa - h, W, x0, None)) / (2 * h)
    assert abs(float(fd - want[0])) < 1e-7 * max(1.0, abs(float(want[0])))
    assert abs(float(want[0])) > 1e-2


def test_diffusion_closing_over_a_traced_integer():
    """K(x) = κ (1 + m x₁²) with m a traced integer: every array K closes over reaches the custom VJP as an
    argument (a stale integer tracer inside it would fail the backward pass)."""
    W, b, x0 = problem(2, seed=6, layers=5)
    key = jax.random.PRNGKey(3)

    def J(kappa, W, m, adjoint):
        K = lambda x: kappa * (1.0 + m.astype(x.dtype) * x[:, 0] ** 2)  # noqa: E731
        if adjoint is None:
            return loss_of_output(plain_forward(W, b, x0, "tanh", diffusion=K, key=key))
        field = mfj.NeuralField(W, b, activation="tanh", T=T)
        return loss_of_output(mfj.resnet_forward(field, x0, diffusion=K, key=key, adjoint=adjoint))

    grad = jax.jit(jax.grad(J, argnums=(0, 1)), static_argnums=3)
    kappa, m = jnp.asarray(0.4), jnp.asarray(2, jnp.int32)
    want = grad(kappa, W, m, None)
    assert_round_off(grad(kappa, W, m, "discrete"), want)
    assert abs(float(want[0])) > 1e-2


def test_trajectory_gradient_with_save_every():
    """A loss on the saved states x_0, x_2, x_4, x_6: cotangents enter in the middle of the depth."""
    layers, every = 6, 2
    W, b, x0 = problem(2, seed=4, layers=layers)
    dt = T / layers
    sigma = ACTIVATIONS["sigmoid"].fn

    def trajectory_loss(states):
        return sum(loss_of_output(states[k]) * (k + 1) for k in range(states.shape[0]))

    def J(W, x0, adjoint):
        field = mfj.NeuralField(W, b, activation="sigmoid", T=T)
        return trajectory_loss(mfj.resnet_forward(field, x0, save_every=every, adjoint=adjoint))

    def J_plain(W, x0):
        def layer(x, l):
            x = x + dt * sigma(jnp.einsum("ij,nj->ni", W[l], x) + b[l][None, :])
            return x, x

        _, xs = jax.lax.scan(layer, x0, jnp.arange(layers))
        return trajectory_loss(jnp.concatenate([x0[None], xs[every - 1 :: every]], axis=0))

    want = jax.jit(jax.grad(J_plain, argnums=(0, 1)))(W, x0)
    grad = jax.jit(jax.grad(J, argnums=(0, 1)), static_argnums=2)
    assert_round_off(grad(W, x0, "discrete"), want)


def test_backward_pass_in_particle_groups_changes_nothing(monkeypatch):
    """On CPU the discrete adjoint's backward pass runs on groups of particles: same gradient."""
    monkeypatch.setattr(particles, "_BACKWARD_BLOCK_VALUES", 8)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    n, d = 12, 2  # three groups of four particles
    assert particles._backward_blocks(n, d, separable=True) == 3
    W, b, x0 = problem(d, seed=9, n=n, layers=5)  # shapes no other test uses: the kernel is traced anew
    got = jax.jit(jax.grad(ours("tanh", "discrete"), argnums=(0, 1, 2)))(W, b, x0)
    assert_round_off(got, jax.jit(jax.grad(reference("tanh"), argnums=(0, 1, 2)))(W, b, x0))


@pytest.mark.parametrize("case", ["groups", "stochastic", "feedback", "nested"])
def test_unrolled_segments_give_the_looped_segments_gradient(monkeypatch, case):
    """The particle step's backward pass writes out each segment's layers; looping over them instead
    (recomputed states and residuals through a segment's buffer) gives the same gradients: in particle
    groups, with noise (residuals σ' and ξ), with the feedback mean, with a head segment (5 layers) and
    with nested levels of segments (257 layers, heads at both levels)."""
    monkeypatch.setattr(particles, "_BACKWARD_BLOCK_VALUES", 8)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    W, b, x0 = problem(2, seed=16, n=12, layers=257 if case == "nested" else 5)
    W = W * 0.3 if case == "nested" else W  # keep 257 tanh layers well conditioned
    feedback = 0.4 if case == "feedback" else None
    J = ours("tanh", "discrete", feedback=feedback, stochastic=case == "stochastic")
    assert particles.NeuralEulerStep.unrolled_segments
    assert particles._backward_blocks(12, 2, separable=True) == 3
    jax.clear_caches()  # traced with these groups, not taken from another test's program of these shapes
    unrolled = jax.jit(jax.grad(J, argnums=(0, 1, 2)))(W, b, x0)
    monkeypatch.setattr(particles.NeuralEulerStep, "unrolled_segments", False)
    jax.clear_caches()  # the kernel is traced anew with the looped segments
    try:
        looped = jax.jit(jax.grad(J, argnums=(0, 1, 2)))(W, b, x0)
    finally:
        jax.clear_caches()  # no later test may reuse the looped program
    assert_round_off(unrolled, looped, tol=1e-14)


def test_particle_groups_divide_the_particle_count(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert particles._backward_blocks(1_000_000, 2, separable=True) == 16  # 2e6 / 2^17 ≈ 15.3
    assert particles._backward_blocks(100_000, 2, separable=True) == 2  # 2e5 / 2^17 ≈ 1.5
    assert particles._backward_blocks(1_000_003, 2, separable=True) == 1  # a prime: one group
    assert particles._backward_blocks(100_000, 2, separable=False) == 1  # noise or feedback mean
    assert particles._backward_blocks(500, 1, separable=True) == 1


@pytest.mark.parametrize("d", [1, 3])
def test_an_odd_particle_count_runs_with_one_appended_particle_that_changes_nothing(monkeypatch, d):
    """On CPU an odd number of independent particles gets a copy of the last one for the run: the outputs,
    the saved layers and the gradients (every adjoint, in particle groups too; with noise as well) are
    those of the n particles, and the noise is still normal(fold_in(key, l), (n, d))."""
    monkeypatch.setattr(particles, "_BACKWARD_BLOCK_VALUES", 8)
    n = 15  # 16 particles in the run: groups of them in the discrete adjoint's backward pass
    W, b, x0 = problem(d, seed=15, n=n, layers=4)
    field = mfj.NeuralField(W, b, activation="tanh", T=T)
    key = jax.random.PRNGKey(7)
    assert particles._appended_particles(n, field, None, None) == 1
    assert particles._appended_particles(n + 1, field, None, None) == 0
    constant = particles._constant_diffusion  # a number K; a callable K sees the n particles passed
    assert particles._appended_particles(n, field, constant, key) == 1
    assert particles._appended_particles(n, field, constant_diffusion, key) == 0
    assert particles._appended_particles(n, field, constant, jax.random.key(7, impl="rbg")) == 0
    with jax.threefry_partitionable(False):  # the rows of a draw then depend on its shape
        assert particles._appended_particles(n, field, constant, key) == 0
    coupled = mfj.NeuralField(W, b, activation="tanh", T=T, feedback=0.5)
    assert particles._appended_particles(n, coupled, None, None) == 0  # the mean would include the extra one

    traj = mfj.resnet_forward(field, x0, save_every=2)
    assert traj.shape == (3, n, d)
    assert_round_off(traj[-1], plain_forward(W, b, x0, "tanh"), tol=1e-14)
    with_one_more = mfj.resnet_forward(field, jnp.concatenate([x0, x0[:1] + 1.0]), save_every=2)  # even n
    assert_round_off(traj, with_one_more[:, :n], tol=1e-14)
    noisy = mfj.resnet_forward(field, x0, diffusion=0.3, key=key)
    assert_round_off(noisy, plain_forward(W, b, x0, "tanh", diffusion=constant_diffusion, key=key), tol=1e-14)
    for stochastic in (False, True):
        want = jax.grad(reference("tanh", stochastic=stochastic), argnums=(0, 1, 2))(W, b, x0)
        for adjoint in ADJOINTS:
            got = jax.grad(ours("tanh", adjoint, stochastic=stochastic), argnums=(0, 1, 2))(W, b, x0)
            assert got[2].shape == (n, d)
            assert_round_off(got, want)


def test_fields_other_than_neural_field_fall_back_to_reverse_mode():
    class ShiftedNeuralField(mfj.NeuralField):
        """The same field seen as another AbstractField subclass (no particle-last kernel)."""

    W, b, x0 = problem(3, seed=8)

    def J(W, adjoint, cls):
        return loss_of_output(mfj.resnet_forward(cls(W, b, activation="relu", T=T), x0, adjoint=adjoint))

    want = jax.jit(jax.grad(reference("relu")))(W, b, x0)
    got = jax.jit(jax.grad(J), static_argnums=(1, 2))(W, "discrete", ShiftedNeuralField)
    assert_round_off(got, want)


def test_noise_of_layer_l_is_normal_fold_in_key_l_whatever_the_depth():
    n, d, K, key = 5, 3, 0.5, jax.random.PRNGKey(4)
    dt = 0.1
    for layers in (1, 3):
        field = mfj.NeuralField(jnp.zeros((layers, d, d)), jnp.zeros((layers, d)), T=dt * layers)
        x0 = jnp.ones((n, d))
        traj = mfj.resnet_forward(field, x0, save_every=1, diffusion=K, key=key)
        for l in range(layers):
            xi = (traj[l + 1] - traj[l]) / np.sqrt(2 * K * dt)
            np.testing.assert_allclose(xi, jax.random.normal(jax.random.fold_in(key, l), (n, d)), atol=1e-12)


def test_repeated_calls_with_new_values_do_not_retrace():
    W, b, x0 = problem(2, seed=12, layers=4, n=9)
    before = eqx.debug.get_num_traces(particles._resnet_kernel)
    for seed in range(3):
        field = mfj.NeuralField(W + seed, b - seed, activation="tanh", T=T)
        jax.block_until_ready(mfj.resnet_forward(field, x0 * seed))
    assert eqx.debug.get_num_traces(particles._resnet_kernel) - before == 1


def gradient_temp_bytes(adjoint, layers, n=16, d=2):
    W, b, x0 = problem(d, layers=layers, n=n)
    grad = jax.jit(jax.grad(ours("tanh", adjoint), argnums=(0, 1)))
    return grad.lower(W, b, x0).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("d", [1, 4])
def test_default_adjoint_stores_one_state_per_layer_of_a_segment(d):
    """100 layers, segments of 10: 10 checkpoints, then the 10 inputs of one segment's layers (each layer is
    checkpointed too, so no intermediates of it are kept) and a few states in flight: 23-24 states measured,
    44 with the layers' intermediates stored."""
    n = 4096
    _, _, x0 = problem(d, layers=100, n=n)
    states = gradient_temp_bytes("checkpointed", 100, n=n, d=d) / (n * d * x0.dtype.itemsize)
    assert states < 30, states


def test_discrete_adjoint_memory_grows_like_the_square_root_of_the_depth():
    """10x the layers: about √10 ≈ 3.2x the stored states (ratio < 4), where storing all is ~10x."""
    shallow, deep = 16, 160
    assert np.sqrt(deep) / 2 <= checkpoint_interval(deep) <= 2 * np.sqrt(deep)
    assert gradient_temp_bytes("discrete", deep) / gradient_temp_bytes("discrete", shallow) < 4.0
    assert gradient_temp_bytes("direct", deep) / gradient_temp_bytes("direct", shallow) > 7.0


@pytest.mark.parametrize("layers", [257, 300])
@pytest.mark.parametrize("adjoint", ["discrete", "checkpointed"])
def test_nested_checkpoint_levels_give_the_plain_gradient(adjoint, layers):
    """Beyond 256 layers the segments are split again (3 levels; 257 leaves a head at both levels)."""
    assert len(segment_plan(layers)) == 2
    W, b, x0 = problem(2, seed=14, layers=layers, n=5)
    W = W * 0.3  # keep 300 tanh layers of T = 0.9 well conditioned
    got = jax.jit(jax.grad(ours("tanh", adjoint), argnums=(0, 1, 2)))(W, b, x0)
    want = jax.jit(jax.grad(reference("tanh"), argnums=(0, 1, 2)))(W, b, x0)
    assert_round_off(got, want)


class _LinearStep(AbstractAdjointStep):
    """x ↦ a x + xs_l with its adjoint written out."""

    def forward(self, x, xs_l, shared):
        return shared * x + xs_l, ()

    def backward(self, x, residual, p, xs_l, shared):
        return shared * p, p, jnp.vdot(p, x)


@pytest.mark.parametrize("steps", [1, 49, 50])
def test_the_recompute_skips_each_segments_last_step(steps):
    """The backward pass recomputes a segment of k steps by a loop of k − 1 steps (the state after its last
    step is never read; the last step runs for its residual alone), and the gradient equals the plain
    scan's reverse mode (1 step: one segment of 1; 49 steps: m = 7 segments of 7; 50: 10 of 5). The
    forward pass runs m − 1 segments in a loop that stores each one's end, and the last one after it."""
    xs = jnp.linspace(-1.0, 1.0, 3 * steps).reshape(steps, 3)
    x0, a = jnp.array([0.3, -0.2, 0.5]), jnp.asarray(0.97)

    def ours(x0, xs, a):
        return jnp.sum(adjoint_scan(_LinearStep(), x0, xs, a) ** 2)

    def plain(x0, xs, a):
        return jnp.sum(jax.lax.scan(lambda x, x_l: (a * x + x_l, None), x0, xs)[0] ** 2)

    (k,) = segment_plan(steps)
    jaxpr = jax.make_jaxpr(jax.grad(ours, (0, 1, 2)))(x0, xs, a).jaxpr
    lengths = [eqn.params["length"] for eqn in primitive_equations(jaxpr, "scan")]
    m = steps // k
    assert sorted(set(lengths)) == sorted({m - 1, m, k, k - 1}), lengths
    got = jax.jit(jax.grad(ours, (0, 1, 2)))(x0, xs, a)
    want = jax.grad(plain, (0, 1, 2))(x0, xs, a)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-13)


def test_segment_plan_keeps_every_level_small():
    for steps in (1, 2, 10, 100, 256, 257, 1000, 4096, 4097, 10**5):
        plan = segment_plan(steps)
        lengths = (steps, *plan)
        stored = [-(-outer // inner) for outer, inner in itertools.pairwise(lengths)] + [plan[-1]]
        assert max(stored) <= (16 if steps > 256 else 2 * np.sqrt(steps) + 1), (steps, plan)
        assert all(outer >= inner for outer, inner in itertools.pairwise(lengths))


def test_gradient_memory_from_100_to_1000_layers_grows_less_than_2x():
    """Bytes of the compiled gradient, not time. 100 layers: 10 checkpoints + the 10 recomputed states
    (and residuals) of one segment; 1000 layers: 10 + 10 checkpoints + the same, ~1.3x (one level of √L
    segments: ~2.8x here, √10 ≈ 3.2x asymptotically)."""
    for adjoint in ("discrete", "checkpointed"):
        growth = gradient_temp_bytes(adjoint, 1000, n=4096) / gradient_temp_bytes(adjoint, 100, n=4096)
        assert growth < 2.0, (adjoint, growth)


def test_forward_mode_runs_through_the_default_adjoint():
    W, b, x0 = problem(2, seed=13)
    J = ours("tanh", "checkpointed")
    forward = jax.jit(jax.jacfwd(J, argnums=1))(W, b, x0)
    reverse = jax.jit(jax.jacrev(J, argnums=1))(W, b, x0)
    assert_round_off(forward, reverse)


def test_bad_adjoint_is_rejected_by_name():
    field = mfj.NeuralField(1.0, 0.0, T=T)
    with pytest.raises(ValueError, match=r"adjoint.*'backsolve'"):
        mfj.resnet_forward(field, jnp.ones(3), adjoint="backsolve")


@pytest.mark.parametrize("m, blocks", [(262144, 32), (1000000, 64), (96, 3), (35, 5), (64, 64)])
def test_backward_groups_partition_the_particles_and_share_every_device(m, blocks):
    """The discrete adjoint's groups: a permutation of the last axis that _from_groups undoes, and every
    contiguous share of m / D entries (D dividing the number of runs) holds m / (D · blocks) entries of each
    group, so that sharded particles stay on their devices."""
    a = np.arange(2 * m).reshape(2, m)
    groups = np.asarray(_to_groups(jnp.asarray(a), blocks))
    assert groups.shape == (blocks, 2, m // blocks)
    np.testing.assert_array_equal(np.sort(groups[:, 0].ravel()), np.arange(m))
    np.testing.assert_array_equal(np.asarray(_from_groups(jnp.asarray(groups), m)), a)
    runs = _runs(m, blocks)
    assert m % (runs * blocks) == 0 and (runs == 16 or m % (2 * runs * blocks))
    for devices in (d for d in (1, 2, 4, 8, 16) if runs % d == 0):
        share = groups[:, 0] // (m // devices)  # the device holding each entry
        for j in range(blocks):
            np.testing.assert_array_equal(np.bincount(share[j], minlength=devices), m // (devices * blocks))
