"""Reliability: non-finite guards, killed runs leave usable checkpoints, long runs stay finite."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import meanfield_jax as mfj
from meanfield_jax.timestepping import integrate, landing_times, steps_needed


def test_time_loop_reports_the_first_non_finite_save_interval():
    def blow_up(y, t, dt):
        return y * jnp.exp(2000.0 * dt)  # overflows float64 after t ≈ 0.35

    message = r"non-finite \(NaN or inf\) before t = 0.5: reduce cfl"
    with pytest.raises(eqx.EquinoxRuntimeError, match=message):
        integrate(blow_up, jnp.ones(3), np.array([0.0, 0.25, 0.5, 1.0]), 0.01, np.array([]))


def _step_counter(pieces: bool):
    """A step that counts the steps taken (the state + 1), and the piece_constant that runs the loop by
    pieces (None: the carried loop)."""
    if pieces:
        return (lambda s, t, dt, q: s + 1), (lambda t: t)
    return (lambda s, t, dt: s + 1), None


# (final time, steps of equal length to it, layers): each one short of its count with a running time sum
LOOPS_THAT_DRIFTED = {
    jnp.float32: [(1.0, 1000, 1), (0.7, 256, 1), (3.0, 705, 1), (1.0, 327, 1), (3.0, 2820, 4)],
    jnp.float64: [(10.0, 1000, 1), (0.7, 8192, 1), (40.0, 4000, 4)],
}


@pytest.mark.parametrize("pieces", [False, True])
@pytest.mark.parametrize("adjoint", ["checkpointed", "discrete"])
@pytest.mark.parametrize("dtype", list(LOOPS_THAT_DRIFTED))
def test_time_loop_takes_exactly_the_counted_steps(dtype, adjoint, pieces):
    """A running sum t + Δt drifts by a rounding a step: for these steps it fell more than the 16-ulp
    tolerance short of the stop after the counted steps, and the loop, one sliver step over its count, ran
    out of steps. The time τ_prev + j Δt does not drift: every case takes exactly steps_needed's count."""
    counter, piece_constant = _step_counter(pieces)
    for t_final, n, layers in LOOPS_THAT_DRIFTED[dtype]:
        stops = t_final * np.arange(1, layers) / layers
        count = steps_needed([t_final], np.append(stops, t_final), 0.0, t_final / n)
        assert count == n
        steps, info = integrate(
            counter, jnp.zeros(1, dtype), np.array([0.0, t_final]), t_final / n, stops, max_steps=count,
            adjoint=adjoint, piece_constant=piece_constant,
        )
        assert steps.dtype == dtype
        assert int(info["num_steps"]) == int(steps[-1, 0]) == n


@pytest.mark.parametrize("pieces", [False, True])
def test_step_count_agrees_with_the_loop_next_to_a_whole_number_of_steps(pieces):
    """Δt_max = (1 − r)/1000 on [0, 1]: the thousandth step ends 1000 r Δt_max short of the stop. The loop
    lands on the stop from within 16 ulp (3.6e-15) and otherwise takes a step more; the count forgave
    round-off up to 1e-12 relative, so for r = 5e-15 … 5e-13 it counted 1000 steps where the loop took 1001,
    and the solve ran out of them. It now forgives 8 ulp of the stop, and the two agree on either side."""
    counter, piece_constant = _step_counter(pieces)
    for r, steps in [(5e-13, 1001), (2e-14, 1001), (5e-15, 1001), (1e-16, 1000), (0.0, 1000), (-5e-15, 1000)]:
        dt = (1 - r) / 1000
        count = steps_needed([1.0], [1.0], 0.0, dt)
        taken, info = integrate(
            counter, jnp.zeros(1), np.array([0.0, 1.0]), dt, np.array([]), max_steps=count,
            piece_constant=piece_constant,
        )
        assert count == int(info["num_steps"]) == int(taken[-1, 0]) == steps, r



