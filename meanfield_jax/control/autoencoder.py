"""The AutoencODE: a width-varying residual network as one controlled ODE in R^d (paper (b), MODEL.md §10).

The state lives in R^d, d = max(widths). The depth [0, T] is split into one stage per entry of ``widths``,
each of ``layers_per_stage`` Euler layers of step Δt = T / L, L = len(widths) · layers_per_stage. Stage s
uses the active set I_s = {1, …, widths[s]}; with P_s the coordinate projection on I_s, layer l of stage s is

    x ← P_s x                                   (enter_layer: components outside I_s are set to 0)
    x ← x + Δt P_s σ(P_s W_l P_s x + P_s b_l)   (layer_velocity: rows and columns outside I_s masked)

so a narrower stage drops components to zero, they stay zero through the bottleneck (the velocity has no
component outside I_s), and a wider stage restarts them from 0: information passes only through the
bottleneck. The masks act inside ``layer_velocity``, so the stored W, b may hold anything outside I_s and the
derivative of the flow with respect to those entries is exactly zero; the constructor stores them as zeros,
so the Tikhonov term (taken over the stored arrays) and its gradient do not see them either.

Training minimises the reconstruction cost J = (1/n) Σ_i |x_{L,i} − x_{0,i}|² + reg Δt Σ_l |θ_l|², either by
a first-order optimiser on J (``method="gradient"``) or by the PMP sweep of :mod:`.pmp` with y = x_0
(``method="pmp"``).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from ..activations import Activation, get_activation
from ..arguments import whole_number
from ..field import AbstractField
from ..training import fit
from .pmp import _check_problem, cost, solve_pmp

__all__ = ["AutoencODE", "AutoencoderResult", "train_autoencoder"]


def _check_widths(widths) -> tuple[int, ...]:
    try:
        widths = tuple(widths)
    except TypeError as exc:
        raise TypeError(f"widths must be a sequence of positive integers, got {widths!r}") from exc
    if not widths or any(isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty sequence of positive integers, got widths={widths!r}")
    return tuple(int(w) for w in widths)


class AutoencODE(AbstractField):
    """Width-varying ResNet F_l(x) = P_s σ(P_s W_l P_s x + P_s b_l) on stages of widths ``widths``.

    Args:
        widths: width of each stage, e.g. (3, 2, 1, 2, 3); the state dimension is d = max(widths).
        layers_per_stage: Euler layers per stage.
        T: final time; Δt = T / (len(widths) · layers_per_stage).
        activation: one of ``identity``, ``tanh``, ``relu``, ``sigmoid``.
        key: PRNG key for the initial parameters, W_l and b_l with i.i.d. N(0, init_scale²) active entries.
        init_scale: standard deviation of the initial parameters.
        feedback: optional β; the (masked) bias becomes b_l + β · mean of the current states.
    """

    W: Array
    b: Array
    widths: tuple[int, ...] = eqx.field(static=True)
    layers_per_stage: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    T: float = eqx.field(static=True)
    feedback: float | None = eqx.field(static=True)

    def __init__(
        self,
        widths: tuple[int, ...] = (3, 2, 1, 2, 3),
        layers_per_stage: int = 5,
        T: float = 1.0,
        activation: str = "tanh",
        *,
        key: PRNGKeyArray,
        init_scale: float = 0.1,
        feedback: float | None = None,
    ):
        self.widths = _check_widths(widths)
        self.layers_per_stage = whole_number(layers_per_stage, "layers_per_stage")
        get_activation(activation)
        T = float(T)
        if not (math.isfinite(T) and T > 0):
            raise ValueError(f"T must be a finite positive final time, got T={T}")
        init_scale = float(init_scale)
        if not (math.isfinite(init_scale) and init_scale >= 0):
            raise ValueError(f"init_scale must be a finite number >= 0, got init_scale={init_scale}")
        if feedback is not None:
            feedback = float(feedback)
            if not math.isfinite(feedback):
                raise ValueError(f"feedback must be a finite number or None, got feedback={feedback}")
        self.activation = activation
        self.T = T
        self.feedback = feedback
        L, d = len(self.widths) * self.layers_per_stage, max(self.widths)
        key_W, key_b = jax.random.split(key)
        dtype = jnp.result_type(float)
        masks = self._stage_masks()[np.arange(L) // self.layers_per_stage]
        W_masks = masks[:, :, None] * masks[:, None, :]
        self.W = init_scale * jax.random.normal(key_W, (L, d, d), dtype) * W_masks
        self.b = init_scale * jax.random.normal(key_b, (L, d), dtype) * masks

    def _stage_masks(self) -> np.ndarray:
        """1 on the active set I_s of each stage, shape (number of stages, d)."""
        return (np.arange(max(self.widths))[None, :] < np.asarray(self.widths)[:, None]).astype(float)

    @property
    def d(self) -> int:
        """Dimension of the state, the largest width."""
        return max(self.widths)

    @property
    def num_layers(self) -> int:
        """Number of layers L = len(widths) · layers_per_stage."""
        return len(self.widths) * self.layers_per_stage

    @property
    def sigma(self) -> Activation:
        """The activation (σ, σ')."""
        return get_activation(self.activation)

    def active(self, l: ArrayLike) -> Array:
        """The mask of the active set of layer l: 1 on the first widths[stage(l)] components, shape (d,)."""
        stage = jnp.asarray(l) // self.layers_per_stage
        return jnp.asarray(self._stage_masks(), self.W.dtype)[stage]

    def enter_layer(self, l: ArrayLike, x: Array) -> Array:
        """P_s x: the components outside the active set of layer l are set to zero."""
        return x * jnp.broadcast_to(self.active(l), x.shape)

    def layer_velocity(self, l: ArrayLike, x: ArrayLike, mean: ArrayLike | None = None) -> Array:
        """P_s σ(P_s W_l P_s x + P_s b_l [+ β P_s mean]) for points x of shape (..., d)."""
        m = self.active(l)
        W = self.W[l] * m[:, None] * m[None, :]
        bias = self.b[l]
        if self.feedback is not None:
            if mean is None:
                raise ValueError("this field has a feedback bias: pass the data's current mean as `mean`")
            bias = bias + self.feedback * jnp.asarray(mean, bias.dtype)
        z = jnp.einsum("ij,...j->...i", W, jnp.asarray(x))
        return self.sigma.fn(z + jnp.broadcast_to(bias * m, z.shape)) * jnp.broadcast_to(m, z.shape)


class AutoencoderResult(eqx.Module):
    """Outcome of :func:`train_autoencoder`: the trained ``model`` and ``history``, the cost J after
    k steps, k = 0, …, steps."""

    model: AutoencODE
    history: np.ndarray


def train_autoencoder(
    model: AutoencODE,
    x: ArrayLike,
    reg: float = 1e-4,
    steps: int = 2000,
    method: str = "gradient",
    *,
    optimizer: optax.GradientTransformation | None = None,
    progress: bool = False,
    **pmp_options,
) -> AutoencoderResult:
    """Fit an AutoencODE to reconstruct x: minimise (1/n) Σ_i |x_{L,i} − x_{0,i}|² + reg Δt Σ_l |θ_l|².

    Args:
        model: the initial :class:`AutoencODE`.
        x: data of shape (n, d), d = max(model.widths).
        reg: Tikhonov weight ≥ 0.
        steps: optimiser steps (``gradient``) or PMP sweeps (``pmp``).
        method: ``"gradient"`` (:func:`~meanfield_jax.training.fit` of J with ``optimizer``, by default Adam
            with learning rate 10⁻²) or ``"pmp"`` (:func:`~meanfield_jax.control.solve_pmp` with targets
            y = x; ``pmp_options`` go to it).
        optimizer: an optax optimizer for ``method="gradient"``.
        progress: show the progress bar of ``fit`` (``method="gradient"``).
    """
    if not isinstance(model, AutoencODE):
        raise TypeError(f"model must be an AutoencODE, got {type(model).__name__}")
    x, _, reg = _check_problem(model, x, x, reg)
    steps = whole_number(steps, "steps")
    if method == "pmp":
        if optimizer is not None:
            raise ValueError("optimizer is used by method='gradient' only; method='pmp' takes PMP options")
        res = solve_pmp(model, x, x, reg=reg, iterations=steps, method="particles", **pmp_options)
        return AutoencoderResult(model=res.field, history=res.history)
    if method != "gradient":
        raise ValueError(f"method must be 'gradient' or 'pmp', got method={method!r}")
    if pmp_options:
        raise TypeError(f"unexpected options for method='gradient': {sorted(pmp_options)}")
    fitted = fit(model, lambda m: cost(m, x, x, reg), optimizer=optimizer, steps=steps, progress=progress)
    history = np.append(fitted.history, float(cost(fitted.params, x, x, reg)))
    return AutoencoderResult(model=fitted.params, history=history)
