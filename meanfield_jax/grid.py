"""Uniform Cartesian finite-volume grids in 1-D and 2-D.

Cell i of a 1-D grid on [lo, hi] with n cells is [x_{i−1/2}, x_{i+1/2}], x_{i±1/2} = lo + (i + 1/2 ± 1/2) Δx,
and Δx = (hi − lo)/n; the unknowns are cell averages f_i = (1/Δx) ∫_cell f. Integrals are the midpoint sum
Σ_i f_i Δx, which is exact for cell averages. ``project`` computes cell averages of a function by
Gauss–Legendre quadrature on each cell (exact for polynomials of degree 2q − 1 with q nodes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from .arguments import concrete_scalar

__all__ = ["Grid1D", "Grid2D"]


def _check_axis(lo, hi, n, name: str) -> tuple[float, float, int]:
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: bounds must be numbers, got lo={lo!r}, hi={hi!r}") from exc
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name}: bounds must be finite, got lo={lo}, hi={hi}")
    if lo >= hi:
        raise ValueError(f"{name}: need lo < hi, got lo={lo}, hi={hi}")
    if not math.isfinite(hi - lo):
        raise ValueError(f"{name}: the length hi - lo must be finite, got lo={lo}, hi={hi}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise ValueError(f"{name}: the number of cells must be an integer >= 2, got n={n!r}")
    return lo, hi, int(n)


def _cell_index(x: Array, axis: Grid1D) -> tuple[Array, Array]:
    """The cell of each coordinate on ``axis`` (x = hi in the last cell, as NumPy's histogram has it), and
    whether it is on the grid at all (not outside [lo, hi], not NaN: a NaN's cell index came out as 0)."""
    idx = jnp.clip(jnp.floor((x - axis.lo) / axis.dx), 0, axis.n - 1)  # x just below hi may round to n
    return idx.astype(jnp.int32), (x >= axis.lo) & (x <= axis.hi)


def _sample_weights(n: int, weights: ArrayLike | None, dtype) -> Array:
    """Each sample's share of the unit mass: equal, or ``weights`` normalised to sum 1."""
    if n == 0:
        raise ValueError("from_samples needs at least one sample, got none")
    if weights is None:
        return jnp.full((n,), 1.0 / n, dtype)
    w = jnp.asarray(weights, dtype)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), one per sample, got shape {tuple(w.shape)}")
    return w / jnp.sum(w)


def _gauss_nodes(a: Array, h: float, order: int) -> tuple[Array, Array]:
    """Gauss–Legendre nodes (..., q) and weights (q,) on the cells [a, a + h], weights summing to 1."""
    nodes, weights = np.polynomial.legendre.leggauss(order)
    x = a[:, None] + 0.5 * h * (1.0 + jnp.asarray(nodes, a.dtype))[None, :]
    return x, jnp.asarray(0.5 * weights, a.dtype)


class Grid1D(eqx.Module):
    """n uniform cells on [lo, hi]."""

    lo: float = eqx.field(static=True)
    hi: float = eqx.field(static=True)
    n: int = eqx.field(static=True)

    def __init__(self, lo: float, hi: float, n: int):
        self.lo, self.hi, self.n = _check_axis(lo, hi, n, "Grid1D")

    @property
    def d(self) -> int:
        return 1

    @property
    def shape(self) -> tuple[int]:
        return (self.n,)

    @property
    def dx(self) -> float:
        return (self.hi - self.lo) / self.n

    @property
    def cell_volume(self) -> float:
        return self.dx

    @property
    def faces(self) -> Array:
        """The n + 1 cell faces x_{i−1/2}, i = 0..n."""
        return self.lo + self.dx * jnp.arange(self.n + 1, dtype=jnp.result_type(float))

    @property
    def x(self) -> Array:
        """The n cell centres."""
        return self.lo + self.dx * (jnp.arange(self.n, dtype=jnp.result_type(float)) + 0.5)

    @property
    def centres(self) -> tuple[Array]:
        return (self.x,)

    def integrate(self, f: ArrayLike, axis: int = -1) -> Array:
        """∫ f dx of cell averages (the midpoint sum Σ f_i Δx) along ``axis``."""
        return jnp.sum(jnp.asarray(f), axis=axis) * self.dx

    def project(self, fn: Callable[[Array], Array], order: int = 4) -> Array:
        """Cell averages (1/Δx) ∫_cell fn(x) dx by ``order``-point Gauss–Legendre quadrature."""
        xq, wq = _gauss_nodes(self.faces[:-1], self.dx, order)
        values = jnp.asarray(fn(xq))  # a constant, or a batch of functions on leading axes
        return jnp.broadcast_to(values, jnp.broadcast_shapes(values.shape, xq.shape)) @ wq

    def from_samples(self, x: ArrayLike, weights: ArrayLike | None = None, bandwidth: float | None = None):
        """Density of particles x (shape (n,) or (n, 1)) as cell averages, normalised to mass 1 (the
        ``weights``, if given, are normalised to sum 1).

        With ``bandwidth=None`` this is the histogram on the grid (mass outside [lo, hi] is dropped, and a
        sample at x = hi is in the last cell); with a bandwidth h > 0, the exact cell averages of a Gaussian
        kernel density estimate.
        """
        x = jnp.asarray(x)
        if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] != 1):
            raise ValueError(f"x must have shape (n,) or (n, 1) on a Grid1D, got shape {tuple(x.shape)}")
        x = x.reshape(-1)
        w = _sample_weights(x.shape[0], weights, jnp.result_type(x, float))
        if bandwidth is None:
            idx, inside = _cell_index(x, self)
            counts = jnp.zeros(self.n, w.dtype).at[jnp.where(inside, idx, 0)].add(jnp.where(inside, w, 0.0))
            return counts / self.dx
        h = concrete_scalar(bandwidth)  # None while traced: not checked
        if isinstance(bandwidth, bool) or (h is not None and not (h > 0 and math.isfinite(h))):
            raise ValueError(f"bandwidth must be a finite number > 0 or None, got bandwidth={bandwidth!r}")
        from jax.scipy.special import ndtr

        cdf = ndtr((self.faces[:, None] - x[None, :]) / bandwidth) @ w
        return jnp.diff(cdf) / self.dx


