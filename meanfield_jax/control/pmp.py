"""Optimal control of the ResNet by Pontryagin's maximum principle: a forward–backward sweep.

The discretised control problem (MODEL.md §9, §10): data x_{0,i} with targets y_i, i = 1, …, n, a field with
per-layer parameters θ_l (W_l, b_l for a :class:`~meanfield_jax.NeuralField`), and

    J(θ) = (1/n) Σ_i |x_{L,i} − y_i|² + reg Δt Σ_l |θ_l|²,
    x_{l+1} = E_l(x_l) + Δt F(E_l(x_l); θ_l),   l = 0, …, L − 1,

the explicit-Euler ResNet (E_l is the field's ``enter_layer``: the identity for a NeuralField, the
projection on the active components for a width-varying field). Its first-order optimality system is

* forward:  the states x_l, l = 0, …, L;
* backward: the costates p_{l,i} = n ∂J/∂x_{l,i}, the discrete adjoint of the Euler steps,
      p_L = 2 (x_L − y) = ∂_x |x − y|²,
      p_l = (∂x_{l+1}/∂x_l)^T p_{l+1} = E_l'^T (p_{l+1} + Δt (∂F/∂x)^T p_{l+1})
  (with a feedback bias the transpose also carries the mean-field term);
* Hamiltonian of layer l,
      H_l(θ) = −(1/n) Σ_i p_{l+1,i} · F(E_l(x_{l,i}); θ) − reg |θ|²,
  whose gradient is exactly ∇H_l(θ_l) = −(1/Δt) ∂J/∂θ_l. Pontryagin: θ_l maximises H_l, so a stationary
  control has ∇H_l = 0 on every layer. (p is the gradient of the cost, not its negative: hence the minus
  sign in H.)

In the 1-D mean-field version (``method="kinetic"``) the costate is instead ∂_x ψ(t_l, x_l, y) of the value
function ψ solved on a grid (:mod:`.kinetic`); it tends to p_l as the grid is refined and Δt → 0.

Iteration (successive approximations with step-size control): all layers move along the Hamiltonian gradient,
θ ← θ + η ∇H(θ), i.e. a descent step on J. The trial η is the Barzilai–Borwein step s·s / (−s·Δ∇H) of the
last accepted move when the curvature is positive, and ``growth`` times the last step otherwise; it is halved
until the Armijo condition J(θ + η∇H) ≤ J(θ) − c η Δt |∇H|² holds (at most ``max_backtracks`` times, else the
iteration keeps θ). Only decreasing steps are accepted, so the cost history never increases and the sweep
cannot diverge in the non-convex, low-regularisation regime. Everything runs in one jit-compiled
``lax.scan`` over the iterations; the layers are ``lax.scan`` loops inside it.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, PyTree

from ..arguments import finite_values, number, whole_number
from ..dispatch import filter_jit
from ..field import AbstractField
from ..grid import Grid2D
from ..particles import euler_step, resnet_forward
from .kinetic import default_costate_grid, kinetic_costate, substep_bound

__all__ = [
    "KineticCostate",
    "PMPResult",
    "ParticleCostate",
    "cost",
    "costate",
    "hamiltonian",
    "hamiltonian_gradient",
    "hessian_min_eigenvalue",
    "solve_pmp",
    "tikhonov",
]

_ARMIJO = 1e-4
_SHRINK = 0.5
_STEP_BOUNDS = (1e-12, 1e8)


# ---- the cost --------------------------------------------------------------------------------------------
def _parameters(field: AbstractField) -> tuple[PyTree, PyTree]:
    """Split a field into its parameters θ (the floating-point arrays, one slice per layer) and the rest."""
    return eqx.partition(field, eqx.is_inexact_array)


def _dot(a: PyTree, b: PyTree) -> Array:
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tikhonov(field: AbstractField) -> Array:
    """The discrete L² norm of the control, Δt Σ_l |θ_l|² (Frobenius norms of every parameter array)."""
    params, _ = _parameters(field)
    return field.dt * _dot(params, params)


def cost(field: AbstractField, x: Array, y: Array, reg: ArrayLike) -> Array:
    """J = (1/n) Σ_i |x_{L,i} − y_i|² + reg Δt Σ_l |θ_l|² for states x (n, d) and targets y (n, d)."""
    xT = resnet_forward(field, x)
    return jnp.mean(jnp.sum((xT - y) ** 2, axis=-1)) + reg * tikhonov(field)


# ---- costates ------------------------------------------------------------------------------------------
def _particle_costates(field: AbstractField, states: Array, y: Array) -> Array:
    """p_L = 2 (x_L − y), p_l = (∂x_{l+1}/∂x_l)^T p_{l+1}: a reverse ``lax.scan`` of vector–Jacobian
    products."""
    p_final = 2.0 * (states[-1] - y)

    def back(p: Array, inputs: tuple[Array, Array]) -> tuple[Array, Array]:
        l, x_l = inputs
        _, vjp = jax.vjp(lambda z: euler_step(field, l, z), x_l)
        (p_l,) = vjp(p)
        return p_l, p_l

    _, ps = jax.lax.scan(back, p_final, (jnp.arange(field.num_layers), states[:-1]), reverse=True)
    return jnp.concatenate([ps, p_final[None]], axis=0)


class ParticleCostate(eqx.Module):
    """The costate along the particles: the exact discrete adjoint of the Euler steps."""

    def __call__(self, field: AbstractField, states: Array, y: Array) -> tuple[Array, Array]:
        return _particle_costates(field, states, y), jnp.array(True)


class KineticCostate(eqx.Module):
    """The mean-field costate ∂_x ψ(t_l, x_l, y) from the backward transport of ψ on ``grid`` (1-D data)."""

    grid: Grid2D = eqx.field(static=True)
    cfl: float = eqx.field(static=True)
    max_substeps: int = eqx.field(static=True)

    def __call__(self, field: AbstractField, states: Array, y: Array) -> tuple[Array, Array]:
        return kinetic_costate(field, states, y, self.grid, self.cfl, self.max_substeps)


CostateRule = ParticleCostate | KineticCostate


@filter_jit
def _states_and_costates(field: AbstractField, x: Array, y: Array, rule: CostateRule):
    states = resnet_forward(field, x, save_every=1)
    costates, ok = rule(field, states, y)
    return states, costates, ok


# ---- the Hamiltonian -------------------------------------------------------------------------------------
def hamiltonian(field: AbstractField, states: Array, costates: Array, reg: ArrayLike) -> Array:
    """Σ_l H_l(θ_l), H_l(θ) = −(1/n) Σ_i p_{l+1,i} · F(E_l(x_{l,i}); θ) − reg |θ|², states fixed.

    Args:
        field: the field holding θ.
        states: x_l, shape (L + 1, n, d); costates: p_l, shape (L + 1, n, d).
        reg: the Tikhonov weight.
    """
    layers = jnp.arange(field.num_layers)
    entered = jax.lax.stop_gradient(jax.vmap(field.enter_layer)(layers, states[:-1]))
    if field.feedback is None:
        velocities = jax.vmap(lambda l, x: field.layer_velocity(l, x))(layers, entered)
    else:
        velocities = jax.vmap(field.layer_velocity)(layers, entered, jnp.mean(entered, axis=1))
    n = states.shape[1]
    return -jnp.sum(costates[1:] * velocities) / n - reg * tikhonov(field) / field.dt


@filter_jit
def _hamiltonian_gradient(
    params: PyTree, static: PyTree, states: Array, costates: Array, reg: Array
) -> PyTree:
    return jax.grad(lambda p: hamiltonian(eqx.combine(p, static), states, costates, reg))(params)


# ---- input checks ----------------------------------------------------------------------------------------
def _check_field(field: AbstractField) -> None:
    if not isinstance(field, AbstractField):
        raise TypeError(f"field must be a NeuralField (or another AbstractField), got {type(field).__name__}")
    params, _ = _parameters(field)
    for leaf in jax.tree.leaves(params):
        if leaf.ndim == 0 or leaf.shape[0] != field.num_layers:
            raise ValueError(
                "every parameter array of the field must have one slice per layer (leading axis "
                f"L = {field.num_layers}), got an array of shape {tuple(leaf.shape)}"
            )


def _as_points(value: ArrayLike, name: str, d: int, dtype) -> Array:
    arr = jnp.asarray(value)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name} must be a real array, got dtype {arr.dtype}")
    if arr.ndim == 1 and d == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != d or arr.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (n, d) with n >= 1 and d = {d} (the field's dimension), "
            f"got shape {tuple(arr.shape)}"
        )
    finite_values(arr, name)
    return arr.astype(dtype)


def _check_problem(
    field: AbstractField, x: ArrayLike, y: ArrayLike, reg: float
) -> tuple[Array, Array, float]:
    """Validate (field, x, y, reg) and return x, y as (n, d) arrays of the parameters' dtype and reg."""
    _check_field(field)
    params, _ = _parameters(field)
    leaves = jax.tree.leaves(params)
    dtype = leaves[0].dtype if leaves else jnp.result_type(float)
    x = _as_points(x, "x", field.d, dtype)
    y = _as_points(y, "y", field.d, dtype)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    reg = number(reg, "reg")
    if not (math.isfinite(reg) and reg >= 0):
        raise ValueError(f"reg must be a finite number >= 0, got reg={reg}")
    return x, y, reg


