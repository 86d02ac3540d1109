"""meanfield_jax: residual networks as dynamical systems on their data, in JAX.

Particles (the ResNet), the kinetic (Vlasov / Fokker–Planck) equation of their density, and the moment
equations, all jit-compiled and differentiable.
"""

from importlib.metadata import PackageNotFoundError, version

from . import closed_forms, control, losses, sharding
from .activations import ACTIVATIONS, get_activation
from .allocator import keep_freed_memory
from .analysis import Sensitivity, SteadyState, sensitivity, sensitivity_equations, steady_state
from .field import AbstractField, NeuralField
from .fokker_planck import fokker_planck_steady_state, solve_fokker_planck
from .grid import Grid1D, Grid2D
from .moments import moment_ode, moments, particle_moments
from .particles import resnet_forward
from .solution import KineticSolution
from .streaming import load_streamed, solve_streamed
from .training import FitResult, NonFiniteError, fit
from .transport import solve_vlasov

try:
    __version__ = version("meanfield-jax")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = [
    "ACTIVATIONS",
    "AbstractField",
    "FitResult",
    "Grid1D",
    "Grid2D",
    "KineticSolution",
    "NeuralField",
    "NonFiniteError",
    "Sensitivity",
    "SteadyState",
    "__version__",
    "closed_forms",
    "control",
    "fit",
    "fokker_planck_steady_state",
    "get_activation",
    "keep_freed_memory",
    "load_streamed",
    "losses",
    "moment_ode",
    "moments",
    "particle_moments",
    "resnet_forward",
    "sensitivity",
    "sensitivity_equations",
    "sharding",
    "solve_fokker_planck",
    "solve_streamed",
    "solve_vlasov",
    "steady_state",
]