class Grid2D(eqx.Module):
    """nx × ny uniform cells on [xlo, xhi] × [ylo, yhi]; arrays are indexed f[i, j] (ij indexing)."""

    xaxis: Grid1D
    yaxis: Grid1D

    def __init__(self, xspec: tuple[float, float, int], yspec: tuple[float, float, int]):
        for name, spec in (("x", xspec), ("y", yspec)):
            if len(tuple(spec)) != 3:
                raise ValueError(f"Grid2D: the {name} axis must be (lo, hi, n), got {spec!r}")
        self.xaxis = Grid1D(*xspec)
        self.yaxis = Grid1D(*yspec)

    @property
    def d(self) -> int:
        return 2

    @property
    def shape(self) -> tuple[int, int]:
        return (self.xaxis.n, self.yaxis.n)

    @property
    def dx(self) -> float:
        return self.xaxis.dx

    @property
    def dy(self) -> float:
        return self.yaxis.dx

    @property
    def cell_volume(self) -> float:
        return self.dx * self.dy

    @property
    def x(self) -> Array:
        return self.xaxis.x

    @property
    def y(self) -> Array:
        return self.yaxis.x

    @property
    def centres(self) -> tuple[Array, Array]:
        return (self.x, self.y)

    def mesh(self) -> tuple[Array, Array]:
        """Cell-centre coordinates X, Y of shape (nx, ny), ij indexing."""
        return jnp.meshgrid(self.x, self.y, indexing="ij")

    def integrate(self, f: ArrayLike) -> Array:
        """∫∫ f dx dy over the last two axes."""
        return jnp.sum(jnp.asarray(f), axis=(-2, -1)) * self.cell_volume

    def project(self, fn: Callable[[Array, Array], Array], order: int = 4) -> Array:
        """Cell averages of fn(X, Y) by tensor Gauss–Legendre quadrature."""
        xq, wx = _gauss_nodes(self.xaxis.faces[:-1], self.dx, order)
        yq, wy = _gauss_nodes(self.yaxis.faces[:-1], self.dy, order)
        X = xq[:, None, :, None]
        Y = yq[None, :, None, :]
        vals = jnp.asarray(fn(X, Y))
        return jnp.einsum("ijab,a,b->ij", jnp.broadcast_to(vals, (*self.shape, order, order)), wx, wy)

    def from_samples(self, xy: ArrayLike, weights: ArrayLike | None = None) -> Array:
        """2-D histogram of particles xy (n, 2) as cell averages, normalised to mass 1 (as in 1-D: weights
        normalised, mass outside dropped, the upper edges in the last cells)."""
        xy = jnp.asarray(xy)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"xy must have shape (n, 2) on a Grid2D, got shape {tuple(xy.shape)}")
        w = _sample_weights(xy.shape[0], weights, jnp.result_type(xy, float))
        (i, inside_x), (j, inside_y) = _cell_index(xy[:, 0], self.xaxis), _cell_index(xy[:, 1], self.yaxis)
        inside = inside_x & inside_y
        counts = jnp.zeros(self.shape, w.dtype).at[jnp.where(inside, i, 0), jnp.where(inside, j, 0)].add(
            jnp.where(inside, w, 0.0)
        )
        return counts / self.cell_volume
