"""Mean-field optimal control of residual networks: the PMP forward–backward sweep and the AutoencODE."""

from .autoencoder import AutoencODE, AutoencoderResult, train_autoencoder
from .data import bimodal_data
from .kinetic import transport_value_function
from .pmp import (
    PMPResult,
    cost,
    costate,
    hamiltonian,
    hamiltonian_gradient,
    hessian_min_eigenvalue,
    solve_pmp,
    tikhonov,
)

__all__ = [
    "AutoencODE",
    "AutoencoderResult",
    "PMPResult",
    "bimodal_data",
    "cost",
    "costate",
    "hamiltonian",
    "hamiltonian_gradient",
    "hessian_min_eigenvalue",
    "solve_pmp",
    "tikhonov",
    "train_autoencoder",
    "transport_value_function",
]