def _check_positive_number(value, name: str) -> float:
    x = number(value, name)
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {name}={x}")
    return x


def _costate_rule(
    method: str, field: AbstractField, grid: Grid2D | None, cfl: float, max_substeps: int | None
) -> CostateRule:
    if method == "particles":
        return ParticleCostate()
    if method != "kinetic":
        raise ValueError(f"method must be 'particles' or 'kinetic', got method={method!r}")
    if field.d != 1:
        raise ValueError(f"method='kinetic' solves the costate on a grid for 1-D data only, got d={field.d}")
    if field.feedback is not None:
        raise ValueError(
            f"method='kinetic' needs a field without feedback bias, got feedback={field.feedback}"
        )
    grid = default_costate_grid() if grid is None else grid
    if not isinstance(grid, Grid2D):
        raise TypeError(f"grid must be a Grid2D over (x, y), got {type(grid).__name__}")
    cfl = _check_positive_number(cfl, "cfl")
    if cfl > 1:
        raise ValueError(f"cfl must be in (0, 1] for the upwind scheme, got cfl={cfl}")
    if max_substeps is None:
        max_substeps = substep_bound(field, grid, cfl)
    return KineticCostate(grid, cfl, whole_number(max_substeps, "max_substeps"))


def costate(
    field: AbstractField,
    x: ArrayLike,
    y: ArrayLike,
    method: str = "particles",
    grid: Grid2D | None = None,
    cfl: float = 0.9,
    max_substeps: int | None = None,
) -> tuple[Array, Array]:
    """States x_l and costates p_l = n ∂J/∂x_l (``particles``) or ∂_x ψ(t_l, x_l, y) (``kinetic``).

    Returns:
        (states, costates), both of shape (L + 1, n, d).
    """
    x, y, _ = _check_problem(field, x, y, 0.0)
    rule = _costate_rule(method, field, grid, cfl, max_substeps)
    states, costates, ok = _states_and_costates(field, x, y, rule)
    return _checked_substeps(ok, rule, (states, costates))