@pytest.mark.parametrize("pieces", [False, True])
def test_save_times_a_rounding_away_from_layer_boundaries_cost_no_step(pieces):
    """Ten layers of 0.1: the boundaries l · 0.1 are 0.30000000000000004, 0.6000000000000001 and
    0.7000000000000001, save times written as decimals are 0.3, 0.6, 0.7. Both must be landed on, so each
    such pair took a step of 10⁻¹⁶ between them (3 more steps than the 10 · 4 of the layers). A boundary
    within 8 ulp of a save time or of t0 is now that time: 40 steps, counted as the loop takes them, and a
    solve continued from t0 = 0.6 takes the 16 of its four layers."""
    counter, piece_constant = _step_counter(pieces)
    layers = np.arange(1, 10) * 0.1
    save = np.round(np.arange(11) * 0.1, 12)
    assert np.count_nonzero(np.isin(save, layers)) == 6 and not np.isin([0.3, 0.6, 0.7], layers).any()
    for t0, steps in [(0.0, 40), (0.6, 16)]:
        kept = save[save >= t0]
        count = steps_needed(kept, landing_times(kept[1:].tolist(), layers.tolist(), t0), t0, 0.025)
        taken, info = integrate(
            counter, jnp.zeros(1), kept, 0.025, layers, t0=t0, max_steps=count, piece_constant=piece_constant,
        )
        assert count == 4 and int(info["num_steps"]) == int(taken[-1, 0]) == steps
        np.testing.assert_array_equal(np.asarray(taken[:, 0]), 4 * np.arange(len(kept)))

@pytest.mark.parametrize("adjoint", ["checkpointed", "discrete"])
def test_running_out_of_max_steps_is_an_error_or_a_nan_gradient_never_a_wrong_one(adjoint):
    """A solve that needs 51 steps with max_steps=20: the solution raises, and so does an eager gradient;
    a compiled gradient, which XLA computes without the solution's value (and so without the check on
    it), is NaN instead of the gradient of the truncated solve (1.17 here, against 2.21 with enough steps)."""
    grid = mfj.Grid1D(-3.0, 3.0, 30)
    f0 = grid.project(lambda x: jnp.exp(-((x - 0.3) ** 2)))

    def loss(W, max_steps):
        field = mfj.NeuralField(W, jnp.zeros(1), activation="tanh", T=1.0)
        sol = mfj.solve_fokker_planck(field, f0, grid, diffusion=0.5, max_steps=max_steps, adjoint=adjoint)
        return jnp.sum(sol.f[-1] * grid.x**2)

    W = jnp.array([[-1.0]])
    message = r"ran out of steps \(max_steps=20 per save interval\)"
    with pytest.raises((eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError), match=message):
        jax.grad(loss)(W, 20)
    compiled = jax.jit(jax.grad(loss), static_argnums=1)
    assert bool(jnp.isnan(compiled(W, 20)).all())
    assert bool(jnp.isfinite(compiled(W, 60)).all())


def test_fit_stops_on_overflowing_weights_and_names_the_step():
    x = jnp.linspace(0.0, 1.0, 16)[:, None]

    def loss(p):
        field = mfj.NeuralField.constant(p["w"], 0.0, num_layers=100, T=250.0)  # (1 + 2500)^100 overflows
        return jnp.mean(mfj.resnet_forward(field, x) ** 2)

    with pytest.raises(mfj.NonFiniteError, match=r"non-finite .* step 0"):
        mfj.fit({"w": jnp.array(1000.0)}, loss, steps=3, progress=False)


SCRIPT = textwrap.dedent(
    """
    import sys, time
    import jax, jax.numpy as jnp, optax
    jax.config.update("jax_enable_x64", True)
    import meanfield_jax as mfj
    A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    def loss(p):
        return 0.5 * p @ A @ p - p.sum()
    def slow(step, params, value):
        time.sleep(0.05)
    mfj.fit(jnp.array([1.0, -1.0]), loss, optimizer=optax.sgd(0.1), steps=100000, progress=False,
            checkpoint=sys.argv[1], checkpoint_every=1, callback=slow)
    """
)


