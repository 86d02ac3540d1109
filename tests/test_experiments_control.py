"""The optimal-control configs (PMP on the bimodal problem, the AutoencODE on a curve in R³) run from their
YAML files and pass their checks; their metrics obey the bounds the theory gives; bad settings exit 2."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from meanfield_jax.cli import main
from meanfield_jax.experiments.control import curve_in_r3

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {
    "pmp_bimodal": {
        "pmp_particles_cost_max_increase", "pmp_kinetic_cost_max_increase", "pmp_particles_residual_rel",
        "pmp_vs_gradient_descent_cost_rel", "pmp_kinetic_vs_particles_cost_rel",
        "hessian_positive_definite_at_pmp_solution",
    },
    "autoencoder_manifold": {
        "gradient_reconstruction_mse_over_total_variance", "gradient_dropped_components_max_abs",
        "pmp_reconstruction_mse_over_total_variance", "pmp_dropped_components_max_abs",
        "pmp_cost_max_increase",
    },
}


@pytest.fixture(scope="module", params=sorted(CHECKS))
def quick_run(request, tmp_path_factory):
    """(config name, exit code, output folder) of a quick run of the config."""
    out = tmp_path_factory.mktemp(request.param) / "run"
    code = main(["run", str(ROOT / "configs" / f"{request.param}.yaml"), "--out", str(out), "--set",
                 "quick=true", "--quiet"])
    return request.param, code, out


def test_control_configs_pass_their_checks(quick_run):
    name, code, out = quick_run
    metrics = json.loads((out / "metrics.json").read_text())
    failed = {k: v for k, v in metrics["checks"].items() if not v["passed"]}
    assert code == 0 and metrics["passed"] and not failed, failed
    assert set(metrics["checks"]) == CHECKS[name]
    assert (out / f"{name}.png").stat().st_size > 10_000
    assert (out / "config.yaml").read_text().count("quick: true") == 1


def test_metrics_obey_the_bounds_of_the_theory(quick_run):
    name, _, out = quick_run
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    if name == "pmp_bimodal":
        # the particle sweep ends at a strict local minimum θ* (∇H = 0, ∇²J ≥ λ > 0): any control near it
        # costs more, by at least the quadratic growth J(θ) − J(θ*) ≥ (λ/2)|θ − θ*|² (up to round-off in J)
        lam, J_star = metrics["hessian_min_eigenvalue"], metrics["cost_pmp_particles"]
        assert lam > 0 and J_star < 0.25 * metrics["cost_initial"]
        for cost, gap in (("cost_gradient_descent", "max_parameter_gap_pmp_vs_gradient_descent"),
                          ("cost_pmp_kinetic", "max_parameter_gap_kinetic_vs_particles")):
            excess = metrics[cost] - J_star + 1e-15 * J_star
            assert excess >= 0
            assert metrics[gap] ** 2 <= 2.0 * excess / lam
        # the kinetic costate is an O(Δx) approximation: its minimiser is near, but not at, θ*
        assert metrics["max_parameter_gap_kinetic_vs_particles"] > 1e-6
    else:
        # the inert (masked) parameters see only the Tikhonov term, an eigenvalue 2 reg Δt of the Hessian
        assert metrics["hessian_min_eigenvalue"] <= metrics["tikhonov_curvature_2_reg_dt"] * (1 + 1e-12)
        assert metrics["tikhonov_curvature_2_reg_dt"] == pytest.approx(2 * 1e-4 * 5.0 / 15)
        # a decoder that ignores the code has error mean(x₂² + x₃²), more than the total variance: the
        # reconstruction passes information through the width-1 neck
        s = jnp.linspace(0.2, 2.9, metrics["points"])
        x = np.asarray(curve_in_r3(s))
        assert np.mean(x[:, 1] ** 2 + x[:, 2] ** 2) > metrics["total_variance"]
        assert metrics["gradient_reconstruction_mse"] < 0.1 * metrics["total_variance"]
        np.testing.assert_allclose(metrics["total_variance"], np.sum(np.var(x, axis=0)), rtol=1e-12)


def test_curve_is_the_helix_arc():
    s = jnp.array([0.0, np.pi / 2, 3.0])
    np.testing.assert_allclose(curve_in_r3(s), [[1.0, 0.0, 0.0], [0.0, 1.0, np.pi / 6], [np.cos(3.0),
                                                                                         np.sin(3.0), 1.0]],
                               atol=1e-15)


@pytest.mark.parametrize(
    ("config", "override", "message"),
    [
        ("pmp_bimodal", "solver.kind=fokker_planck", "solver.kind, solver.scheme"),
        ("pmp_bimodal", "solver.scheme=muscl", "solver.cfl: got 0.9; allowed: a number in (0, 0.5]"),
        ("pmp_bimodal", "data.particles=201", "data.particles"),
        ("pmp_bimodal", "data.kind=uniform", "data.kind"),
        ("pmp_bimodal", "model.feedback=-1.0", "model.feedback"),
        ("pmp_bimodal", "model.W=[[1.0, 0.0], [0.0, 1.0]]", "model.W"),
        ("pmp_bimodal", "solver.domain=[[-7.0, 7.0], [-1.0, 1.0]]", "solver.domain"),
        ("autoencoder_manifold", "model.layers=16", "model.layers"),
        ("autoencoder_manifold", "model.W=[[1.0]]", "model.W, model.b"),
        ("autoencoder_manifold", "model.diffusion=0.5", "model.diffusion"),
        ("autoencoder_manifold", "data.high=0.1", "data.low, data.high"),
    ],
)
def test_settings_the_experiments_cannot_use_exit_2_naming_the_key(tmp_path, capsys, config, override,
                                                                   message):
    code = main(["run", str(ROOT / "configs" / f"{config}.yaml"), "--out", str(tmp_path / "x"), "--set",
                 override, "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err