def hamiltonian_gradient(field: AbstractField, states: Array, costates: Array, reg: float) -> AbstractField:
    """∇_θ Σ_l H_l as a field of the same type whose parameter arrays hold the gradient (= −(1/Δt) ∂J/∂θ)."""
    _check_field(field)
    params, static = _parameters(field)
    grad = _hamiltonian_gradient(params, static, states, costates, jnp.asarray(reg))
    return eqx.combine(grad, static)


def _checked_substeps(ok: Array, rule: CostateRule, outputs: Any) -> Any:
    """``outputs``, once checked that the kinetic costate's sub-steps sufficed: a RuntimeError now when
    ``ok`` is concrete, a runtime error of the compiled program when it is traced (under jax.jit)."""
    bound = getattr(rule, "max_substeps", None)  # the particle rule has no sub-steps: ok is always true
    message = (f"the kinetic costate needed more than max_substeps={bound} upwind sub-steps on some layer "
               "(the velocities grew); pass a larger max_substeps")
    if isinstance(ok, jax.core.Tracer):
        return eqx.error_if(outputs, ~ok, message)
    if not bool(ok):
        raise RuntimeError(message)
    return outputs


# ---- the sweep -------------------------------------------------------------------------------------------
class PMPResult(eqx.Module):
    """Outcome of :func:`solve_pmp`.

    Attributes:
        field: the field with the final parameters.
        history: J after k iterations, k = 0, …, iterations (history[0] is the initial field's cost).
        residual: |∇H| = (Σ_l |∇H_l|²)^{1/2} at the final field (computed with the method's costate).
        residual_history: |∇H| after k iterations, k = 0, …, iterations.
        step_sizes: the step η of each accepted move (0 where an iteration kept θ).
        costate: the final costates p_l (or ∂_x ψ at the particles), shape (L + 1, n, d).
        hessian_min_eig: smallest eigenvalue of the Hessian of J at the final field (None unless asked).
    """

    field: AbstractField
    history: np.ndarray
    residual: float
    residual_history: np.ndarray
    step_sizes: np.ndarray
    costate: Array
    hessian_min_eig: float | None = None


