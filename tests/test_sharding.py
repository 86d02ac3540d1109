"""Multi-device execution: sharded particles through the ResNet and fit, and the 2-D transport solve split
along x with halo exchange, against the single-device results.

Eight CPU devices need XLA_FLAGS=--xla_force_host_platform_device_count=8 before JAX starts, which is too
late in this process (conftest imported JAX), so the eight-device checks run in one child process that
prints its measurements as JSON; the tests below assert on them. Checks that one device suffices for run
here.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj
from meanfield_jax.sharding import particle_mesh, shard_particles, sharded_vlasov_2d

DEVICES = 8

# Runs with 8 host devices in float64; prints one JSON object of measured numbers.
CHILD = textwrap.dedent(
    """
    import json
    import re
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    import jax.numpy as jnp
    import numpy as np
    import optax
    import meanfield_jax as mfj
    from meanfield_jax.sharding import particle_mesh, shard_particles, sharded_vlasov_2d

    COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter")
    out = {"devices": jax.device_count()}
    mesh = particle_mesh()
    key = jax.random.PRNGKey(0)

    def collectives(fn, *args):
        text = jax.jit(fn).lower(*args).compile().as_text()
        return {c: text.count(c + "(") + text.count(c + "-start(") for c in COLLECTIVES}

    def collective_sizes(fn, *args):  # the number of values each collective moves, per kind
        sizes = {c: [] for c in COLLECTIVES}
        for line in jax.jit(fn).lower(*args).compile().as_text().splitlines():
            for c in COLLECTIVES:
                if f" {c}(" in line or f" {c}-start(" in line:
                    shapes = re.findall(r"[a-z]+[0-9]*\\[([0-9,]*)\\]", line.split("=", 1)[1].split(c)[0])
                    sizes[c].append(sum(int(np.prod([int(v) for v in s.split(",") if v])) for s in shapes))
        return sizes

    def relative(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    # ---- particles through the ResNet: one cache block and several per device ----
    W = jax.random.normal(key, (6, 2, 2)) * 0.8
    b = jax.random.normal(jax.random.fold_in(key, 1), (6, 2)) * 0.3
    field = mfj.NeuralField(W, b, activation="tanh", T=1.5)
    for n in (512, 262144):
        x = jax.random.normal(jax.random.fold_in(key, n), (n, 2))
        xs = shard_particles(x, mesh)
        y = mfj.resnet_forward(field, xs)
        out[f"resnet_{n}"] = {
            "input_devices": len(xs.sharding.device_set),
            "same_sharding": bool(y.sharding.is_equivalent_to(xs.sharding, 2)),
            "collectives": collectives(lambda x: mfj.resnet_forward(field, x), xs),
            "relative_difference": relative(y, mfj.resnet_forward(field, np.asarray(x))),
        }

    # the discrete adjoint's backward pass on 262144 particles in 4 groups (on CPU): no particle moves
    x = jax.random.normal(jax.random.fold_in(key, 262144), (262144, 2))

    def discrete_gradient(f, data):
        return jax.grad(lambda g: jnp.mean(mfj.resnet_forward(g, data, adjoint="discrete") ** 2))(f)

    xs = shard_particles(x, mesh)
    out["resnet_gradient"] = {
        "collectives": collectives(discrete_gradient, field, xs),
        "relative_difference": max(
            relative(a, c) for a, c in zip(jax.tree_util.tree_leaves(discrete_gradient(field, xs)),
                                           jax.tree_util.tree_leaves(discrete_gradient(field, np.asarray(x))))
        ),
    }

    # ---- fit on sharded particles: the same iterates as on one device ----
    x = jax.random.normal(jax.random.fold_in(key, 2), (1024, 2))
    target = 0.5 * x + 0.2

    def squared_error(data, labels, f):
        return jnp.mean(jnp.sum((mfj.resnet_forward(f, data) - labels) ** 2, axis=-1))

    # the data ride in a Partial (a pytree), so they enter the compiled step as sharded arguments
    x_sharded, target_sharded = shard_particles(x, mesh), shard_particles(target, mesh)
    sharded_loss = jax.tree_util.Partial(squared_error, x_sharded, target_sharded)
    sharded = mfj.fit(field, sharded_loss, optimizer=optax.sgd(0.2), steps=4, progress=False)
    single = mfj.fit(field, lambda f: squared_error(x, target, f), optimizer=optax.sgd(0.2), steps=4,
                     progress=False)
    grad_collectives = collectives(lambda f, loss: jax.grad(loss)(f), field, sharded_loss)
    out["fit"] = {
        "history_sharded": sharded.history.tolist(),
        "history_single": single.history.tolist(),
        "W_difference": relative(sharded.params.W, single.params.W),
        "b_difference": relative(sharded.params.b, single.params.b),
        "gradient_collectives": grad_collectives,
    }

    # ---- the 2-D transport solve split along x (8 devices, 3 rows each) ----
    grid = mfj.Grid2D((-3.0, 3.0, 24), (-2.5, 2.5, 10))
    f0 = grid.project(lambda x, y: jnp.exp(-2.0 * ((x - 1.4) ** 2 + (y + 0.3) ** 2)))
    field2 = mfj.NeuralField(
        jnp.array([[[1.0, -1.5], [1.2, 0.4]], [[-0.6, 0.8], [-1.0, 0.3]]]),
        jnp.array([[0.1, -0.2], [0.3, 0.2]]),
        activation="tanh",
        T=1.0,
    )
    saves = [0.0, 0.4, 1.0]
    feedback = mfj.NeuralField(field2.W, field2.b, activation="tanh", T=1.0, feedback=-0.5)
    cases = {"outflow": (field2, "muscl"), "zero_flux": (feedback, "upwind"), "periodic": (field2, "muscl")}
    for boundary, (fld, scheme) in cases.items():
        ref = mfj.solve_vlasov(fld, f0, grid, save_at=saves, scheme=scheme, boundary=boundary)
        sol = sharded_vlasov_2d(fld, f0, grid, mesh, save_at=saves, scheme=scheme, boundary=boundary)
        moved = float(np.sum(np.abs(np.asarray(ref.f[-1]) - np.asarray(f0))) * grid.cell_volume)
        out[f"vlasov_{boundary}"] = {
            "f_difference": relative(sol.f, ref.f),
            "outflow_difference": float(np.max(np.abs(np.asarray(sol.outflow) - np.asarray(ref.outflow)))),
            "outflow": np.asarray(ref.outflow[-1]).tolist(),
            "steps": [int(sol.num_steps), int(ref.num_steps)],
            "f_devices": len(sol.f.sharding.device_set),
            "l1_change": moved,
        }

    # what the compiled solve moves between devices: the halo rows, and sums of a few values (wall masses,
    # the checks of the saved densities), never a density
    out["vlasov_collective_sizes"] = collective_sizes(
        lambda f: sharded_vlasov_2d(f, f0, grid, mesh, save_at=saves, max_steps=40).f, field2
    )

    # ---- a mesh of Explicit axes (jax.make_mesh's default; shardings are part of the types) ----
    from jax.sharding import AxisType
    explicit = jax.make_mesh((jax.device_count(),), ("particles",), axis_types=(AxisType.Explicit,))
    with jax.set_mesh(explicit):
        cases = {}
        for n in (512, 262144):  # one cache group; 4 groups of particles in the backward pass
            x = jax.random.normal(jax.random.fold_in(key, n), (n, 2))
            xs = shard_particles(x, explicit)
            cases[f"forward_{n}"] = (mfj.resnet_forward(field, xs), mfj.resnet_forward(field, np.asarray(x)))
            cases[f"discrete_gradient_{n}"] = (discrete_gradient(field, xs), discrete_gradient(field, x))
        x = jax.random.normal(jax.random.fold_in(key, 5), (512, 2))
        noisy = lambda f, data: jax.grad(lambda g: jnp.mean(mfj.resnet_forward(
            g, data, diffusion=0.4, key=key, adjoint="discrete") ** 2))(f)
        cases["noisy_discrete_gradient"] = (noisy(field, shard_particles(x, explicit)), noisy(field, x))
        x = jax.random.normal(jax.random.fold_in(key, 2), (1024, 2))  # fit's data, as above
        data = (shard_particles(x, explicit), shard_particles(0.5 * x + 0.2, explicit))
        loss = jax.tree_util.Partial(squared_error, *data)
        sharded = mfj.fit(field, loss, optimizer=optax.sgd(0.2), steps=4, progress=False)
        cases["fit"] = ((sharded.params, sharded.history), (single.params, single.history))
        for boundary in ("zero_flux", "periodic"):
            fld, scheme = (feedback, "upwind") if boundary == "zero_flux" else (field2, "muscl")
            sol = sharded_vlasov_2d(fld, f0, grid, explicit, save_at=saves, scheme=scheme, boundary=boundary)
            ref = mfj.solve_vlasov(fld, f0, grid, save_at=saves, scheme=scheme, boundary=boundary)
            cases[f"vlasov_{boundary}"] = ((sol.f, sol.outflow), (ref.f, ref.outflow))

        def final_moment(fld, solve, adjoint):  # the time loop's discrete adjoint under Explicit axes
            sol = solve(fld, f0, grid, save_at=saves, adjoint=adjoint, max_steps=40)
            return jnp.sum(sol.f[-1] * grid.xaxis.x[:, None])

        def sharded_solve(fld, f, g, **options):
            return sharded_vlasov_2d(fld, f, g, explicit, **options)

        cases["vlasov_discrete_gradient"] = (jax.grad(final_moment)(field2, sharded_solve, "discrete"),
                                             jax.grad(final_moment)(field2, mfj.solve_vlasov, "checkpointed"))
        out["explicit_mesh"] = {
            "forward_keeps_sharding": bool(cases["forward_262144"][0].sharding.is_equivalent_to(
                shard_particles(jnp.zeros((262144, 2)), explicit).sharding, 2)),
            "relative_difference": {
                name: max(relative(a, c) for a, c in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
                for name, (got, want) in cases.items()
            },
        }

    # the gradient through the exchange (ppermute transposes to the opposite shift) against a central
    # difference of the same sharded solve along a random direction of (W, b)
    def moment(f, adjoint="direct"):
        sol = sharded_vlasov_2d(f, f0, grid, mesh, t_final=0.3, max_steps=8, scheme="upwind",
                                time_stepper="euler", adjoint=adjoint)
        return mfj.moments(sol.f[-1], grid, order=1)["mean"][0]

    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.fold_in(key, 3), a.shape), field2)

    def derivative(adjoint):
        pairs = zip(jax.tree.leaves(jax.grad(moment)(field2, adjoint)), jax.tree.leaves(direction))
        return sum(float(jnp.vdot(g, v)) for g, v in pairs)

    forward, eps = jax.jit(moment), 1e-5
    shifted = [forward(jax.tree.map(lambda a, v, s=s: a + s * eps * v, field2, direction)) for s in (1, -1)]
    out["vlasov_gradient"] = {
        "derivative": derivative("direct"),
        "discrete_adjoint": derivative("discrete"),
        "central_difference": float(shifted[0] - shifted[1]) / (2 * eps),
    }
    try:  # the discrete adjoint is a custom_vjp: forward mode refuses it, which shows it is the one used
        jax.jacfwd(moment)(field2, "discrete")
        out["vlasov_gradient"]["discrete_forward_mode_error"] = None
    except TypeError as exc:
        out["vlasov_gradient"]["discrete_forward_mode_error"] = str(exc)

    try:
        sharded_vlasov_2d(field2, mfj.Grid2D((-3, 3, 20), (-2, 2, 6)).project(lambda x, y: 1 + 0 * x * y),
                          mfj.Grid2D((-3, 3, 20), (-2, 2, 6)), mesh)
        out["indivisible_error"] = None
    except ValueError as exc:
        out["indivisible_error"] = str(exc)

    # a runtime check that fails: raised after the solve (a callback raising on one device while the others
    # waited in the halo exchange hung for 40 s, then aborted the process); an f0 committed to a device
    small = mfj.Grid2D((-2.0, 2.0, 16), (-2.0, 2.0, 4))
    contracting = mfj.NeuralField(-jnp.eye(2), jnp.zeros(2), activation="identity", T=0.5)
    try:
        sharded_vlasov_2d(contracting, jnp.full(small.shape, 1e308), small, mesh)
        out["overflow_error"] = None
    except RuntimeError as exc:
        out["overflow_error"] = str(exc)
    ones = jnp.ones(small.shape)
    committed = sharded_vlasov_2d(contracting, jax.device_put(ones, jax.devices()[3]), small, mesh).f
    out["committed_f0"] = relative(committed, mfj.solve_vlasov(contracting, ones, small).f)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    """The child process's measurements (it runs once for the whole module)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}".strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


ROUND_OFF = 1e-12


# ---- particles -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [512, 262144])
def test_resnet_forward_keeps_the_particle_sharding(eight_devices, n):
    """512 and 262144 particles: the rows stay where they are, and no collective appears in the compiled
    program."""
    assert eight_devices["devices"] == DEVICES
    r = eight_devices[f"resnet_{n}"]
    assert r["input_devices"] == DEVICES
    assert r["same_sharding"]
    assert sum(r["collectives"].values()) == 0, r["collectives"]
    assert r["relative_difference"] < ROUND_OFF


def test_discrete_gradient_on_sharded_particles_moves_no_particle(eight_devices):
    """The backward pass walks groups of particles, each made of runs spread over the whole array: every
    device holds a part of every group, so the only collective is the all-reduce of the parameter
    cotangents, and the gradient equals the single-device one."""
    r = eight_devices["resnet_gradient"]
    moving = {k: v for k, v in r["collectives"].items() if k != "all-reduce"}
    assert sum(moving.values()) == 0, r["collectives"]
    assert r["relative_difference"] < ROUND_OFF


def test_fit_on_sharded_particles_follows_the_single_device_iterates(eight_devices):
    r = eight_devices["fit"]
    np.testing.assert_allclose(r["history_sharded"], r["history_single"], rtol=ROUND_OFF)
    assert r["history_single"][-1] < r["history_single"][0]  # it does descend
    assert r["W_difference"] < ROUND_OFF and r["b_difference"] < ROUND_OFF
    # the particle mean is a local sum plus an all-reduce: no device gathers the particles
    assert r["gradient_collectives"]["all-reduce"] >= 1
    assert r["gradient_collectives"]["all-gather"] == 0


# ---- the 2-D transport solve -----------------------------------------------------------------------------
@pytest.mark.parametrize("boundary", ["outflow", "zero_flux", "periodic"])
def test_sharded_vlasov_equals_the_single_device_solve(eight_devices, boundary):
    """MUSCL with outflow and periodic walls; first-order upwind with a feedback bias and zero-flux walls."""
    r = eight_devices[f"vlasov_{boundary}"]
    assert r["f_devices"] == DEVICES
    assert r["steps"][0] == r["steps"][1]
    assert r["l1_change"] > 0.1  # mass crosses the block boundaries, so the halo matters
    assert r["f_difference"] < ROUND_OFF
    assert r["outflow_difference"] < ROUND_OFF
    if boundary == "outflow":
        assert max(r["outflow"]) > 1e-3  # mass leaves through the walls and is accounted for
    else:
        assert r["outflow"] == [0.0, 0.0, 0.0, 0.0]


def test_gradient_through_the_sharded_solve_matches_finite_differences(eight_devices):
    g = eight_devices["vlasov_gradient"]
    assert abs(g["derivative"]) > 1e-3
    assert abs(g["derivative"] - g["central_difference"]) < 1e-7 * abs(g["derivative"])
    assert abs(g["discrete_adjoint"] - g["derivative"]) < 1e-12 * abs(g["derivative"])
    assert "custom_vjp" in g["discrete_forward_mode_error"]


def test_sharded_vlasov_moves_only_halo_rows_and_sums_of_a_few_values(eight_devices):
    """No density is gathered or all-reduced (the checks of the saved states once pinned them to one device
    for their callback): the collectives are the halo exchange (2 rows of ny = 10 values) and sums of at most
    the four wall masses."""
    sizes = eight_devices["vlasov_collective_sizes"]
    assert sizes["all-gather"] == [] and sizes["all-to-all"] == [] and sizes["reduce-scatter"] == []
    assert sizes["collective-permute"] and max(sizes["collective-permute"]) <= 2 * 10
    assert sizes["all-reduce"] and max(sizes["all-reduce"]) <= 4


def test_explicit_mesh_axes_give_the_single_device_results(eight_devices):
    """Under ``jax.set_mesh`` with Explicit axes (``jax.make_mesh``'s default), where shardings are part of
    the types: the forward pass keeps the sharding; the discrete gradient (one group, 4 groups, with noise),
    fit, the sharded 2-D solve and its discrete gradient (whose time loop sees scalars typed with and
    without the mesh) equal their single-device results."""
    r = eight_devices["explicit_mesh"]
    assert r["forward_keeps_sharding"]
    assert set(r["relative_difference"]) == {
        "forward_512", "forward_262144", "discrete_gradient_512", "discrete_gradient_262144",
        "noisy_discrete_gradient", "fit", "vlasov_zero_flux", "vlasov_periodic", "vlasov_discrete_gradient",
    }
    for name, difference in r["relative_difference"].items():
        assert difference < ROUND_OFF, (name, difference)


def test_a_failed_runtime_check_is_raised_and_f0_may_sit_on_any_device(eight_devices):
    message = eight_devices["overflow_error"]
    assert message.startswith("the solution became non-finite (NaN or inf) before t = 0.5:")
    assert eight_devices["committed_f0"] < ROUND_OFF


def test_sharded_vlasov_rejects_rows_not_divisible_by_the_devices(eight_devices):
    message = eight_devices["indivisible_error"]
    assert message is not None and "nx=20" in message and "8 devices" in message


# ---- one device: in this process -------------------------------------------------------------------------
def test_one_device_mesh_wraps_the_periodic_halo_onto_itself():
    grid = mfj.Grid2D((-2.0, 2.0, 10), (-1.0, 1.0, 6))
    f0 = grid.project(lambda x, y: 1.0 + jnp.sin(np.pi * x / 2) * jnp.cos(np.pi * y))
    field = mfj.NeuralField(jnp.array([[0.0, 1.0], [-1.0, 0.0]]), jnp.array([0.8, 0.1]), "tanh", T=0.7)
    ref = mfj.solve_vlasov(field, f0, grid, boundary="periodic")
    sol = sharded_vlasov_2d(field, f0, grid, particle_mesh(jax.devices()[:1]), boundary="periodic")
    assert float(jnp.max(jnp.abs(ref.f[-1] - f0))) > 0.1
    np.testing.assert_allclose(sol.f, ref.f, rtol=0, atol=ROUND_OFF * float(jnp.max(ref.f)))
    np.testing.assert_allclose(float(sol.mass()[-1]), float(grid.integrate(f0)), rtol=1e-13)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"scheme": "cweno3"}, ValueError, "scheme='cweno3'"),
        ({"axis_name": "rows"}, ValueError, "axis_name='rows'"),
        ({"mesh": "cpu"}, TypeError, "jax.sharding.Mesh"),
        ({"grid": mfj.Grid1D(0.0, 1.0, 8), "field": mfj.NeuralField(1.0, 0.0)}, TypeError, "Grid2D"),
        ({"boundary": "reflect"}, ValueError, "boundary='reflect'"),
        ({"cfl": 0.9}, ValueError, "cfl=0.9"),
        ({"adjoint": "forward"}, ValueError, "adjoint='forward' is not available split over devices"),
    ],
)
def test_sharded_vlasov_rejects_bad_arguments(kwargs, error, words):
    grid = mfj.Grid2D((-1.0, 1.0, 4), (-1.0, 1.0, 4))
    args = {"field": mfj.NeuralField(jnp.eye(2), jnp.zeros(2)), "f0": jnp.ones((4, 4)), "grid": grid,
            "mesh": particle_mesh(jax.devices()[:1])}
    with pytest.raises(error, match=words.replace("(", r"\(").replace(".", r"\.")):
        sharded_vlasov_2d(**{**args, **kwargs})


def test_running_out_of_steps_split_over_devices():
    """A concrete field's count is checked before the solve; under jax.jit, where the count is not known and
    the runtime check is not compiled into the split program, the states of the loop that ran out are NaN."""
    grid = mfj.Grid2D((-2.0, 2.0, 8), (-2.0, 2.0, 4))
    field = mfj.NeuralField(-jnp.eye(2), jnp.zeros(2), activation="tanh", T=0.5)
    mesh = particle_mesh(jax.devices()[:1])
    with pytest.raises(ValueError, match="max_steps=2 is too small"):
        sharded_vlasov_2d(field, jnp.ones(grid.shape), grid, mesh, max_steps=2)
    f = jax.jit(lambda fl: sharded_vlasov_2d(fl, jnp.ones(grid.shape), grid, mesh, max_steps=2).f)(field)
    assert np.all(np.isnan(np.asarray(f[1:]))) and np.all(np.asarray(f[0]) == 1.0)


def test_shard_particles_rejects_a_count_the_devices_do_not_divide():
    mesh = particle_mesh(jax.devices()[:1])
    x = shard_particles(jnp.zeros((6, 2)), mesh)
    assert x.shape == (6, 2)
    with pytest.raises(ValueError, match="leading particle axis"):
        shard_particles(jnp.zeros(()), mesh)
