"""fit(): recovery of closed-form parameters through the ResNet, exact gradient-descent iterates,
bit-for-bit checkpoint/resume, non-finite stops, L-BFGS, progress output and input checks (float64)."""

import json
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import meanfield_jax as mfj
from meanfield_jax import closed_forms as cf
from meanfield_jax.training import FitResult, NonFiniteError, fit

# ---- a convex quadratic L(x) = ½ xᵀ A x − cᵀ x with minimiser A⁻¹ c -----------------------------------
A = jnp.array([[3.0, 0.5, 0.0], [0.5, 2.0, -0.3], [0.0, -0.3, 1.0]])
C = jnp.array([1.0, -2.0, 0.5])
X_STAR = jnp.linalg.solve(A, C)
LAMBDA_MAX = float(jnp.max(jnp.linalg.eigvalsh(A)))
SGD = optax.sgd(1.0 / LAMBDA_MAX)


def quadratic(params):
    x = params["x"]
    return 0.5 * x @ A @ x - C @ x


X0 = {"x": jnp.array([2.0, 1.0, -1.0])}


def test_gradient_descent_iterates_and_history_are_exact_and_monotone():
    steps = 40
    seen = []
    result = fit(X0, quadratic, SGD, steps=steps, progress=False,
                 callback=lambda k, p, loss: seen.append((k, p["x"], loss)))
    assert isinstance(result, FitResult) and result.steps == steps
    # x_k − x* = (I − A/λmax)^k (x_0 − x*)
    M = jnp.eye(3) - A / LAMBDA_MAX
    expected = X_STAR + jnp.linalg.matrix_power(M, steps) @ (X0["x"] - X_STAR)
    np.testing.assert_allclose(result.params["x"], expected, rtol=1e-12, atol=1e-14)
    # history[k] = L(x_k) before step k's update; the callback sees that same pair
    assert result.history.shape == (steps,) and result.history.dtype == np.float64
    assert [k for k, _, _ in seen] == list(range(steps))
    for k in (0, 7, steps - 1):
        xk = X_STAR + jnp.linalg.matrix_power(M, k) @ (X0["x"] - X_STAR)
        np.testing.assert_allclose(result.history[k], float(quadratic({"x": xk})), rtol=1e-12)
        np.testing.assert_allclose(seen[k][1], xk, rtol=1e-12, atol=1e-14)
        assert seen[k][2] == result.history[k]
    # gradient descent with step 1/λmax on a convex quadratic decreases the loss strictly
    assert np.all(np.diff(result.history) < 0)


@pytest.mark.parametrize("optimizer", ["lbfgs", optax.lbfgs(memory_size=5)], ids=["name", "instance"])
def test_lbfgs_converges_on_a_quadratic(optimizer):
    result = fit(X0, quadratic, optimizer, steps=12, progress=False)
    np.testing.assert_allclose(result.params["x"], X_STAR, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(result.history) <= 1e-14)  # the zoom line search decreases (up to rounding)


# ---- recovering the closed-form line map through the ResNet ------------------------------------------
L, T, SLOPE, INTERCEPT = 10, 1.0, 0.5, 1.0
TEMPLATE = mfj.NeuralField.constant(0.0, 0.0, num_layers=L, T=T, activation="identity")
DATA = jax.random.uniform(jax.random.key(0), (64,), jnp.float64)


def constant_field(w, b):
    """TEMPLATE with every layer set to (w, b), as NeuralField.constant(w, b, L, T) but for traced w, b."""
    W = jnp.broadcast_to(w, TEMPLATE.W.shape)
    return eqx.tree_at(lambda f: (f.W, f.b), TEMPLATE, (W, jnp.broadcast_to(b, TEMPLATE.b.shape)))


def regression_loss(params):
    prediction = mfj.resnet_forward(constant_field(params["w"], params["b"]), DATA)
    return jnp.mean((prediction - (SLOPE * DATA + INTERCEPT)) ** 2)


W_B0 = {"w": jnp.asarray(0.0), "b": jnp.asarray(0.0)}
ADAM = optax.adam(0.1)


def test_fit_recovers_the_discrete_line_map_parameters_through_the_resnet():
    result = fit(W_B0, regression_loss, ADAM, steps=300, progress=False)
    w_exact, b_exact = cf.line_map_parameters_discrete(SLOPE, INTERCEPT, T, L)
    np.testing.assert_allclose([result.params["w"], result.params["b"]], [w_exact, b_exact], atol=1e-2)
    # the continuous formula is not the answer for L = 10 layers: ln(0.5) is 0.024 away
    w_continuous, _ = cf.line_map_parameters(SLOPE, INTERCEPT, T)
    assert abs(float(result.params["w"] - w_exact)) < 0.5 * abs(float(w_continuous - w_exact))
    assert result.history[-1] < 1e-4 * result.history[0]


