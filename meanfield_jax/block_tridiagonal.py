"""Block-tridiagonal systems with diagonal off-diagonal blocks, solved directly (block Thomas algorithm).

A finite-volume operator on an nx × ny grid, numbered column by column, couples column i only to columns
i ± 1, and only cell to cell (j to j): the system reads

    diag(l_i) x_{i−1} + A_i x_i + diag(u_i) x_{i+1} = r_i,   i = 0, …, nb − 1   (l_0 = u_{nb−1} = 0),

with dense m × m diagonal blocks A_i. Block Gaussian elimination,

    S_0 = A_0,  S_i = A_i − diag(l_i) C_{i−1},  C_i = S_i^{−1} diag(u_i),
    d_i = S_i^{−1} (r_i − l_i ∘ d_{i−1}),  x_{nb−1} = d_{nb−1},  x_i = d_i − C_i x_{i+1},

costs O(nb m³) operations and O(nb m²) memory. The systems S_i^{−1} [I, r] are solved by Gauss–Jordan
elimination without pivoting, which is stable for the matrices the Fokker–Planck steps produce: column
diagonally dominant ones and non-singular M-matrices, whose Schur complements (the S_i and every
intermediate pivot block) keep that property, so no pivot vanishes and no entry grows. Everything is a
``lax`` loop of small dense updates: cheap to compile, fast on CPU and GPU, and differentiable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array

__all__ = ["block_tridiagonal_solve", "gauss_jordan_solve"]


def gauss_jordan_solve(S: Array, B: Array) -> Array:
    """S^{−1} B by Gauss–Jordan elimination without pivoting (S diagonally dominant or an M-matrix)."""
    m = S.shape[0]

    def eliminate(p, M):
        row = M[p] / M[p, p]
        column = M[:, p].at[p].set(0.0)
        return (M - column[:, None] * row[None, :]).at[p].set(row)

    return jax.lax.fori_loop(0, m, eliminate, jnp.concatenate([S, B], axis=1))[:, m:]


def block_tridiagonal_solve(lower: Array, blocks: Array, upper: Array, rhs: Array) -> Array:
    """Solve the system above.

    Args:
        lower: (nb, m), l_i (the coupling of block i to block i − 1; l_0 is ignored).
        blocks: (nb, m, m), the diagonal blocks A_i.
        upper: (nb, m), u_i (the coupling of block i to block i + 1; u_{nb−1} is ignored).
        rhs: (nb, m).

    Returns:
        x of shape (nb, m).
    """
    m = blocks.shape[-1]
    eye = jnp.eye(m, dtype=blocks.dtype)
    upper = upper.at[-1].set(0.0)

    def eliminate(carry, row):
        C_prev, d_prev = carry
        l, A, u, r = row
        S = A - l[:, None] * C_prev
        solved = gauss_jordan_solve(S, jnp.concatenate([eye, (r - l * d_prev)[:, None]], axis=1))
        C, d = solved[:, :m] * u[None, :], solved[:, m]
        return (C, d), (C, d)

    init = (jnp.zeros_like(eye), jnp.zeros_like(rhs[0]))
    _, (C, d) = jax.lax.scan(eliminate, init, (lower.at[0].set(0.0), blocks, upper, rhs))

    def substitute(x_next, row):
        C_i, d_i = row
        x = d_i - C_i @ x_next
        return x, x

    _, x = jax.lax.scan(substitute, jnp.zeros_like(rhs[0]), (C, d), reverse=True)
    return x
