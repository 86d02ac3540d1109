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

Kernel. For a :class:`NeuralField` the particles are stored particle-last, x of shape (d, n) (transposed
once on the way in and out), so that a layer is one small matrix product W_l x, whose result is contiguous
along the particles, and one elementwise pass; for d = 1 the product is a scalar times a vector and the
layer a single fused loop. The noise of layer l is ``normal(fold_in(key, l), (n, d))`` whatever the
layout, so every path draws the same samples. On CPU an odd number of independent particles runs with a
copy of the last one appended and dropped from the output (:func:`_appended_particles`; with noise of a
constant K, its samples are the next row of the same draw): XLA's CPU kernels over an odd count of values
are neither split across threads nor vectorised.

Gradients (``adjoint=``, see :mod:`meanfield_jax.adjoint`); all three give the same numbers:

* ``"checkpointed"`` (default): reverse mode through ``jax.checkpoint``-ed segments of ≈ √L layers, each
  layer under ``jax.checkpoint`` as well (a segment stores its layers' inputs, not their intermediates):
  about 2√L stored states whatever the depth, and it composes with every JAX transformation (forward
  mode, ``jax.hessian``, ``vmap``).
* ``"discrete"``: the hand-written discrete adjoint of the Euler steps (a ``jax.custom_vjp``),

      s_l = σ'(z_l) ⊙ p_{l+1},   p_l = p_{l+1} + Δt W_lᵀ s_l [+ Δt β mean_m s_l] + (∂_x g_l)ᵀ p_{l+1},
      ∂J/∂W_l = Δt Σ_m s_l x_lᵀ,   ∂J/∂b_l = Δt Σ_m s_l,

  with g_l = sqrt(2 K(x_l) Δt) ξ_l the noise, x_l recomputed from checkpoints every ≈ √L layers and ξ_l
  replayed from the key. On CPU, when the particles are independent (no noise, no feedback), the backward
  pass runs on groups of about 2¹⁷/d particles in turn, so that a group's recomputed states stay in
  the last-level cache while its kernels are large enough to be split over the cores. Same memory as
  ``"checkpointed"``, the fastest reverse-mode gradient, exact w.r.t. W, b, x0 and the arrays a callable
  K closes over; reverse mode only (JAX cannot push forward-mode tangents through a custom VJP). Fields
  other than a :class:`NeuralField` (e.g. width-varying ones) use ``"checkpointed"`` instead.
* ``"direct"``: plain reverse mode through the scan; stores every layer (memory grows with L).

``diffusion`` given as a number is a constant, not differentiated; put K in a callable to differentiate
with respect to it. A callable K must act particle by particle (K(x)_m depends on x_m only).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from . import threefry
from .activations import get_activation
from .adjoint import (
    AbstractAdjointStep,
    Adjoint,
    adjoint_scan,
    check_adjoint,
    checkpointed_scan,
)
from .arguments import whole_number
from .dispatch import jit_arrays, odd_count_on_cpu
from .field import AbstractField, NeuralField
from .sharding_types import explicit_spec, replicated_spec, transposed_spec

__all__ = ["NeuralEulerStep", "euler_step", "layer_noise", "resnet_forward"]

Diffusion = float | Callable[[Array], Array]

# Values (particles x d) per group in the CPU backward pass of the discrete adjoint: 512 KiB in float32.
# With a segment's layers written out (``NeuralEulerStep.unrolled_segments``) groups of 2¹⁷ took 0.73–0.95x
# the time of 2¹⁴ at n = 10⁵–10⁶ (benchmarks/README.md); with the segment's loops 2¹⁴ had been fastest.
_BACKWARD_BLOCK_VALUES = 2**17

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
    if not (K >= 0 and math.isfinite(K)):
        raise ValueError(f"diffusion must be a finite number >= 0, got diffusion={K}")


def _constant_diffusion(x: Array, K: Array) -> Array:
    """K(x) = K for a constant diffusion coefficient (the argument x is unused)."""
    del x
    return K


def _call_converted(static: PyTree, x: Array, hoisted: PyTree) -> Array:
    """K(x) of a closure-converted K, from its static part and its hoisted arrays."""
    return eqx.combine(hoisted, static)(x)


def _diffusion_at(diffusion: Callable, consts: tuple, x: Array) -> Array:
    """K at particles x of shape (n, d), shaped (), (n, 1) or (n, d) to broadcast over x."""
    K = jnp.asarray(diffusion(x, *consts)).astype(x.dtype)
    if K.ndim == 0 or K.shape == x.shape:
        return K
    if K.shape not in ((x.shape[0],), (x.shape[0], 1)):
        raise ValueError(
            f"diffusion K(x) for particles x of shape {tuple(x.shape)} must return shape (), (n,), (n, 1) or "
            f"(n, d) with n = {x.shape[0]}, d = {x.shape[1]}; got shape {tuple(K.shape)}"
        )
    return jnp.reshape(K, (x.shape[0], 1))


def _noise_amplitude(dt: float, K: Array) -> Array:
    """sqrt(2 Δt K), differentiated as 0 where K = 0. K ≥ 0 is smallest there, so a differentiable K has
    K' = 0 at such a point, and the chain rule's K' / (2 sqrt K) would be 0 · ∞ = NaN (a K clipped to zero
    outside an interval gave NaN gradients for every particle outside it); 0 is the derivative where K
    vanishes on a neighbourhood and a subgradient at an isolated zero (sqrt(x²) = |x|)."""
    positive = K > 0
    return jnp.where(positive, jnp.sqrt(2.0 * dt * jnp.where(positive, K, 1.0)), 0.0).astype(K.dtype)


def layer_noise(key: PRNGKeyArray, l: ArrayLike, n: int, d: int, dtype, out_sharding=None) -> Array:
    """ξ_l ~ N(0, I) of shape (n, d): ``jax.random.normal(fold_in(key, l), (n, d))``, independent of the
    depth L; drawn by :func:`meanfield_jax.threefry.normal` (the same values, one fused kernel on CPU).

    ``out_sharding`` lays the draw out like the particles where shardings are types (explicit mesh axes);
    JAX's partitionable threefry gives every value the same bits wherever it is drawn.
    """
    return threefry.normal(jax.random.fold_in(key, l), (n, d), dtype, out_sharding=out_sharding)


def euler_step(field: AbstractField, l: Array, x: Array) -> Array:
    """One ResNet layer x + Δt σ(W_l x + b_l) for x of shape (n, d) (after the field's ``enter_layer``)."""
    x = field.enter_layer(l, x)
    mean = jnp.mean(x, axis=0) if field.feedback is not None else None
    return x + field.dt * field.layer_velocity(l, x, mean)


class NeuralEulerStep(AbstractAdjointStep):
    """One layer x ← x + Δt σ(W_l x + b_l [+ β x̄]) + sqrt(2 Δt K(x)) ξ_l on particles x of shape (d, c).

    Per-layer inputs ``(W_l, b_l, l)``, and for :meth:`backward` W_lᵀ as a fourth, stored transposed:
    given W_l's transpose, XLA's CPU backend folded it into the product W_lᵀ s, which then left its fast
    (YNNPACK) matrix product (d = 16: 12.8 against 5.5 µs a product of 1000 particles, profiled; the
    discrete gradient 574 → 530 ms at n = 10⁵, bitwise the same). Shared inputs ``(key, consts)`` with
    K(x) = ``diffusion(xᵀ, *consts)``. :meth:`backward` is the exact adjoint of :meth:`forward`.

    The backward pass writes out each segment's layers (``unrolled_segments``): the same gradients to
    round-off (bitwise in the benchmark's cases), 0.78–1.01x the time of the looped segments (L = 100,
    float32, n = 10⁴–10⁶, d = 1–16), but 1.13x with a feedback mean at n = 10⁴, d = 2
    (benchmarks/README.md).
    """

    unrolled_segments: ClassVar[bool] = True
    activation: str = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    feedback: float | None = eqx.field(static=True)
    diffusion: Callable | None = eqx.field(static=True)

    def _pre_activation(self, W_l: Array, b_l: Array, x: Array) -> Array:
        z = W_l @ x + b_l[:, None]
        if self.feedback is not None:
            z = z + self.feedback * jnp.mean(x, axis=1, keepdims=True)
        return z

    def _noise(self, x: Array, consts: tuple, xi: Array) -> Array:
        return _noise_amplitude(self.dt, _diffusion_at(self.diffusion, consts, x.T).T) * xi

    def forward(self, x: Array, xs_l: PyTree, shared: PyTree) -> tuple[Array, PyTree]:
        W_l, b_l, l = xs_l[:3]
        sigma = get_activation(self.activation)
        z = self._pre_activation(W_l, b_l, x)
        x_next = x + self.dt * sigma.fn(z)
        if self.diffusion is None:
            return x_next, sigma.derivative(z)
        key, consts = shared
        xi = layer_noise(key, l, x.shape[1], x.shape[0], x.dtype, transposed_spec(x)).T
        return x_next + self._noise(x, consts, xi), (sigma.derivative(z), xi)

    def backward(
        self, x: Array, residual: PyTree, p: Array, xs_l: PyTree, shared: PyTree
    ) -> tuple[Array, PyTree, PyTree]:
        W_l, WT_l = xs_l[0], xs_l[3]
        _, consts = shared
        sigma_prime, xi = (residual, None) if self.diffusion is None else residual
        s = sigma_prime * p
        p_prev = p + self.dt * (WT_l @ s)
        if self.feedback is not None:
            p_prev = p_prev + self.dt * self.feedback * jnp.mean(s, axis=1, keepdims=True)
        d_consts = ()
        if self.diffusion is not None:  # no cotangent for integer arrays among K's arrays
            c_diff, c_rest = eqx.partition(consts, eqx.is_inexact_array)
            _, noise_vjp = jax.vjp(lambda y, c: self._noise(y, eqx.combine(c, c_rest), xi), x, c_diff)
            d_x, d_consts = noise_vjp(p)
            p_prev = p_prev + d_x
        # a contraction over the particles: replicated (named only where shardings are types)
        d_W = (self.dt * jnp.matmul(s, x.T, out_sharding=replicated_spec(x, 2))).astype(W_l.dtype)
        d_b = (self.dt * jnp.sum(s, axis=1)).astype(W_l.dtype)
        return p_prev, (d_W, d_b, None, jnp.zeros_like(WT_l)), (None, d_consts)  # Wᵀ: a layout only


def _backward_blocks(n: int, d: int, separable: bool) -> int:
    """Groups of particles for the discrete adjoint's backward pass: one on accelerators or when the
    particles are coupled (feedback mean, noise drawn for all at once); on CPU about n d / 2¹⁷ of them,
    a divisor of n, so that each group's states and residuals stay in the last-level cache (a segment's
    ~10 of each: ~10 MiB in float32) while its kernels are large enough to be split over the cores."""
    if not separable or jax.default_backend() != "cpu":
        return 1
    target = max(1, round(n * d / _BACKWARD_BLOCK_VALUES))
    divisors = [m for m in range(1, 2 * target + 1) if n % m == 0]
    return min(divisors, key=lambda m: abs(math.log(m / target)))


def _appended_particles(n: int, field: AbstractField, diffusion: Callable | None, key) -> int:
    """The particles (0 or 1) appended for the run, each a copy of the last one, dropped from the output:
    one to an odd number of independent particles of a :class:`NeuralField` on CPU
    (:func:`~meanfield_jax.dispatch.odd_count_on_cpu`; d = 1, L = 100, float32: n = 100001 took 8x the
    time of n = 100000 or 100002, measured). A copy keeps every value the run computes as finite as the
    particles' own. Not with a feedback mean (the extra particle would move it); with noise only for a
    constant K (a callable K sees the particles the user passed, n of them) and where its rows are
    prefix-stable (:func:`_noise_rows_extend`)."""
    independent = type(field) is NeuralField and field.feedback is None
    noise_kept = diffusion is None or (diffusion is _constant_diffusion and _noise_rows_extend(key))
    return int(independent and noise_kept and odd_count_on_cpu(n))


def _noise_rows_extend(key) -> bool:
    """Whether the first n rows of ``normal(k, (n + 1, d))`` are ``normal(k, (n, d))`` for keys k derived
    from ``key``: true for threefry keys with JAX's (default) partitionable bits, since those bits depend
    only on each value's index and the transform to normal samples is elementwise."""
    partitionable = bool(jax.config.jax_threefry_partitionable)
    return partitionable and str(jax.random.key_impl(key)) == "threefry2x32"


def _layerwise(layer: Callable, adjoint: str) -> Callable:
    """``layer`` under ``jax.checkpoint`` for ``adjoint="checkpointed"``: reverse mode then stores only each
    layer's input within a segment and recomputes the layer's activation when it steps back through it,
    instead of storing its intermediates (here three arrays of the particles' size per layer). Measured,
    L = 100, float32, one process, bitwise the same gradients: n = 10⁶, d = 1 307 → 190 ms; n = 10⁵, d = 1
    25.5 → 17.4 ms, d = 4 143 → 99 ms, d = 16 736 → 552 ms; n = 10⁴ 5–10 % faster; the gradient's
    temporary memory about halved (n = 10⁵, d = 16 269 → 147 MiB). Not for other fields: the width-varying
    AutoencODE's gradient became 8–11 % slower (with a third of the memory)."""
    return jax.checkpoint(layer, prevent_cse=False) if adjoint == "checkpointed" else layer


def _neural_flow(field: NeuralField, x0, diffusion, consts, key, adjoint):
    """State (particle-last, (d, n)), per-layer inputs, flow over layers and back-conversion to (n, d)."""
    step = NeuralEulerStep(field.activation, field.dt, field.feedback, diffusion)
    shared = (key, consts)
    n, d = x0.shape
    blocks = _backward_blocks(n, d, separable=field.feedback is None and diffusion is None)

    def flow(x, xs):
        if adjoint == "discrete":
            return adjoint_scan(step, x, xs, shared, blocks)
        return checkpointed_scan(_layerwise(lambda y, xs_l: step.forward(y, xs_l, shared)[0], adjoint), x, xs,
                                 adjoint=adjoint)

    xs = (field.W, field.b, jnp.arange(field.num_layers))
    if adjoint == "discrete":  # the reverse step's W_lᵀ; the gradient reaches W through W_l alone
        xs = (*xs, jax.lax.stop_gradient(jnp.swapaxes(field.W, 1, 2)))
    return x0.T, xs, flow, lambda x: x.T


def _field_flow(field: AbstractField, x0, diffusion, consts, key, adjoint):
    """The same for any AbstractField, on (n, d) arrays, differentiated by JAX."""

    def layer(x, l):
        x_next = euler_step(field, l, x)
        if diffusion is None:
            return x_next
        xi = layer_noise(key, l, x.shape[0], x.shape[1], x.dtype, explicit_spec(x))
        return x_next + _noise_amplitude(field.dt, _diffusion_at(diffusion, consts, x)) * xi

    adjoint = "checkpointed" if adjoint == "discrete" else adjoint
    flow = functools.partial(checkpointed_scan, layer, adjoint=adjoint)
    return x0, jnp.arange(field.num_layers), flow, lambda x: x


@functools.partial(jit_arrays, static_argnames=("save_every", "diffusion", "adjoint"))
@functools.partial(eqx.debug.assert_max_traces, max_traces=None)
def _resnet_kernel(field, x0, save_every, diffusion, consts, key, adjoint):
    """The jit-compiled ResNet (traced once per field structure, shapes and static options)."""
    n = x0.shape[0]
    extra = _appended_particles(n, field, diffusion, key)
    x0_run = jnp.concatenate([x0, x0[-1:]]) if extra else x0
    if diffusion is not None and diffusion is not _constant_diffusion:
        # every array K closes over (integers too) becomes an argument, so the custom VJP sees no stale tracer
        converted = eqx.filter_closure_convert(diffusion, x0_run)
        hoisted, static = eqx.partition(converted, eqx.is_array)
        diffusion, consts = functools.partial(_call_converted, static), (*consts, hoisted)
    setup = _neural_flow if type(field) is NeuralField else _field_flow
    x, xs, flow, run_to_particles = setup(field, x0_run, diffusion, consts, key, adjoint)

    def to_particles(x):
        return run_to_particles(x)[..., :n, :]

    if save_every is None:
        return to_particles(flow(x, xs))
    num_saves = field.num_layers // save_every
    blocks = jax.tree.map(lambda a: a.reshape(num_saves, save_every, *a.shape[1:]), xs)

    def save_block(x, xs_block):
        x = flow(x, xs_block)
        return x, to_particles(x)

    _, saved = jax.lax.scan(save_block, x, blocks)
    return jnp.concatenate([x0[None], saved], axis=0)


def resnet_forward(
    field: AbstractField,
    x0: ArrayLike,
    save_every: int | None = None,
    diffusion: Diffusion | None = None,
    key: PRNGKeyArray | None = None,
    *,
    adjoint: Adjoint = "checkpointed",
) -> Array:
    """Push samples through the L layers of ``field``.

    Args:
        field: the :class:`NeuralField` (W, b per layer, activation, T), or any AbstractField.
        x0: samples of shape (n, d); shape (n,) is accepted when d = 1 and the result then has no
            trailing axis either.
        save_every: if given (k), return the states after layers 0, k, 2k, …, L, shape (L//k + 1, n, d);
            L must be a multiple of k.
        diffusion: K ≥ 0 (a number) or a callable x ↦ K(x) for the stochastic ResNet; K(x) for x of
            shape (n, d) returns shape (n,), (n, 1) or (n, d).
        key: PRNG key for the noise (required with ``diffusion``). Layer l uses ``fold_in(key, l)``,
            so the noise of a layer does not depend on the depth.
        adjoint: how reverse-mode gradients are computed: ``"checkpointed"`` (``jax.checkpoint`` on
            segments of ≈ √L layers), ``"discrete"`` (hand-written discrete adjoint, same memory, faster,
            reverse mode only) or ``"direct"`` (store every layer). All three give the same gradient.

    Returns:
        x_L of shape (n, d), or the saved trajectory.
    """
    if not isinstance(field, AbstractField):
        raise TypeError(f"field must be a NeuralField (or another AbstractField), got {type(field).__name__}")
    check_adjoint(adjoint)
    x0 = x0 if isinstance(x0, jax.Array) else jnp.asarray(x0)
    squeeze = False
    if x0.ndim == 1 and field.d == 1:
        x0, squeeze = x0[:, None], True
    if x0.ndim != 2 or x0.shape[1] != field.d:
        raise ValueError(f"x0 must have shape (n, d) with d = {field.d} (the field's dimension), "
                         f"got shape {tuple(x0.shape)}")
    if not jnp.issubdtype(x0.dtype, jnp.number) or jnp.issubdtype(x0.dtype, jnp.complexfloating):
        raise TypeError(f"x0 must be real-valued, got dtype {x0.dtype}")
    if isinstance(field, NeuralField):
        x0 = x0.astype(jnp.result_type(x0.dtype, field.W.dtype))
    elif not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.result_type(float))
    _check_diffusion(diffusion, key)
    L = field.num_layers
    if save_every is not None:
        save_every = whole_number(save_every, "save_every")
        if L % save_every:
            raise ValueError(
                f"save_every={save_every} must divide the number of layers L={L} so that x_L is saved"
            )
    consts: tuple = ()
    if diffusion is not None and not callable(diffusion):
        diffusion, consts = _constant_diffusion, (jnp.asarray(float(diffusion), x0.dtype),)
    out = _resnet_kernel(field, x0, save_every, diffusion, consts, key, adjoint)
    return out[..., 0] if squeeze else out
