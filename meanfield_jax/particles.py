"""The ResNet on particles: explicit Euler (deterministic) and Euler–Maruyama (stochastic ResNet).

Deterministic ResNet, L layers of step Δt = T / L, for every sample m:

    x_{l+1} = x_l + Δt σ(W_l x_l + b_l),   l = 0, …, L − 1,

the explicit-Euler scheme of dx/dt = σ(W(t) x + b(t)) (first order in Δt on [0, T]).

Stochastic ResNet (Euler–Maruyama of the Itô SDE dX = σ(W X + b) dt + sqrt(2 K(X)) dB):

    x_{l+1} = x_l + Δt σ(W_l x_l + b_l) + sqrt(2 K(x_l) Δt) ξ_l,   ξ_l ~ N(0, I) i.i.d.,

whose density solves the Fokker–Planck equation ∂_t f + ∇·(σ f) = Δ(K f). With a feedback field the
bias of layer l also gets β times the particles' empirical mean at that layer.

The samples do not interact (except through the feedback mean), so the empirical measure of the
outputs is an exact weak solution of the continuity equation pushed through the discrete map.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .field import AbstractField

__all__ = ["resnet_forward"]

Diffusion = float | Callable[[Array], Array]


def _check_diffusion(diffusion, key) -> None:
    if diffusion is None:
        return
    if key is None:
        raise ValueError("diffusion was given but key is None: the stochastic ResNet needs a PRNG `key`")
    if callable(diffusion):
        return
    try:
        K = float(diffusion)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"diffusion must be a non-negative number or a callable K(x), got {type(diffusion).__name__}"
        ) from exc
    if not (K >= 0 and jnp.isfinite(K)):
        raise ValueError(f"diffusion must be a finite number >= 0, got diffusion={K}")


def _diffusion_values(diffusion: Diffusion, x: Array) -> Array:
    """K at the particles, shaped (n, 1) so that it broadcasts over the d components."""
    if callable(diffusion):
        K = jnp.asarray(diffusion(x))
        if K.shape == x.shape:
            return K
        return jnp.reshape(K, (x.shape[0], 1))
    return jnp.asarray(diffusion, x.dtype)


def euler_step(field: AbstractField, l: Array, x: Array) -> Array:
    """One ResNet layer x + Δt σ(W_l x + b_l) for x of shape (n, d) (after the field's ``enter_layer``)."""
    x = field.enter_layer(l, x)
    mean = jnp.mean(x, axis=0) if field.feedback is not None else None
    return x + field.dt * field.layer_velocity(l, x, mean)


def resnet_forward(
    field: AbstractField,
    x0: ArrayLike,
    save_every: int | None = None,
    diffusion: Diffusion | None = None,
    key: PRNGKeyArray | None = None,
) -> Array:
    """Push samples through the L layers of ``field``.

    Args:
        field: the :class:`NeuralField` (W, b per layer, activation, T), or any AbstractField.
        x0: samples of shape (n, d); shape (n,) is accepted when d = 1 and the result then has no
            trailing axis either.
        save_every: if given (k), return the states after layers 0, k, 2k, …, L, shape (L//k + 1, n, d);
            L must be a multiple of k.
        diffusion: K ≥ 0 (a number) or a callable x ↦ K(x) for the stochastic ResNet.
        key: PRNG key for the noise (required with ``diffusion``). Layer l uses ``fold_in(key, l)``,
            so the noise of a layer does not depend on the depth.

    Returns:
        x_L of shape (n, d), or the saved trajectory.
    """
    if not isinstance(field, AbstractField):
        raise TypeError(f"field must be a NeuralField (or another AbstractField), got {type(field).__name__}")
    x0 = jnp.asarray(x0)
    squeeze = False
    if x0.ndim == 1 and field.d == 1:
        x0, squeeze = x0[:, None], True
    if x0.ndim != 2 or x0.shape[1] != field.d:
        raise ValueError(f"x0 must have shape (n, d) with d = {field.d} (the field's dimension), "
                         f"got shape {tuple(x0.shape)}")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(field.W.dtype)
    _check_diffusion(diffusion, key)
    L = field.num_layers
    if save_every is not None:
        if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 1:
            raise ValueError(f"save_every must be a positive integer, got save_every={save_every!r}")
        if L % save_every:
            raise ValueError(
                f"save_every={save_every} must divide the number of layers L={L} so that x_L is saved"
            )

    def layer(x: Array, l: Array) -> tuple[Array, None]:
        x_new = euler_step(field, l, x)
        if diffusion is not None:
            xi = jax.random.normal(jax.random.fold_in(key, l), x.shape, x.dtype)
            x_new = x_new + jnp.sqrt(2.0 * field.dt * _diffusion_values(diffusion, x)) * xi
        return x_new, None

    layers = jnp.arange(L)
    if save_every is None:
        out, _ = jax.lax.scan(layer, x0, layers)
    else:
        def block(x: Array, ls: Array) -> tuple[Array, Array]:
            x, _ = jax.lax.scan(layer, x, ls)
            return x, x

        _, saved = jax.lax.scan(block, x0, layers.reshape(L // save_every, save_every))
        out = jnp.concatenate([x0[None], saved], axis=0)
    return out[..., 0] if squeeze else out
