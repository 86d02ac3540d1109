"""One module per experiment kind; ``EXPERIMENTS`` maps the config's ``experiment`` key to its function.

Each function takes the validated :class:`~meanfield_jax.config.ExperimentConfig` and a logger and returns
an :class:`~meanfield_jax.experiments.base.ExperimentResult`.
"""

from .base import Check, ExperimentResult
from .moments import run_moments

EXPERIMENTS = {
    "moments": run_moments,
}

__all__ = ["EXPERIMENTS", "Check", "ExperimentResult"]