@filter_jit
def _sweeps(
    field: AbstractField,
    x: Array,
    y: Array,
    reg: Array,
    step_size: Array,
    growth: Array,
    iterations: int,
    max_backtracks: int,
    rule: CostateRule,
):
    params, static = _parameters(field)
    dt = field.dt

    def value(p: PyTree) -> Array:
        return cost(eqx.combine(p, static), x, y, reg)

    def sweep(p: PyTree) -> tuple[PyTree, Array, Array]:
        states, costates, ok = _states_and_costates(eqx.combine(p, static), x, y, rule)
        return _hamiltonian_gradient(p, static, states, costates, reg), costates, ok

    def move(p: PyTree, g: PyTree, eta: Array) -> PyTree:
        return jax.tree.map(lambda a, b: a + eta * b, p, g)

    def iteration(carry, _):
        p, J, g, _, eta, ok = carry
        g2 = _dot(g, g)

        def armijo_failed(state):
            _, _, accepted, k = state
            return (~accepted) & (k < max_backtracks)

        def backtrack(state):
            eta_try, _, _, k = state
            J_try = value(move(p, g, eta_try))
            accepted = J_try <= J - _ARMIJO * eta_try * dt * g2
            return jnp.where(accepted, eta_try, _SHRINK * eta_try), J_try, accepted, k + 1

        eta, J_try, accepted, _ = jax.lax.while_loop(
            armijo_failed, backtrack, (eta, J, jnp.array(False), jnp.array(0))
        )
        p_new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), move(p, g, eta), p)
        J_new = jnp.where(accepted, J_try, J)
        g_new, costates_new, ok_new = sweep(p_new)
        s = jax.tree.map(jnp.subtract, p_new, p)
        curvature = -_dot(s, jax.tree.map(jnp.subtract, g_new, g))
        bb = jnp.clip(_dot(s, s) / jnp.where(curvature > 0, curvature, 1.0), *_STEP_BOUNDS)
        eta_next = jnp.where(accepted, jnp.where(curvature > 0, bb, growth * eta), eta)
        eta_next = jnp.clip(eta_next, *_STEP_BOUNDS)
        carry = (p_new, J_new, g_new, costates_new, eta_next, ok & ok_new)
        return carry, (J_new, jnp.sqrt(_dot(g_new, g_new)), jnp.where(accepted, eta, 0.0))

    g0, costates0, ok0 = sweep(params)
    J0 = value(params)
    init = (params, J0, g0, costates0, step_size, ok0)
    (p, _, _, costates, _, ok), (Js, residuals, etas) = jax.lax.scan(iteration, init, None, length=iterations)
    history = jnp.concatenate([J0[None], Js])
    residual_history = jnp.concatenate([jnp.sqrt(_dot(g0, g0))[None], residuals])
    return eqx.combine(p, static), history, residual_history, etas, costates, ok


