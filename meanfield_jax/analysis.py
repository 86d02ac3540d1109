"""Steady states, their stability, and sensitivities with respect to the weights and biases.

Rest points (MODEL.md §5.1). For an activation with σ(z) = 0 ⇔ z = 0 (identity, tanh) the field
F(x) = σ(W x + b) of one layer vanishes exactly at

    x* = −W⁻¹ b,

and the stationary solutions of the continuity equation are the Dirac masses m0 δ_{x*}. Linearising,
F(x* + y) = σ'(0) W y + O(|y|²), so x* attracts iff every eigenvalue of the Jacobian J = σ'(0) W has a
negative real part (1-D: w < 0), and repels when all real parts are positive (w > 0, the classification
threshold of Fig. 4). With a feedback bias b + β m1/m0 the Dirac mass δ_{x*} is stationary iff

    (W + β I) x* + b = 0,   i.e.  x* = −(W + β I)⁻¹ b,

and the linearisation of the particle system about it splits into the mean mode, with Jacobian
σ'(0)(W + β I) (for identity σ this is the closed mean equation dμ/dt = (W + β I) μ + b), and the
relative modes y_i = x_i − μ, with Jacobian σ'(0) W.

Sensitivities (MODEL.md §5.2). ``sensitivity`` is forward-mode differentiation (``jax.jacfwd``) of any
function of the field with respect to W and b. ``sensitivity_equations`` integrates the discrete
variational equations of the ResNet x_{l+1} = x_l + Δt σ(z_l), z_l = W_l x_l + b_l [+ β μ_l], by hand:

    S_{l+1} = S_l + Δt σ'(z_l) ⊙ (W_l S_l + β mean(S_l) + ∂_p z_l),   S_0 = 0,

with S_l = ∂x_l/∂p, ∂z_l/∂W_{k,ij} = δ_{kl} e_i x_{l,j} and ∂z_l/∂b_{k,i} = δ_{kl} e_i. This recursion is
both the exact derivative of the discrete map and the explicit-Euler scheme for the continuous
variational equation d/dt ∂_p x = σ'(z)(W ∂_p x + ∂_p z).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import block_diag
from jaxtyping import Array, ArrayLike, PyTree

from .activations import get_activation
from .dispatch import filter_jit
from .field import AbstractField, NeuralField

__all__ = ["Sensitivity", "SteadyState", "sensitivity", "sensitivity_equations", "steady_state"]

_PARAMETERS = ("W", "b")


# ---- steady states -----------------------------------------------------------------------------------


class SteadyState(eqx.Module):
    """A rest point x* of one layer's field and its linearisation.

    Attributes:
        x: the rest point, shape (d,).
        jacobian: the linearisation: σ'(0) W, shape (d, d); for a feedback field (self-consistent mean)
            the block-diagonal diag(σ'(0)(W + β I), σ'(0) W), shape (2d, 2d): mean mode and relative modes.
        eigenvalues: eigenvalues of ``jacobian`` (complex).
    """

    x: Array
    jacobian: Array
    eigenvalues: Array

    @property
    def stable(self) -> Array:
        """True iff every eigenvalue has a negative real part (x* is asymptotically stable)."""
        return jnp.all(jnp.real(self.eigenvalues) < 0)

    @property
    def kind(self) -> str:
        """``attracting`` (all Re λ < 0), ``repelling`` (all Re λ > 0), ``saddle`` (both signs, none zero)
        or ``centre/degenerate`` (some Re λ = 0 up to 100 ε max|λ|: the linearisation does not decide)."""
        if isinstance(self.eigenvalues, jax.core.Tracer):
            raise TypeError("SteadyState.kind needs concrete eigenvalues; it cannot be used under jit/grad")
        lam = np.asarray(self.eigenvalues)
        tol = 100 * np.finfo(lam.real.dtype).eps * np.max(np.abs(lam))
        re = lam.real
        if np.any(np.abs(re) <= tol):
            return "centre/degenerate"
        if np.all(re < 0):
            return "attracting"
        if np.all(re > 0):
            return "repelling"
        return "saddle"


def _slope_at_rest(activation: str, dtype: Any) -> Array:
    """σ'(0): 1 for identity and tanh; for relu the right derivative σ'(0⁺) = 1 (see steady_state)."""
    if activation == "relu":
        return jnp.ones((), dtype)
    return get_activation(activation).derivative(jnp.zeros((), dtype))


def _check_invertible(A: Array, name: str, layer: int) -> None:
    """ValueError when the (concrete) matrix A whose inverse gives x* is numerically singular."""
    if isinstance(A, jax.core.Tracer):
        return
    A = np.asarray(A)
    matrix = name if len(name) == 1 else f"({name})"
    cond = np.linalg.cond(A)
    if np.isfinite(cond) and cond < 1.0 / np.finfo(A.dtype).eps:
        return
    raise ValueError(
        f"{name} of layer {layer} is singular (det = {np.linalg.det(A):.3g}, condition number = {cond:.3g}), "
        f"so there is no isolated rest point: the steady states fill the affine set "
        f"{{x : {matrix} x + b = 0}} (and there are none when b is not in the range of {name})"
    )


def _rest_point(W_l: Array, bias: Array, shift: float, slope: Array, coupled: bool) -> SteadyState:
    """x* = −(W + shift I)⁻¹ bias, with the Jacobian(s) σ'(0)(W + shift I) [and σ'(0) W when coupled]."""
    A = W_l + shift * jnp.eye(W_l.shape[0], dtype=W_l.dtype)
    x = -jnp.linalg.solve(A, bias)
    jacobian = block_diag(slope * A, slope * W_l) if coupled else slope * A
    return SteadyState(x=x, jacobian=jacobian, eigenvalues=jnp.linalg.eigvals(jacobian))


_rest_point_jit = filter_jit(_rest_point)


def steady_state(field: NeuralField, layer: int = 0, mean: ArrayLike | None = None) -> SteadyState:
    """The rest point x* of the field σ(W_l x + b_l) of layer ``layer``, with its linearisation.

    * identity, tanh (σ(z) = 0 ⇔ z = 0): x* = −W_l⁻¹ b_l, Jacobian σ'(0) W_l.
    * relu: σ(W x + b) = 0 on the whole closed cone {x : (W x + b)_i ≤ 0 for all i}, a continuum of rest
      points (MODEL.md §5.1). We return its vertex x* = −W⁻¹ b, the point where every pre-activation is
      zero, and the right-sided Jacobian σ'(0⁺) W = W: on the cone {W x + b > 0} the flow is exactly
      ẋ = W (x − x*), so ``eigenvalues``/``kind`` describe the dynamics on that side; points in the closed
      cone do not move at all.
    * sigmoid: σ > 0 everywhere, so every component of ẋ is positive and there is no rest point
      (ValueError).
    * feedback β (bias b + β m1/m0): with ``mean=None``, the self-consistent rest point
      x* = −(W_l + β I)⁻¹ b_l (for identity σ the rest point of the closed mean equation
      dμ/dt = (W + β I) μ + b), with the Jacobian diag(σ'(0)(W + β I), σ'(0) W) of the mean and relative
      modes; with a given ``mean`` μ held fixed, the rest point x* = −W_l⁻¹ (b_l + β μ) of one particle,
      Jacobian σ'(0) W_l.

    The matrix that is inverted (W_l, or W_l + β I) must be invertible; a singular one is a ValueError
    giving its determinant and condition number (the steady states then fill the affine set
    {W x + b = 0}). That check needs concrete arrays: under ``jax.jacfwd``/``jit`` it is skipped and a
    singular matrix gives non-finite values. The result is differentiable in W and b (∂x*/∂b = −W⁻¹).
    """
    if not isinstance(field, NeuralField):
        raise TypeError(f"field must be a NeuralField, got {type(field).__name__}")
    is_index = isinstance(layer, int | np.integer) and not isinstance(layer, bool)
    if not (is_index and 0 <= layer < field.num_layers):
        raise ValueError(f"layer must be an integer in [0, {field.num_layers}), got layer={layer!r}")
    if field.activation == "sigmoid":
        raise ValueError(
            "activation 'sigmoid' has no rest point: σ(z) = 1/(1 + e^{−z}) > 0 for every z, so every "
            "component of dx/dt is positive and all mass drifts towards +∞ (no steady state on R^d)"
        )
    W_l, b_l = field.W[layer], field.b[layer]
    beta = field.feedback
    if mean is not None:
        if beta is None:
            raise ValueError("mean was given but the field has no feedback bias, so the mean does not enter")
        mean = jnp.asarray(mean, b_l.dtype)
        if mean.shape != (field.d,) and not (field.d == 1 and mean.shape == ()):
            raise ValueError(f"mean must have shape ({field.d},) (or be a scalar for d = 1), "
                             f"got shape {mean.shape}")
        b_l = b_l + beta * mean.reshape(field.d)
    coupled = beta is not None and mean is None
    shift = beta if coupled else 0.0
    name = "W + β I" if coupled else "W"
    _check_invertible(W_l + shift * jnp.eye(field.d, dtype=W_l.dtype), name, layer)
    return _rest_point_jit(W_l, b_l, shift, _slope_at_rest(field.activation, W_l.dtype), coupled)


# ---- sensitivities -----------------------------------------------------------------------------------


class Sensitivity(eqx.Module):
    """Derivatives of an output y with respect to the field's weights and biases.

    ``W`` has the structure of y with each leaf of shape y_leaf.shape + (L, d, d): W[..., l, i, j] =
    ∂y/∂(W_l)_{ij}; ``b`` likewise with shape y_leaf.shape + (L, d). A parameter that was not asked for
    is None. Summing over the layer axis gives the derivative for a weight/bias shared by all layers.
    """

    W: PyTree[Array] | None = None
    b: PyTree[Array] | None = None


def _check_wrt(wrt: str | tuple[str, ...]) -> tuple[str, ...]:
    names = (wrt,) if isinstance(wrt, str) else tuple(wrt) if isinstance(wrt, list | tuple) else None
    if not names or len(set(names)) != len(names) or any(n not in _PARAMETERS for n in names):
        raise ValueError(f"wrt must be 'W', 'b' or a tuple of distinct names from {_PARAMETERS}, "
                         f"got wrt={wrt!r}")
    return names


@filter_jit
def _forward_jacobian(fn: Callable[[Any], PyTree], field: AbstractField, wrt: tuple[str, ...]) -> Sensitivity:
    params = {name: getattr(field, name) for name in wrt}

    def output(p: dict[str, Array]) -> PyTree:
        return fn(eqx.tree_at(lambda f: [getattr(f, n) for n in wrt], field, [p[n] for n in wrt]))

    jac = jax.jacfwd(output)(params)  # output structure, each leaf a dict over wrt
    out_structure = jax.tree.structure(jax.eval_shape(output, params))
    per_param = jax.tree.transpose(out_structure, jax.tree.structure(params), jac)
    return Sensitivity(**per_param)


def sensitivity(
    fn: Callable[[Any], PyTree], field: AbstractField, wrt: str | tuple[str, ...] = _PARAMETERS
) -> Sensitivity:
    """Forward-mode derivatives (``jax.jacfwd``) of ``fn(field)`` with respect to ``field.W`` and ``field.b``.

    Args:
        fn: any differentiable function of the field, e.g. ``lambda f: resnet_forward(f, x0)`` or a
            kinetic solver's moments; it may return an array or a pytree of arrays. Forward mode needs the
            solvers' default ``adjoint="checkpointed"`` (or ``"direct"``): ``adjoint="discrete"`` is a
            ``jax.custom_vjp``, which JAX differentiates in reverse mode only.
        field: a NeuralField (or another field with array attributes ``W`` and ``b``).
        wrt: ``"W"``, ``"b"`` or both (default).

    Returns:
        A :class:`Sensitivity` whose ``W``/``b`` have shape output shape + parameter shape.
        Forward mode costs one tangent per parameter entry, L (d² + d) in all: the right choice for
        few parameters and many outputs (use ``jax.grad`` for a scalar loss of many parameters).
    """
    if not callable(fn):
        raise TypeError(f"fn must be a callable fn(field), got {type(fn).__name__}")
    names = _check_wrt(wrt)
    if not isinstance(field, AbstractField) or any(not eqx.is_array(getattr(field, n, None)) for n in names):
        raise TypeError(
            f"field must be a NeuralField (a field with array attributes {names}), got {type(field).__name__}"
        )
    return _forward_jacobian(fn, field, names)


def _variational_scan(field: NeuralField, x0: Array) -> tuple[Array, Array]:
    """x_L (n, d) and S_L = ∂x_L/∂p (n, d, P), p = (vec W, vec b), by the discrete variational recursion."""
    n, d = x0.shape
    L, dt, beta = field.num_layers, field.dt, field.feedback
    num_w = L * d * d
    eye = jnp.eye(d, dtype=x0.dtype)

    def layer(carry: tuple[Array, Array], l: Array) -> tuple[tuple[Array, Array], None]:
        x, S = carry
        mean = jnp.mean(x, axis=0) if beta is not None else None
        z = jnp.einsum("ij,nj->ni", field.W[l], x) + field.layer_bias(l, mean)[None, :]
        at_l = jax.nn.one_hot(l, L, dtype=x.dtype)
        # explicit dependence of z_l on p: ∂z_l/∂W_{k,ij} = δ_kl e_i x_j, ∂z_l/∂b_{k,i} = δ_kl e_i
        dz_dW = at_l[None, None, :, None, None] * eye[None, :, None, :, None] * x[:, None, None, None, :]
        dz_db = at_l[None, None, :, None] * eye[None, :, None, :] * jnp.ones((n, 1, 1, 1), x.dtype)
        dz = jnp.concatenate([dz_dW.reshape(n, d, num_w), dz_db.reshape(n, d, L * d)], axis=-1)
        dz = dz + jnp.einsum("ij,njp->nip", field.W[l], S)
        if beta is not None:
            dz = dz + beta * jnp.mean(S, axis=0, keepdims=True)
        S = S + dt * field.sigma.derivative(z)[:, :, None] * dz
        return (x + dt * field.sigma.fn(z), S), None

    S0 = jnp.zeros((n, d, num_w + L * d), x0.dtype)
    (xL, SL), _ = jax.lax.scan(layer, (x0, S0), jnp.arange(L))
    return xL, SL


_variational_scan_jit = filter_jit(_variational_scan)


def sensitivity_equations(field: NeuralField, x0: ArrayLike) -> tuple[Array, Sensitivity]:
    """The ResNet output x_L and its derivatives ∂x_L/∂W, ∂x_L/∂b from the discrete variational equations.

    Integrates S_{l+1} = S_l + Δt σ'(z_l) ⊙ (W_l S_l + β mean(S_l) + ∂_p z_l) alongside the Euler layers
    x_{l+1} = x_l + Δt σ(z_l) in one ``lax.scan`` (see the module docstring); the result equals
    ``sensitivity(lambda f: resnet_forward(f, x0), field)`` up to rounding.

    Args:
        field: a NeuralField (with or without feedback).
        x0: samples of shape (n, d); shape (n,) for d = 1 (the outputs then have no data axis either).

    Returns:
        (x_L, Sensitivity) with x_L of shape (n, d), ``W`` of shape (n, d, L, d, d) and ``b`` of shape
        (n, d, L, d) (without the second axis for x0 of shape (n,)).
    """
    if not isinstance(field, NeuralField):
        raise TypeError(f"field must be a NeuralField, got {type(field).__name__}")
    x0 = jnp.asarray(x0)
    squeeze = x0.ndim == 1 and field.d == 1
    if squeeze:
        x0 = x0[:, None]
    if x0.ndim != 2 or x0.shape[1] != field.d:
        raise ValueError(f"x0 must have shape (n, d) with d = {field.d} (the field's dimension), "
                         f"got shape {tuple(x0.shape)}")
    x0 = x0.astype(jnp.result_type(x0.dtype, field.W.dtype, float))
    xL, S = _variational_scan_jit(field, x0)
    n, d, L = x0.shape[0], field.d, field.num_layers
    dW = S[..., : L * d * d].reshape(n, d, L, d, d)
    db = S[..., L * d * d :].reshape(n, d, L, d)
    if squeeze:
        return xL[:, 0], Sensitivity(W=dW[:, 0], b=db[:, 0])
    return xL, Sensitivity(W=dW, b=db)
