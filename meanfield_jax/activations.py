"""Activation functions σ of the residual layers x ← x + Δt σ(W x + b), with their derivatives.

Each activation is a pair (σ, σ'), both elementwise. They are looked up by name so that a
:class:`~meanfield_jax.field.NeuralField` can keep the name as a static (hashable) field.

* identity: σ(z) = z,                     σ'(z) = 1
* tanh:     σ(z) = tanh z,                σ'(z) = 1 − tanh² z
* relu:     σ(z) = max(z, 0),             σ'(z) = 1_{z>0}
* sigmoid:  σ(z) = 1 / (1 + e^{−z}),      σ'(z) = σ(z)(1 − σ(z))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]


class Activation(NamedTuple):
    """An elementwise activation σ and its derivative σ'."""

    name: str
    fn: Callable[[ArrayLike], Array]
    derivative: Callable[[ArrayLike], Array]


def _identity(z: ArrayLike) -> Array:
    return jnp.asarray(z)


def _identity_prime(z: ArrayLike) -> Array:
    return jnp.ones_like(jnp.asarray(z))


def _tanh_prime(z: ArrayLike) -> Array:
    return 1.0 - jnp.tanh(z) ** 2


def _relu_prime(z: ArrayLike) -> Array:
    z = jnp.asarray(z)
    return (z > 0).astype(z.dtype)


def _sigmoid_prime(z: ArrayLike) -> Array:
    s = jax.nn.sigmoid(z)
    return s * (1.0 - s)


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation("identity", _identity, _identity_prime),
    "tanh": Activation("tanh", jnp.tanh, _tanh_prime),
    "relu": Activation("relu", jax.nn.relu, _relu_prime),
    "sigmoid": Activation("sigmoid", jax.nn.sigmoid, _sigmoid_prime),
}


def get_activation(name: str) -> Activation:
    """Return the activation called ``name``; an unknown name is a ValueError listing the known ones."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; known activations: {known}")
    return ACTIVATIONS[name]