def solve_pmp(
    field: AbstractField,
    x: ArrayLike,
    y: ArrayLike,
    reg: float = 0.1,
    iterations: int = 50,
    method: str = "particles",
    *,
    step_size: float = 1.0,
    growth: float = 2.0,
    max_backtracks: int = 30,
    grid: Grid2D | None = None,
    cfl: float = 0.9,
    max_substeps: int | None = None,
    hessian: bool = False,
) -> PMPResult:
    """Minimise J = mean|x_L − y|² + reg Δt Σ_l |θ_l|² by the PMP forward–backward sweep.

    Args:
        field: the initial field (a NeuralField or any AbstractField whose parameter arrays have a
            leading layer axis, e.g. an AutoencODE).
        x: inputs (n, d); y: targets (n, d) (shape (n,) is accepted for d = 1).
        reg: Tikhonov weight ≥ 0.
        iterations: number of forward–backward sweeps.
        method: ``"particles"`` (exact discrete adjoint along the particles) or ``"kinetic"`` (1-D only:
            costate ∂_x ψ from the upwind backward transport of ψ on ``grid``).
        step_size: first trial step η of the Hamiltonian-gradient move θ ← θ + η ∇H.
        growth: factor on the trial step after an accepted move without positive curvature.
        max_backtracks: halvings of η per iteration before the iteration gives up and keeps θ.
        grid: the (x, y) grid of the kinetic costate (default 141 × 141 cells on [−7, 7]²).
        cfl: Courant number of the upwind sub-steps (kinetic).
        max_substeps: upwind sub-steps available per layer (kinetic; default 4× what the initial field needs).
        hessian: also report the smallest eigenvalue of the Hessian of J at the final field.

    Returns:
        a :class:`PMPResult`.
    """
    x, y, reg = _check_problem(field, x, y, reg)
    iterations = whole_number(iterations, "iterations")
    max_backtracks = whole_number(max_backtracks, "max_backtracks")
    step_size = _check_positive_number(step_size, "step_size")
    growth = _check_positive_number(growth, "growth")
    if growth < 1:
        raise ValueError(f"growth must be >= 1, got growth={growth}")
    rule = _costate_rule(method, field, grid, cfl, max_substeps)
    dtype = x.dtype
    final, history, residuals, etas, costates, ok = _sweeps(
        field,
        x,
        y,
        jnp.asarray(reg, dtype),
        jnp.asarray(step_size, dtype),
        jnp.asarray(growth, dtype),
        iterations,
        max_backtracks,
        rule,
    )
    _checked_substeps(ok, rule, None)
    return PMPResult(
        field=final,
        history=np.asarray(history),
        residual=float(residuals[-1]),
        residual_history=np.asarray(residuals),
        step_sizes=np.asarray(etas),
        costate=costates,
        hessian_min_eig=hessian_min_eigenvalue(final, x, y, reg) if hessian else None,
    )


# ---- local convexity -------------------------------------------------------------------------------------
@filter_jit
def _hessian_eigenvalues(field: AbstractField, x: Array, y: Array, reg: Array) -> Array:
    params, static = _parameters(field)
    flat, unravel = ravel_pytree(params)
    hess = jax.hessian(lambda v: cost(eqx.combine(unravel(v), static), x, y, reg))(flat)
    return jnp.linalg.eigvalsh(hess)


def hessian_min_eigenvalue(field: AbstractField, x: ArrayLike, y: ArrayLike, reg: float) -> float:
    """Smallest eigenvalue of ∇²_θ J at ``field`` (θ = all parameters, flattened).

    A positive value means J is locally strictly convex around the field: the regime in which the
    low-regularisation results of the AutoencODE paper hold. Parameters that do not act on the flow
    (masked AutoencODE entries) only see the Tikhonov term and contribute the eigenvalue 2 reg Δt. The
    Hessian is dense, (P × P) with P the number of parameters, so this is meant for small networks.
    """
    x, y, reg = _check_problem(field, x, y, reg)
    return float(_hessian_eigenvalues(field, x, y, jnp.asarray(reg, x.dtype))[0])
