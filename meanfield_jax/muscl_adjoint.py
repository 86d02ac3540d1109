"""The discrete adjoint of one SSP Runge–Kutta step of the MUSCL scheme (1-D and 2-D), written out.

A step of :func:`~meanfield_jax.transport.solve_vlasov` with the face velocities F of one layer runs the
stages (Shu–Osher form, :func:`~meanfield_jax.kinetic_common.ssp_rk_stages`)

    v₀ = u,   v_{k+1} = a_k u + c_k (v_k + E(v_k)),   (a₀, c₀) = (0, 1),

on the state v = (f, m) of cell averages and wall masses. In 1-D the forward-Euler increment of f is
E(f)_i = G_i − G_{i+1}, with the Courant-scaled upwind flux on the faces j = 0 … n,

    G_j = C⁺_j f⁻_j + C⁻_j f⁺_j,   C = F Δt/h,   f⁻_j = P_{j−1} + σ_{j−1},   f⁺_j = P_j − σ_j,

where P holds the cells −1 … n (one ghost cell beyond each wall, by the wall rule) and σ = φ(Δ⁻, Δ⁺)/2 the
limited half slopes; the wall masses grow by h (−G₀, G_n) (periodic walls: by nothing). In 2-D E is the
sum of such differences along each axis, and a wall's mass grows by the cell volume times the sum of G
over its faces; the adjoint below then runs along each axis and the cotangents of f add up.

For the cotangent (p, q) of v_{k+1} a stage's adjoint is, with p̃ = c_k p, q̃ = c_k q:

    ḡG_j = p̃_j − p̃_{j−1}  (p̃ = 0 beyond the walls)  − h q̃₀ [j = 0] + h q̃₁ [j = n],
    ∂/∂C_j = ḡG_j · (f⁻_j if C_j > 0, f⁺_j if C_j < 0, (f⁻_j + f⁺_j)/2 if C_j = 0),
    ḡf⁻_j = C⁺_j ḡG_j,   ḡf⁺_j = C⁻_j ḡG_j,
    ḡσ_i = ḡf⁻_{i+1} − ḡf⁺_i,   ḡP_i = ḡf⁻_{i+1} + ḡf⁺_i + ḡΔ⁻_i − ḡΔ⁺_i − ḡΔ⁻_{i+1} + ḡΔ⁺_{i−1},
    ḡΔ⁻_i = ½ ∂_aφ_i ḡσ_i,   ḡΔ⁺_i = ½ ∂_bφ_i ḡσ_i,

then the ghost cells are folded back onto the cells they copy (the transpose of the padding) and p̃ is added
(the identity in v + E(v)); q passes as q̃, and u collects a_k (p, q) from every stage. The Courant numbers'
cotangents of all stages, summed, give those of the face velocities, ḡF = (Δt/h) Σ_k ∂/∂C (each stage adds
its own in the kernel that forms it, the last one taken scales the sum), and that of Δt, ⟨ḡF, F⟩/Δt (one
reduction per step). This is the derivative JAX forms of the same stages (the kinks of φ and of C± included:
at C = 0 JAX splits max and min evenly), in fewer passes over memory. Each stage's adjoint is computed behind
a conditional (:func:`~meanfield_jax.conditional.behind_conditional`), so that XLA writes its results with
kernels split across threads, and the reduction for Δt reads them. Within a stage every term is a slice of
a few padded arrays (the cells; p̃ with the walls' terms beyond it; C; the half slopes with φ's partials,
:func:`~meanfield_jax.reconstruction.half_slopes_with_partials`, formed once, behind a conditional on grids
of fewer than ``UNCONDITIONAL_TABLE_FROM`` cells), so that XLA forms ḡf in one pass and ∂/∂C in another.
XLA's CPU backend writes each output of that conditional by a kernel of its own, which forms the one-sided
differences and compares them again; for minmod and MC the two partials are multiples of 1/8 and go into
one array (:func:`~meanfield_jax.reconstruction.pack_half_partials`), unpacked exactly where it is read.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .conditional import behind_conditional
from .kinetic_common import GHOST_PAD_MODES, pad_axis, ssp_stage_weights
from .reconstruction import (
    LIMITERS,
    half_slopes_with_partials,
    pack_half_partials,
    packs_partials,
    unpack_half_partials,
)

__all__ = ["ssp_step_adjoint", "stage_adjoint"]


# From this many cells φ's two partials are written as one array (reconstruction.pack_half_partials):
# one kernel fewer per stage and axis. Discrete gradients, one process, calls interleaved, bitwise the same
# (measured): 1-D 10⁵ cells 0.93-0.94x the time, 2-D 256² 0.89-0.94x, 512² 0.92-0.94x, 1024² 0.87-0.96x;
# below, no gain (1-D 10³ cells 1.15x and 1.70x, 3·10³ 1.07x, 10⁴ 1.01-1.03x; 128² 0.97x and 1.05x).
PACKED_PARTIALS_FROM = 2**15

# From this many cells the slopes' table is formed without its conditional: XLA then fuses the limiter into
# the kernels that pad the table's columns instead of writing it twice (bitwise the same gradients).
# Discrete gradients, one process, calls interleaved, without / with the conditional: float64 2-D 384²
# 0.88x, 512² 0.80-0.89x, 1024² 0.91x, 256² 1.03-1.05x, 128² 1.00x; 1-D 3·10⁵ cells 0.89x, 10⁵ 0.95-0.99x,
# 10⁴ 1.05x, 10³ 1.04x; float32 2-D 384² 0.94x, 512² 0.92x, 724² 0.92x, 1024² 0.94x, 256² 1.07x.
UNCONDITIONAL_TABLE_FROM = 2**17


def stage_adjoint(
    limiter: str, boundary: str, spacing: tuple[float, ...], courant: tuple[Array, ...], f: Array, p: Array,
    q: Array, earlier: tuple[Array, ...] | None = None, scale: tuple[Array, ...] | None = None,
) -> tuple[Array, tuple[Array, ...]]:
    """(ḡf, ∂/∂C per axis) of one forward-Euler increment f ↦ (f + E(f), m + wall masses) at cell averages
    ``f`` (1-D or 2-D) with Courant numbers ``courant`` (one array per axis, on the faces −3 … n + 3 along
    it: zero beyond the n + 1 faces of the grid), for the cotangents p of f + E(f) and q of the wall masses
    (see the module docstring: dimension by dimension, each axis's faces as in 1-D, with the cell volume as
    the wall masses' factor); ∂/∂C on the n + 1 faces. With ``earlier`` (∂/∂C of the stages already taken,
    per axis) and ``scale`` (per axis) the second result is (earlier + ∂/∂C) · scale instead, formed in the
    same pass over the faces."""
    volume = float(np.prod(spacing))
    g_f, g_courant = p, []
    for axis, c in enumerate(courant):
        g_axis, g_c = _axis_adjoint(limiter, boundary, volume, axis, c, f, p, q[2 * axis : 2 * axis + 2])
        if earlier is not None:
            g_c = earlier[axis] + g_c
        if scale is not None:
            g_c = g_c * scale[axis]
        g_f, g_courant = g_f + g_axis, [*g_courant, g_c]
    return g_f.astype(f.dtype), tuple(g_courant)


def _axis_adjoint(
    limiter: str, boundary: str, volume: float, axis: int, courant: Array, f: Array, p: Array, q: Array
) -> tuple[Array, Array]:
    """The part of :func:`stage_adjoint` from the faces normal to ``axis``: (ḡf less p, ∂/∂C), for
    ``courant`` given on the faces −3 … n + 3 (zero beyond the walls).

    Every term is a slice of padded arrays (the cells, p with the wall masses' cotangents beyond it, C, and
    the slopes with φ's partials, formed once; behind a conditional on small grids): XLA then forms ḡP in
    one pass and ∂/∂C in another, instead of writing each padded intermediate to memory."""
    n = f.shape[axis]

    def cut(x: Array, start: int, length: int) -> Array:
        return jax.lax.slice_in_dim(x, start, start + length, axis=axis)

    def layer(x: Array) -> Array:  # a one-cell-thick layer of value x along the axis
        shape = list(f.shape)
        shape[axis] = 1
        return jnp.broadcast_to(jnp.asarray(x, f.dtype), shape)

    # the cells with two ghost cells beyond each wall, and the transpose of that padding
    padded, unpad = jax.vjp(lambda g: pad_axis(g, axis, 2, 2, GHOST_PAD_MODES[boundary]), f)

    packed = packs_partials(LIMITERS[limiter]) and f.size >= PACKED_PARTIALS_FROM

    def padded_slopes(g: Array) -> list[Array]:  # zero beyond the cells −1 … n
        half, d_minus, d_plus = half_slopes_with_partials(LIMITERS[limiter], axis, g)
        columns = (half, pack_half_partials(d_minus, d_plus)) if packed else (half, d_minus, d_plus)
        return [pad_axis(x, axis, 2, 2) for x in columns]

    # (σ, ½ ∂φ/∂Δ⁻, ½ ∂φ/∂Δ⁺) on the cells −3 … n + 2, the partials packed into one array where exact
    table = padded_slopes(padded) if f.size >= UNCONDITIONAL_TABLE_FROM else behind_conditional(
        padded_slopes, padded
    )

    def slopes(first: int, length: int) -> tuple[Array, ...]:
        """(σ, ½ ∂φ/∂Δ⁻, ½ ∂φ/∂Δ⁺) on the cells first … first + length − 1."""
        columns = tuple(cut(x, first + 3, length) for x in table)
        return (columns[0], *unpack_half_partials(columns[1])) if packed else columns

    # ḡG_j = p̂_j − p̂_{j−1} on the faces j = −3 … n + 3, with p̂ = p on the cells, h q̃₀ and h q̃₁ just
    # beyond the walls (which gives the wall masses' terms at j = 0 and n) and zero further out
    walls = (0.0, 0.0) if boundary == "periodic" else (volume * q[0], volume * q[1])
    p_hat = jnp.concatenate([layer(0.0)] * 3 + [layer(walls[0]), p, layer(walls[1])] + [layer(0.0)] * 3, axis)
    g_flux = cut(p_hat, 1, n + 7) - cut(p_hat, 0, n + 7)  # faces −3 … n + 3

    def cell_terms(first: int) -> tuple[Array, Array, Array]:
        """(ḡ of P + σ plus ḡ of P − σ, ḡΔ⁻, ḡΔ⁺) on the n + 4 cells from ``first``, zero outside −1 … n."""
        upper = jnp.maximum(cut(courant, first + 4, n + 4), 0.0) * cut(g_flux, first + 4, n + 4)  # face c + 1
        lower = jnp.minimum(cut(courant, first + 3, n + 4), 0.0) * cut(g_flux, first + 3, n + 4)  # face c
        g_half = upper - lower
        _, d_minus, d_plus = slopes(first, n + 4)
        return upper + lower, d_minus * g_half, d_plus * g_half

    edges, g_a, g_b = cell_terms(-2)
    g_padded = edges + g_a - g_b - cell_terms(-1)[1] + cell_terms(-3)[2]  # cells −2 … n + 1
    # the edge values on the faces 0 … n: P + σ of the cell below, P − σ of the cell above
    below = cut(padded, 1, n + 1) + slopes(-1, n + 1)[0]
    above = cut(padded, 2, n + 1) - slopes(0, n + 1)[0]
    c = cut(courant, 3, n + 1)
    edge = jnp.where(c > 0, below, jnp.where(c < 0, above, 0.5 * (below + above)))
    return unpad(g_padded)[0], cut(g_flux, 3, n + 1) * edge


def ssp_step_adjoint(
    limiter: str, boundary: str, spacing: tuple[float, ...], method: str, velocity: tuple[Array, ...],
    dt: Array, stages: list[tuple[Array, Array]], p: Array, q: Array,
) -> tuple[Array, Array, tuple[Array, ...], Array]:
    """(ḡf, ḡm, ḡF per axis, ḡΔt) of one SSP step of ``method`` with face velocities F = ``velocity`` (one
    array per axis), given its stage values ``stages`` = [v₀, …, v_{m−1}] (each (f, m)) and the cotangents
    (p, q) of its result."""
    # the Courant numbers on the faces −3 … n + 3 along each axis (zero beyond the walls), as stages read them
    courant = tuple(pad_axis(v * (dt / h), axis, 3, 3) for axis, (v, h) in enumerate(zip(velocity, spacing)))
    g_u = (jnp.zeros_like(p), jnp.zeros_like(q))
    # the stages' ∂/∂C summed, and times Δt/h (∂C/∂F) at the first stage, the last one taken, in the
    # kernels that form them (three passes over each axis's faces fewer than adding and scaling apart)
    g_courant, scale = None, tuple(dt / h for h in spacing)
    weights = list(zip(ssp_stage_weights(method), stages))
    for k, ((a, c), (f, _)) in reversed(list(enumerate(weights))):
        if a:
            g_u = (g_u[0] + a * p, g_u[1] + a * q)
        if c != 1.0:
            p, q = c * p, c * q
        p, g_courant = behind_conditional(
            functools.partial(stage_adjoint, limiter, boundary, spacing), courant, f, p, q, g_courant,
            scale if k == 0 else None,
        )
    # ⟨∂/∂C, F⟩/h = ⟨ḡF, F⟩/Δt (the adjoint runs on steps of non-zero length only)
    g_dt = sum(jnp.vdot(g, v) for g, v in zip(g_courant, velocity)) / jnp.where(dt != 0, dt, 1)
    return g_u[0] + p, g_u[1] + q, g_courant, g_dt
