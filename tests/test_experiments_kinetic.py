"""The kinetic paper figures (4, 6, 7, 9, and their large variants) run at a reduced size and pass."""

import pytest


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
def test_kinetic_figure_configs_pass_their_checks(run_config, config, figure):
    metrics, out = run_config(config)
    assert len(metrics["checks"]) >= 6
    assert (out / f"{figure}.png").stat().st_size > 10_000
