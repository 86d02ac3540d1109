"""The particle figures of the paper (2, 3, 5, 8, Table 1) run from their configs and pass their checks;
the Euler error bounds behind their tolerances hold."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meanfield_jax.cli import main
from meanfield_jax.experiments.euler_error import (
    affine_flow_error_bound,
    growth_defect,
    lipschitz_error_bound,
    observed_order,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("config", "min_checks"),
    [
        ("fig2_desired_values", 10),
        ("fig3_vehicles_resnet", 4),
        ("table1_classification", 4),
        ("fig5_regression_data", 8),
        ("fig8_novel_target", 7),
    ],
)
def test_particle_figure_configs_pass_their_checks(run_config, config, min_checks):
    metrics, out = run_config(config)
    assert len(metrics["checks"]) >= min_checks
    assert (out / f"{config}.png").stat().st_size > 10_000
    assert (out / "config.yaml").read_text().count("quick: true") == 1


def test_table1_rows_are_written_with_their_classes(tmp_path):
    out = tmp_path / "table1"
    assert main(["run", str(ROOT / "configs" / "table1_classification.yaml"), "--out", str(out),
                 "--quiet"]) == 0
    rows = json.loads((out / "metrics.json").read_text())["metrics"]["table"]
    assert [r["length"] for r in rows] == [3.0, 3.5, 5.5, 7.0, 4.5, 8.0]
    assert [r["predicted"] for r in rows] == ["car", "car", "truck", "truck", "car", "truck"]
    # no vehicle changes side of x* = 5: the output tanh(x_T − 5) has the sign of length − 5
    assert all(np.sign(r["output"]) == np.sign(r["length"] - 5.0) for r in rows)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.activation=tanh", "model.activation"),
        ("target.energy=0.25", "target.energy"),
    ],
)
def test_desired_values_rejects_what_its_closed_forms_cannot_do(tmp_path, capsys, override, message):
    code = main(["run", str(ROOT / "configs" / "fig2_desired_values.yaml"), "--out", str(tmp_path / "x"),
                 "--set", override, "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(a=st.floats(-3.0, 3.0), t=st.floats(0.05, 3.0), steps=st.integers(1, 400))
def test_growth_defect_brackets_the_euler_power(a, t, steps):
    dt = t / steps
    if 1.0 + dt * a <= 0.05:
        return
    euler, exact = (1.0 + dt * a) ** steps, np.exp(a * t)
    assert euler <= exact * (1.0 + 1e-12)
    assert euler >= exact * (1.0 - growth_defect(a, t, dt)) * (1.0 - 1e-12)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(-2.0, 2.0, allow_subnormal=False), b=st.floats(-3.0, 3.0), x0=st.floats(-5.0, 5.0),
       steps=st.integers(1, 300))
def test_affine_flow_bound_holds_for_the_resnet(a, b, x0, steps):
    """(a subnormal a is left out: expm1(a t)/a, the reference, then rounds to 1 or 2 for t = 1.5)"""
    t = 1.5
    dt = t / steps
    if 1.0 + dt * a <= 0.05 or a == 0.0:
        return
    x = x0
    for _ in range(steps):  # the reference: explicit Euler written out
        x = x + dt * (a * x + b)
    exact = np.exp(a * t) * x0 + b * np.expm1(a * t) / a
    assert abs(exact - x) <= affine_flow_error_bound(a, b, x0, t, dt) + 1e-12 * (1.0 + abs(exact))


def test_lipschitz_bound_and_order_for_tanh():
    # x' = tanh(x − 5): Λ = 1, |ẍ| ≤ 2/(3√3); exact X(t) = 5 + asinh(sinh(x0 − 5) e^t)
    x0, t = np.linspace(2.0, 8.0, 13), 2.0
    errors = []
    for steps in (40, 80):
        dt, x = t / steps, x0.copy()
        for _ in range(steps):
            x = x + dt * np.tanh(x - 5.0)
        errors.append(np.max(np.abs(5.0 + np.arcsinh(np.sinh(x0 - 5.0) * np.exp(t)) - x)))
        assert errors[-1] <= lipschitz_error_bound(dt, t, 1.0, 2.0 / (3.0 * np.sqrt(3.0)))
    assert abs(observed_order(*errors) - 1.0) < 0.05


def test_bounds_reject_an_overshooting_step():
    with pytest.raises(ValueError, match="dt"):
        growth_defect(-30.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="lipschitz"):
        lipschitz_error_bound(0.1, 1.0, 0.0, 1.0)