BETWEEN_WRITES = textwrap.dedent(
    """
    import os, signal, sys
    import jax.numpy as jnp
    from meanfield_jax import training

    path = sys.argv[1]
    training._save_checkpoint(path, jnp.array([1.0, 2.0]), 1, [0.5])
    write = training.atomic_write

    def terminated_after_the_first(target, data):
        write(target, data)
        if target == path:
            os.kill(os.getpid(), signal.SIGTERM)  # between the checkpoint and its sidecar

    training.atomic_write = terminated_after_the_first
    training._save_checkpoint(path, jnp.array([3.0, 4.0]), 2, [0.5, 0.25])
    print("not terminated", flush=True)
    """
)


def test_sigterm_between_a_checkpoint_and_its_sidecar_waits_for_the_pair(tmp_path):
    """The signal takes effect once both files are written: the process still dies of SIGTERM, before
    running on, and the checkpoint on disk is the new, complete pair."""
    ckpt = tmp_path / "fit.eqx"
    proc = subprocess.run([sys.executable, "-c", BETWEEN_WRITES, str(ckpt)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr.decode()
    assert b"not terminated" not in proc.stdout
    from meanfield_jax.training import _load_checkpoint

    state, step, history = _load_checkpoint(str(ckpt), jnp.zeros(2, jnp.float32), 10)  # written in float32
    np.testing.assert_array_equal(state, [3.0, 4.0])
    assert (step, history) == (2, [0.5, 0.25])


def test_sigterm_during_fit_leaves_a_usable_checkpoint(tmp_path):
    ckpt = tmp_path / "fit.eqx"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(ckpt)], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        sidecar = tmp_path / "fit.eqx.json"
        def progressed():
            return sidecar.exists() and json.loads(sidecar.read_text())["step"] >= 5

        while time.time() < deadline and not progressed():
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    state = json.loads((tmp_path / "fit.eqx.json").read_text())
    done = state["step"]
    assert done >= 5

    A = jnp.array([[3.0, 1.0], [1.0, 2.0]])

    def loss(p):
        return 0.5 * p @ A @ p - p.sum()

    resumed = mfj.fit(jnp.array([1.0, -1.0]), loss, optimizer=optax.sgd(0.1), steps=done + 3, progress=False,
                      checkpoint=str(ckpt), resume=True)
    straight = mfj.fit(jnp.array([1.0, -1.0]), loss, optimizer=optax.sgd(0.1), steps=done + 3, progress=False)
    np.testing.assert_array_equal(resumed.params, straight.params)
    np.testing.assert_array_equal(resumed.history, straight.history)


def test_soak_ten_thousand_steps_of_each_solver_and_a_thousand_fit_steps():
    grid = mfj.Grid1D(-4.0, 4.0, 64)
    f0 = grid.project(lambda x: jnp.exp(-4.0 * x**2))
    field = mfj.NeuralField.constant(-0.7, 0.2, num_layers=4, T=1.0, activation="tanh")
    # 64 cells with a slow field: the CFL step is ~0.05, so t = 700 takes ≥ 10⁴ steps
    sol = mfj.solve_vlasov(field, f0, grid, save_at=[0.0, 350.0, 700.0], boundary="zero_flux")
    assert int(sol.num_steps) >= 10_000
    assert bool(jnp.all(jnp.isfinite(sol.f))) and float(jnp.min(sol.f)) >= 0.0
    np.testing.assert_allclose(sol.mass(), sol.mass()[0], rtol=1e-11)
    fp = mfj.solve_fokker_planck(field, f0, grid, diffusion=0.5, save_at=[0.0, 60.0, 120.0])
    assert int(fp.num_steps) >= 10_000
    assert bool(jnp.all(jnp.isfinite(fp.f))) and float(jnp.min(fp.f)) >= 0.0
    np.testing.assert_allclose(fp.mass(), fp.mass()[0], rtol=1e-11)
    np.testing.assert_allclose(fp.f[-1] / fp.mass()[-1],
                               mfj.fokker_planck_steady_state(field, grid, diffusion=0.5), atol=1e-9)

    x = jax.random.normal(jax.random.PRNGKey(0), (64, 1))

    def loss(p):
        return jnp.mean((mfj.resnet_forward(p, x) - 0.5 * x - 1.0) ** 2)

    res = mfj.fit(mfj.NeuralField.constant(0.0, 0.0, num_layers=5, T=1.0), loss, steps=1000, progress=False)
    assert np.all(np.isfinite(res.history)) and res.history[-1] < 1e-3 * res.history[0]


def _streaming_problem():
    grid = mfj.Grid1D(-3.0, 3.0, 60)
    field = mfj.NeuralField(jnp.array([-1.0, 0.5, -2.0]).reshape(3, 1, 1), jnp.array([[0.3], [-0.4], [0.1]]),
                            activation="tanh", T=1.5)
    f0 = grid.project(lambda x: jnp.exp(-6.0 * (x - 0.4) ** 2))
    return grid, field, f0, np.linspace(0.0, 1.5, 13)


def test_streamed_solve_equals_one_solve_and_resumes_after_an_interruption(tmp_path, monkeypatch):
    from meanfield_jax import streaming

    grid, field, f0, save = _streaming_problem()
    whole = mfj.solve_vlasov(field, f0, grid, save_at=save, boundary="outflow")
    streamed = streaming.solve_streamed("vlasov", field, f0, grid, save, tmp_path / "a", chunk=5,
                                        boundary="outflow")
    np.testing.assert_array_equal(streamed.ts, whole.ts)
    np.testing.assert_allclose(streamed.f, whole.f, rtol=0, atol=1e-14)
    np.testing.assert_allclose(streamed.outflow, whole.outflow, atol=1e-14)
    assert int(streamed.num_steps) == int(whole.num_steps)
    with pytest.raises(FileExistsError, match="resume=True"):
        streaming.solve_streamed("vlasov", field, f0, grid, save, tmp_path / "a", chunk=5, boundary="outflow")

    calls = {"n": 0}
    real = streaming.SOLVERS["vlasov"]

    def dies_on_third_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setitem(streaming.SOLVERS, "vlasov", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        streaming.solve_streamed("vlasov", field, f0, grid, save, tmp_path / "b", chunk=3, boundary="outflow")
    assert len(streaming.load_streamed(tmp_path / "b", grid).ts) == 7  # two complete chunks on disk
    monkeypatch.setitem(streaming.SOLVERS, "vlasov", real)
    resumed = streaming.solve_streamed("vlasov", field, f0, grid, save, tmp_path / "b", chunk=3, resume=True,
                                       boundary="outflow")
    np.testing.assert_allclose(resumed.f, whole.f, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="different problem"):
        streaming.solve_streamed("vlasov", field, 2 * f0, grid, save, tmp_path / "b", chunk=3, resume=True,
                                 boundary="outflow")


def test_a_streamed_solve_refused_by_the_solver_leaves_no_folder(tmp_path):
    """The folder was made before the solver checked its arguments, so the corrected call was refused
    ("exists: pass resume=True")."""
    from meanfield_jax import streaming

    grid, field, f0, save = _streaming_problem()
    with pytest.raises(ValueError, match="unknown scheme='weno'"):
        streaming.solve_streamed("vlasov", field, f0, grid, save, tmp_path / "run", scheme="weno")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="t0 cannot be options of solve_streamed"):
        streaming.solve_streamed("vlasov", field, f0, grid, save, tmp_path / "run", t0=0.5)
    with pytest.raises(ValueError, match="got none"):
        streaming.solve_streamed("vlasov", field, f0, grid, [], tmp_path / "run")
    sol = streaming.solve_streamed("vlasov", field, f0, grid, save, tmp_path / "run", chunk=6)
    assert sol.f.shape[0] == len(save)


def test_load_streamed_names_a_damaged_file_and_a_grid_of_another_shape(tmp_path):
    """A damaged chunk gave a bare EOFError or BadZipFile, and another grid was taken silently (mass x2)."""
    from meanfield_jax import streaming

    grid, field, f0, save = _streaming_problem()
    streaming.solve_streamed("vlasov", field, f0, grid, save, tmp_path / "run", chunk=6)
    with pytest.raises(ValueError, match=r"holds densities of shape \(60,\), not the grid's \(30,\)"):
        streaming.load_streamed(tmp_path / "run", mfj.Grid1D(-3.0, 3.0, 30))
    (tmp_path / "run" / "chunk_00001.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"chunk_00001\.npz is missing or damaged"):
        streaming.load_streamed(tmp_path / "run", grid)


def test_streamed_fokker_planck_matches_one_solve(tmp_path):
    from meanfield_jax import streaming

    grid, field, f0, save = _streaming_problem()
    whole = mfj.solve_fokker_planck(field, f0, grid, diffusion=0.2, save_at=save)
    streamed = streaming.solve_streamed("fokker_planck", field, f0, grid, save, tmp_path / "fp", chunk=4,
                                        diffusion=0.2)
    np.testing.assert_allclose(streamed.f, whole.f, rtol=0, atol=1e-14)


class _QuadraticDiffusion(eqx.Module):
    c: jax.Array

    def __call__(self, x):
        return self.c[0] + self.c[1] * x**2


def _quadratic_diffusion(x):
    return 0.2 + 0.1 * x**2


def test_streamed_fingerprint_knows_a_diffusion_by_its_values_and_code():
    """The options were hashed by their repr: a K that is an equinox Module with other values had the same
    repr (f64[2]) and resumed another problem's run, and a function's repr holds its address, so a run with
    K(x) could never be resumed in a new process. K is now known by its values on the grid: functions of
    the same bytecode (sin and cos, other defaults) differ, the same function in another process does not."""
    from meanfield_jax.streaming import _fingerprint

    grid, field, f0, save = _streaming_problem()

    def fingerprint(K):
        return _fingerprint("fokker_planck", field, f0, grid, save, {"diffusion": K, "cfl": 0.4})

    module = fingerprint(_QuadraticDiffusion(jnp.array([0.2, 0.1])))
    assert module == fingerprint(_QuadraticDiffusion(jnp.array([0.2, 0.1])))
    assert module != fingerprint(_QuadraticDiffusion(jnp.array([2.0, 0.0])))
    scale = 0.5
    closes_over = fingerprint(lambda x: scale * x**2)
    scale = 0.6
    assert closes_over != fingerprint(lambda x: scale * x**2)
    assert fingerprint(lambda x: x**2) != fingerprint(lambda x: x**3)
    assert fingerprint(lambda x: 0.5 + 0.1 * jnp.sin(x)) != fingerprint(lambda x: 0.5 + 0.1 * jnp.cos(x))
    assert fingerprint(lambda x, D=0.5: D + x**2) != fingerprint(lambda x, D=2.0: D + x**2)
    script = textwrap.dedent(f"""
        import jax
        jax.config.update("jax_enable_x64", True)
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_reliability import _quadratic_diffusion, _streaming_problem
        from meanfield_jax.streaming import _fingerprint
        grid, field, f0, save = _streaming_problem()
        options = {{"diffusion": _quadratic_diffusion, "cfl": 0.4}}
        print(_fingerprint("fokker_planck", field, f0, grid, save, options))
    """)
    other_process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == fingerprint(_quadratic_diffusion)


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_solvers_run_under_an_outer_jit_and_vmap_that_close_over_the_field(solver):
    """A concrete field closed over by jax.jit (f0 traced): the steps are still counted from the CFL step,
    without max_steps, and the result is the eager solve's; vmap over initial densities as well."""
    grid = mfj.Grid1D(-4.0, 4.0, 64)
    W, b = jnp.array([[[1.5]], [[-0.8]]]), jnp.array([[0.2], [0.1]])
    field = mfj.NeuralField(W, b, activation="tanh", T=1.0)
    kwargs = {"diffusion": 0.3} if solver == "fokker_planck" else {}
    solve = mfj.solve_fokker_planck if solver == "fokker_planck" else mfj.solve_vlasov

    def final(f0):
        sol = solve(field, f0, grid, save_at=[0.4, 1.0], **kwargs)
        return sol.f[-1], sol.num_steps

    f0s = jnp.stack([grid.project(lambda x, s=s: jnp.exp(-2.0 * (x - s) ** 2)) for s in (-0.5, 0.0, 0.7)])
    eager = [final(f0) for f0 in f0s]
    f, steps = jax.jit(final)(f0s[0])
    np.testing.assert_allclose(f, eager[0][0], rtol=0, atol=1e-13)
    assert int(steps) == int(eager[0][1]) > 10
    batched, _ = jax.jit(jax.vmap(final))(f0s)
    for k, (f_k, _) in enumerate(eager):
        np.testing.assert_allclose(batched[k], f_k, rtol=0, atol=1e-13)


def test_fokker_planck_under_jit_with_a_diffusion_closing_over_a_traced_value():
    """K(x) = k with k traced (a closure, which is_traced cannot see): the step is traced, max_steps
    bounds the loop, nothing is evaluated eagerly, and the result is the eager solve's."""
    grid = mfj.Grid1D(-4.0, 4.0, 48)
    field = mfj.NeuralField(jnp.array([[-1.0]]), jnp.array([0.3]), activation="tanh", T=1.0)
    f0 = grid.project(lambda x: jnp.exp(-2.0 * (x - 0.5) ** 2))

    def final(k):
        diffusion = lambda x: k * (1.0 + 0.0 * x)  # noqa: E731
        return mfj.solve_fokker_planck(field, f0, grid, diffusion=diffusion, max_steps=400).f[-1]

    np.testing.assert_allclose(jax.jit(final)(0.3), final(0.3), rtol=0, atol=1e-13)
    batched = jax.vmap(final)(jnp.array([0.2, 0.3]))
    np.testing.assert_allclose(batched[1], final(0.3), rtol=0, atol=1e-13)


@pytest.mark.parametrize("solver", ["vlasov", "fokker_planck"])
def test_a_solve_continued_past_the_fields_final_time_and_arguments_named_in_errors(solver):
    """With save_at given t_final is not needed, so a solve may start at or after the field's T (where the
    last layer goes on); f0 = None and a t0 that is not a number are refused naming them."""
    grid = mfj.Grid1D(-4.0, 4.0, 64)
    f0 = grid.project(lambda x: jnp.exp(-(x**2)))
    field = mfj.NeuralField(-1.0, 0.0, T=1.0)

    def solve(f, **kwargs):
        if solver == "vlasov":
            return mfj.solve_vlasov(field, f, grid, **kwargs)
        return mfj.solve_fokker_planck(field, f, grid, 0.5, **kwargs)

    sol = solve(f0, save_at=[1.0, 2.0], t0=1.0)
    np.testing.assert_allclose(sol.ts, [1.0, 2.0])
    np.testing.assert_allclose(sol.total_mass(), grid.integrate(f0), rtol=1e-12)
    with pytest.raises(TypeError, match="f0 must be"):
        solve(None)
    with pytest.raises(TypeError, match="t0 must be a number"):
        solve(f0, t0="a")
    with pytest.raises(TypeError, match="save_at must be a list of times"):
        solve(f0, save_at="abc")
