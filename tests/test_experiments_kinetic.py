"""The kinetic paper figures (4, 6, 7, 9, and their large variants) run at a reduced size and pass."""

import json
from pathlib import Path

import pytest

from meanfield_jax.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("config", "figure"),
    [
        ("fig4_vehicles_kinetic", "fig4_vehicles_kinetic"),
        ("fig6_regression_2d", "fig6_regression_2d"),
        ("fig7_regression_1d", "fig7_regression_1d"),
        ("fig9_fokker_planck", "fig9_fokker_planck"),
        ("fig4_vehicles_kinetic_large", "fig4_vehicles_kinetic"),
        ("fig6_regression_2d_512", "fig6_regression_2d"),
        ("fig9_fokker_planck_large", "fig9_fokker_planck"),
    ],
)
def test_kinetic_figure_configs_pass_their_checks(tmp_path, config, figure):
    out = tmp_path / config
    code = main(["run", str(ROOT / "configs" / f"{config}.yaml"), "--out", str(out), "--set", "quick=true",
                 "--quiet"])
    metrics = json.loads((out / "metrics.json").read_text())
    failed = {k: v for k, v in metrics["checks"].items() if not v["passed"]}
    assert code == 0 and not failed, failed
    assert len(metrics["checks"]) >= 6
    assert (out / f"{figure}.png").stat().st_size > 10_000
