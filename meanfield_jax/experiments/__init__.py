"""One module per experiment kind; ``EXPERIMENTS`` maps the config's ``experiment`` key to its function,
``FIGURES`` to the names of the figures it draws (what ``output.plots`` may ask for).

Each function takes the validated :class:`~meanfield_jax.config.ExperimentConfig` and a logger and returns
an :class:`~meanfield_jax.experiments.base.ExperimentResult`.
"""

from .base import Check, ExperimentResult
from .control import run_autoencoder, run_pmp
from .desired_values import run_desired_values
from .fokker_planck import run_fokker_planck
from .kinetic import run_regression_1d, run_regression_2d, run_vehicles_kinetic
from .moments import run_moments
from .regression import run_novel_target, run_regression_data
from .vehicles import run_classification_table, run_vehicles_resnet

EXPERIMENTS = {
    "moments": run_moments,
    "desired_values": run_desired_values,
    "vehicles_resnet": run_vehicles_resnet,
    "classification_table": run_classification_table,
    "regression_data": run_regression_data,
    "novel_target": run_novel_target,
    "vehicles_kinetic": run_vehicles_kinetic,
    "regression_1d": run_regression_1d,
    "regression_2d": run_regression_2d,
    "fokker_planck": run_fokker_planck,
    "pmp": run_pmp,
    "autoencoder": run_autoencoder,
}

FIGURES = {
    "moments": ("fig1_moments",),
    "desired_values": ("fig2_desired_values",),
    "vehicles_resnet": ("fig3_vehicles_resnet",),
    "classification_table": ("table1_classification",),
    "regression_data": ("fig5_regression_data",),
    "novel_target": ("fig8_novel_target",),
    "vehicles_kinetic": ("fig4_vehicles_kinetic",),
    "regression_1d": ("fig7_regression_1d",),
    "regression_2d": ("fig6_regression_2d",),
    "fokker_planck": ("fig9_fokker_planck",),
    "pmp": ("pmp_bimodal",),
    "autoencoder": ("autoencoder_manifold",),
}

__all__ = ["EXPERIMENTS", "FIGURES", "Check", "ExperimentResult"]