def test_fit_accepts_a_neural_field_and_keeps_its_static_fields_and_integer_leaves():
    field = mfj.NeuralField.constant(0.1, 0.0, num_layers=4, T=1.0, activation="tanh")
    params = {"field": field, "index": jnp.arange(3)}

    def loss(p):
        return jnp.mean((mfj.resnet_forward(p["field"], DATA) - 0.5 * DATA) ** 2) + 0.0 * jnp.sum(p["index"])

    result = fit(params, loss, optax.adam(0.05), steps=30, progress=False)
    assert isinstance(result.params["field"], mfj.NeuralField)
    assert result.params["field"].activation == "tanh" and result.params["field"].T == 1.0
    assert result.params["field"].W.shape == (4, 1, 1)
    np.testing.assert_array_equal(result.params["index"], jnp.arange(3))
    assert result.history[-1] < 0.5 * result.history[0]


# ---- checkpoints ---------------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def interrupt_at(step):
    def callback(k, params, loss):
        if k == step:
            raise Interrupt

    return callback


def assert_bitwise_equal(a: FitResult, b: FitResult):
    np.testing.assert_array_equal(a.history, b.history)
    for x, y in zip(jax.tree_util.tree_leaves((a.params, a.opt_state)),
                    jax.tree_util.tree_leaves((b.params, b.opt_state))):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_resume_after_an_interruption_is_bitwise_identical_to_an_uninterrupted_run(tmp_path):
    path = tmp_path / "run" / "state.eqx"
    reference = fit(W_B0, regression_loss, ADAM, steps=12, progress=False)
    with pytest.raises(Interrupt):
        fit(W_B0, regression_loss, ADAM, steps=12, progress=False, checkpoint=path, checkpoint_every=4,
            callback=interrupt_at(9))
    meta = json.loads((tmp_path / "run" / "state.eqx.json").read_text())
    assert meta["step"] == 8 and meta["history"] == reference.history[:8].tolist()
    resumed_steps = []
    resumed = fit(W_B0, regression_loss, ADAM, steps=12, progress=False, checkpoint=path, checkpoint_every=4,
                  resume=True, callback=lambda k, p, loss: resumed_steps.append(k))
    assert resumed_steps == [8, 9, 10, 11]
    assert_bitwise_equal(resumed, reference)
    # resuming a finished run does no step; extending it continues bit for bit
    again_steps = []
    again = fit(W_B0, regression_loss, ADAM, steps=12, progress=False, checkpoint=path, resume=True,
                callback=lambda k, p, loss: again_steps.append(k))
    assert again_steps == []
    assert_bitwise_equal(again, reference)
    longer = fit(W_B0, regression_loss, ADAM, steps=16, progress=False, checkpoint=path, resume=True)
    assert_bitwise_equal(longer, fit(W_B0, regression_loss, ADAM, steps=16, progress=False))
    assert not list((tmp_path / "run").glob("*.tmp"))  # atomic writes leave no temporary files


def test_resume_without_a_checkpoint_on_disk_starts_from_params(tmp_path):
    result = fit(X0, quadratic, SGD, steps=5, progress=False, checkpoint=tmp_path / "new.eqx", resume=True)
    assert_bitwise_equal(result, fit(X0, quadratic, SGD, steps=5, progress=False))
    assert json.loads((tmp_path / "new.eqx.json").read_text())["step"] == 5


def test_an_existing_checkpoint_is_never_replaced_and_a_bad_path_is_refused_before_any_step(tmp_path):
    """Without resume, fit wrote over an earlier run's checkpoint (steps=0 put step 0 in place of step 50);
    a checkpoint path that was a folder failed only at the first save, after the steps before it."""
    path = tmp_path / "state.eqx"
    fit(X0, quadratic, SGD, steps=3, progress=False, checkpoint=path)
    saved = path.read_bytes(), (tmp_path / "state.eqx.json").read_bytes()
    steps_taken = []
    for bad, message in [
        (path, "already exists: pass resume=True"),
        (tmp_path, "is a folder; allowed: a file path"),
        (path / "inner.eqx", "its folder cannot be created"),
    ]:
        with pytest.raises(ValueError, match=message):
            fit(X0, quadratic, SGD, steps=0, progress=False, checkpoint=bad,
                callback=lambda k, p, loss: steps_taken.append(k))
    assert steps_taken == []
    assert (path.read_bytes(), (tmp_path / "state.eqx.json").read_bytes()) == saved
    (tmp_path / "lone.eqx.json").write_text("{}")  # a sidecar alone is an earlier run's too
    with pytest.raises(ValueError, match="already exists"):
        fit(X0, quadratic, SGD, steps=1, progress=False, checkpoint=tmp_path / "lone.eqx")


def test_resume_rejects_a_mismatched_or_corrupted_checkpoint(tmp_path):
    path = tmp_path / "state.eqx"
    fit(X0, quadratic, SGD, steps=3, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="different parameters"):
        fit({"x": jnp.zeros(4)}, lambda p: jnp.sum(p["x"] ** 2), SGD, steps=5, progress=False,
            checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="beyond the requested steps=2"):
        fit(X0, quadratic, SGD, steps=2, progress=False, checkpoint=path, resume=True)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ValueError, match="SHA-256"):
        fit(X0, quadratic, SGD, steps=5, progress=False, checkpoint=path, resume=True)


# ---- non-finite loss or gradient -------------------------------------------------------------------
# SGD with rate 0.1 on (p − 10)² from p = 0 gives p_k = 10 (1 − 0.8^k): p_3 = 4.88 < 5 < p_4 = 5.904.
# The extra term 0·sqrt(5 − p) is 0 with zero gradient for p < 5; for p > 5 it makes the loss NaN,
# and 0·sqrt(max(5 − p, 0)) keeps the loss finite but makes the gradient 0·∞ = NaN.
def nan_loss(params):
    p = params["p"]
    return (p - 10.0) ** 2 + 0.0 * jnp.sqrt(5.0 - p)


def nan_gradient(params):
    p = params["p"]
    return (p - 10.0) ** 2 + 0.0 * jnp.sqrt(jnp.maximum(5.0 - p, 0.0))


@pytest.mark.parametrize(("loss", "quantity"), [(nan_loss, "loss"), (nan_gradient, "gradient")])
def test_non_finite_stop_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, loss, quantity):
    path = tmp_path / "state.eqx"
    with pytest.raises(FloatingPointError, match=f"non-finite {quantity} at step 4") as info:
        fit({"p": jnp.asarray(0.0)}, loss, optax.sgd(0.1), steps=10, progress=False, checkpoint=path,
            checkpoint_every=3)
    assert isinstance(info.value, NonFiniteError) and info.value.step == 4 and info.value.quantity == quantity
    meta = json.loads((tmp_path / "state.eqx.json").read_text())
    assert meta["step"] == 3
    np.testing.assert_allclose(meta["history"], [100.0 * 0.64**k for k in range(3)], rtol=1e-12)
    template = ({"p": jnp.asarray(0.0)}, optax.sgd(0.1).init({"p": jnp.asarray(0.0)}))
    (params, _) = eqx.tree_deserialise_leaves(path, template)
    np.testing.assert_allclose(float(params["p"]), 10.0 * (1 - 0.8**3), rtol=1e-12)


def test_an_overflowing_update_stops_before_it_is_applied():
    # loss and gradient at p = 10 are finite, but the step −1e307 · 20 overflows to −inf
    with pytest.raises(NonFiniteError, match="non-finite update at step 0"):
        fit({"p": jnp.asarray(10.0)}, lambda q: q["p"] ** 2, optax.sgd(1e307), steps=3, progress=False)


# ---- progress output ---------------------------------------------------------------------------------
def test_progress_false_prints_nothing(capsys):
    fit(X0, quadratic, SGD, steps=20, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_without_tqdm_prints_a_line_every_tenth(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    result = fit(X0, quadratic, SGD, steps=20, progress=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[2] for line in lines] == [f"{k}/20" for k in range(2, 21, 2)]
    assert float(lines[-1].split()[-1]) == pytest.approx(result.history[-1], rel=1e-6)


def test_progress_with_tqdm_draws_a_bar(capsys):
    pytest.importorskip("tqdm")
    fit(X0, quadratic, SGD, steps=20, progress=True)
    assert "20/20" in capsys.readouterr().err


# ---- input checks ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": -1}, ValueError, "steps must be a non-negative integer, got steps=-1"),
        ({"steps": 2.5}, ValueError, "steps must be a non-negative integer"),
        ({"steps": True}, ValueError, "steps must be a non-negative integer"),
        ({"checkpoint_every": 0, "checkpoint": "x.eqx"}, ValueError, "checkpoint_every must be a positive"),
        ({"checkpoint_every": 5}, ValueError, "checkpoint_every=5 needs a checkpoint path"),
        ({"resume": True}, ValueError, "resume=True needs a checkpoint"),
        ({"optimizer": "sgd"}, ValueError, r"one of \('lbfgs',\), got optimizer='sgd'"),
        ({"optimizer": 3}, TypeError, "optimizer must be an optax GradientTransformation"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"progress": "yes"}, TypeError, "progress must be True or False"),
        ({"checkpoint": 3}, TypeError, "checkpoint must be a file path"),
    ],
)
def test_bad_arguments_are_rejected_with_the_argument_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(X0, quadratic, **{"optimizer": SGD, "steps": 3, "progress": False, **kwargs})


def test_bad_params_or_loss_are_rejected_before_compiling():
    with pytest.raises(ValueError, match="no floating-point arrays"):
        fit({"x": 1.0, "n": jnp.arange(2)}, quadratic, SGD, steps=1, progress=False)
    with pytest.raises(TypeError, match="loss_fn must return a real scalar"):
        fit(X0, lambda p: p["x"], SGD, steps=1, progress=False)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        fit(X0, "quadratic", SGD, steps=1, progress=False)
