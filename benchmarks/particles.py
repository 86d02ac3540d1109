"""The particle ResNet against diffrax and a NumPy loop: forward pass and gradient.

Problem: x_{l+1} = x_l + Δt tanh(W_l x_l + b_l), l = 0, …, L − 1, Δt = T / L, T = 1, float32, n particles of
dimension d (W_l ~ N(0, 1/d), b_l ~ N(0, 0.01), x_0 ~ N(0, I)); the gradient is that of the scalar
J = mean_m |x_{L,m}|² with respect to W and b.

Implementations (all jit-compiled once, compilation timed apart):

* ours: ``mfj.resnet_forward(field, x)`` on (n, d) arrays (the kernel picks its layout); gradient with
  ``adjoint="discrete"`` (hand-written adjoint) and ``"checkpointed"`` (the default).
* diffrax: ``diffeqsolve(ODETerm(F), Euler(), t0=0, t1=T, dt0=T/L, stepsize_controller=ConstantStepSize(),
  max_steps=L)`` with the layer l = round(t / Δt) looked up in F, in its fastest layout — particles last,
  y of shape (d, n), F = tanh(W_l y + b_l), handed over already transposed — and in the natural layout
  (n, d), F = tanh(y W_lᵀ + b_l); gradient with diffrax's default adjoint (``RecursiveCheckpointAdjoint``).
* numpy: a Python loop over the layers of ``x + dt * np.tanh(x @ W[l].T + b[l])`` (forward only), its BLAS
  on one thread (``OPENBLAS_NUM_THREADS=1`` unless set otherwise).

Timing: every implementation of a group (the forward passes; the gradients) is compiled apart (compile time
reported), called once as a warm-up, then all are called in turn for as many rounds as fit in 10 s (at
least ``--repeats``, at most 50), each round in its own order, so that bursts of load from other
processes hit them alike and none always runs right after the slow NumPy loop. Reported per
case: the median wall time (also the minimum and the median process CPU time), particle-steps/s
(n L / time), XLA's temporary buffer size of each compiled gradient (its working memory), the ratios to
each peer, the agreement of the outputs, and the fraction of this machine's compute limit
(``common.compute_limits``) reached by our forward pass.
A depth scan (L = 10, 100, 1000 at one n, d = 2) gives time and gradient memory against the depth.

Stochastic ResNet (Euler–Maruyama, x_{l+1} = x_l + Δt tanh(W_l x_l + b_l) + sqrt(2 K Δt) ξ_l, K = 0.05,
ξ_l = ``normal(fold_in(key, l), (n, d))``), n up to 10⁵: ours with ``diffusion=K, key=key`` against diffrax's
``Euler()`` on ``MultiTerm(ODETerm(F), ControlTerm(G, noise))`` in the (d, n) layout, G the diagonal
``lineax.DiagonalLinearOperator`` of sqrt(2K) and the control a path that replays the same ξ_l (so both
integrate the same sample path, and their outputs are compared); forward and gradient (default adjoints as
above; our discrete adjoint replays ξ_l from the key). diffrax's control draws ξ_l with ``jax.random.normal``
(the peer of the goals) and, as a second peer, with our fused draw ``meanfield_jax.threefry.normal`` (the
same values), so that the gain of the draw and of the rest are reported apart.

Run ``python benchmarks/particles.py [--quick] [--d 2] [--n 10000 100000] [--repeats 5]``; the results go to
``benchmarks/results/particles[-quick]-<UTC time>.json`` with a log–log plot next to it (never overwritten).
"""

from __future__ import annotations

import os

# NumPy's BLAS on one thread: its idle workers spin for a while after each product and would slow down
# whichever call is timed next (and the NumPy loop is a single-thread baseline). Set before NumPy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import functools
import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import meanfield_jax as mfj
from meanfield_jax import threefry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_allocator_option,
    apply_allocator_option,
    compute_limits,
    label_loglog_axes,
    new_payload,
    particle_step_limit_s,
    save_figure,
    save_payload,
    time_compiled_interleaved,
    xla_memory,
)

T = 1.0
GOALS = {
    "forward_time_at_most_x_diffrax_particles_last": 1.05,
    "forward_speedup_vs_diffrax_particles_first_at_least": 2.5,
    "forward_speedup_vs_numpy_at_least": 10.0,
    "gradient_speedup_vs_diffrax_at_least": 3.0,
    "gradient_to_forward_at_most": 4.0,
    "gradient_memory_growth_for_10x_depth_below": 3.0,
}
BUDGET_S = 10.0  # timed rounds per group of implementations: as many as fit (at least --repeats, at most 50)
DIFFUSION = 0.05  # K of the stochastic cases
STOCHASTIC_MAX_N = 10**5  # the stochastic cases take the main grid's n up to this


@dataclass(frozen=True)
class Case:
    n: int
    d: int
    layers: int

    @property
    def particle_steps(self) -> int:
        return self.n * self.layers


def problem(case: Case, seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    kW, kb, kx = jax.random.split(jax.random.PRNGKey(seed), 3)
    W = jax.random.normal(kW, (case.layers, case.d, case.d), jnp.float32) / np.sqrt(case.d)
    b = 0.1 * jax.random.normal(kb, (case.layers, case.d), jnp.float32)
    x = jax.random.normal(kx, (case.n, case.d), jnp.float32)
    return W, b, x


def loss(x: jax.Array, feature_axis: int) -> jax.Array:
    """J = mean over particles of |x|²."""
    return jnp.mean(jnp.sum(x**2, axis=feature_axis))


# ---- the implementations ---------------------------------------------------------------------------------
def ours_forward(field: mfj.NeuralField, x: jax.Array) -> jax.Array:
    return mfj.resnet_forward(field, x)


def ours_gradient(adjoint: str):
    return jax.grad(lambda field, x: loss(mfj.resnet_forward(field, x, adjoint=adjoint), -1))


def ours_stochastic_forward(field: mfj.NeuralField, x: jax.Array, key: jax.Array) -> jax.Array:
    return mfj.resnet_forward(field, x, diffusion=DIFFUSION, key=key)


def ours_stochastic_gradient(adjoint: str):
    def J(field, x, key):
        return loss(mfj.resnet_forward(field, x, diffusion=DIFFUSION, key=key, adjoint=adjoint), -1)

    return jax.grad(J)


@functools.cache
def _replayed_noise():
    """diffrax's control for the stochastic cases: the increment over [t0, t1] of layer l = round(t0 / Δt)
    is sqrt(t1 − t0) ξ_l with our draw ξ_l = ``normal(fold_in(key, l), (n, d))``, handed over in the (d, n)
    layout; drawn by ``jax.random.normal``, as a diffrax user's Brownian path is, or with ``fused`` by
    our ``meanfield_jax.threefry.normal`` (the same values). Increments only (Euler asks for nothing else).
    A class made on first use: diffrax is an optional dependency."""
    import diffrax
    import equinox as eqx

    class ReplayedNoise(diffrax.AbstractPath):
        key: jax.Array
        shape: tuple[int, int] = eqx.field(static=True)  # (d, n)
        dt: float = eqx.field(static=True)
        fused: bool = eqx.field(static=True, default=False)
        t0: float = eqx.field(static=True, default=0.0)
        t1: float = eqx.field(static=True, default=T)

        def evaluate(self, t0, t1=None, left=True):
            del left
            if t1 is None:
                raise NotImplementedError("the replayed noise gives increments over [t0, t1] only")
            l = jnp.round(t0 / self.dt).astype(jnp.int32)
            draw = threefry.normal if self.fused else jax.random.normal
            xi = draw(jax.random.fold_in(self.key, l), self.shape[::-1], jnp.float32).T
            return jnp.sqrt(t1 - t0).astype(xi.dtype) * xi

    return ReplayedNoise


def diffrax_solve(
    W: jax.Array,
    b: jax.Array,
    y0: jax.Array,
    particles_last: bool,
    key: jax.Array | None = None,
    fused_noise: bool = False,
) -> jax.Array:
    """diffrax's Euler: the ODE, or with ``key`` (particles last only) the SDE with K = DIFFUSION, its noise
    drawn as ``_replayed_noise`` says."""
    import diffrax

    layers = W.shape[0]
    dt = T / layers

    def velocity(t, y, args):
        W, b = args
        l = jnp.clip(jnp.round(t / dt).astype(jnp.int32), 0, layers - 1)
        if particles_last:
            return jnp.tanh(W[l] @ y + b[l][:, None])
        return jnp.tanh(y @ W[l].T + b[l][None, :])

    terms = diffrax.ODETerm(velocity)
    if key is not None:
        import lineax

        scale = jnp.sqrt(2.0 * DIFFUSION).astype(y0.dtype)
        noise = _replayed_noise()(key, y0.shape, dt, fused_noise)

        def diagonal(t, y, args):
            return lineax.DiagonalLinearOperator(jnp.full_like(y, scale))

        terms = diffrax.MultiTerm(terms, diffrax.ControlTerm(diagonal, noise))
    solution = diffrax.diffeqsolve(
        terms, diffrax.Euler(), t0=0.0, t1=T, dt0=dt, y0=y0, args=(W, b),
        stepsize_controller=diffrax.ConstantStepSize(), max_steps=layers,
    )
    return solution.ys[-1]


def diffrax_gradient(particles_last: bool):
    feature_axis = 0 if particles_last else -1
    return jax.grad(lambda W, b, y0: loss(diffrax_solve(W, b, y0, particles_last), feature_axis), (0, 1))


def diffrax_stochastic_gradient(fused_noise: bool = False):
    return jax.grad(lambda W, b, y0, key: loss(diffrax_solve(W, b, y0, True, key, fused_noise), 0), (0, 1))


def numpy_forward(W: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    dt = np.float32(T / W.shape[0])
    for l in range(W.shape[0]):
        x = x + dt * np.tanh(x @ W[l].T + b[l])
    return x


# ---- one case ---------------------------------------------------------------------------------------------
def _rate(case: Case, timing: dict) -> float:
    return case.particle_steps / timing["median_s"]


def _rates(case: Case, forward: dict, grad: dict) -> dict:
    """Particle-steps/s of each forward pass and each gradient (``<name>_gradient``)."""
    return {
        **{name: _rate(case, v) for name, v in forward.items()},
        **{f"{name}_gradient": _rate(case, v) for name, v in grad.items()},
    }


def _max_relative_difference(a: jax.Array, reference: jax.Array) -> float:
    return float(jnp.max(jnp.abs(a - reference)) / jnp.max(jnp.abs(reference)))


def run_case(case: Case, repeats: int, limits: dict, numpy_peer: bool = True) -> dict:
    W, b, x = problem(case)
    field = mfj.NeuralField(W, b, activation="tanh", T=T)
    x_dn = jnp.asarray(x.T)  # diffrax's fastest layout, handed over for free
    Wn, bn, xn = (np.asarray(a) for a in (W, b, x))
    forward, compiled, y = time_compiled_interleaved(
        {
            "ours": (ours_forward, (field, x)),
            "diffrax_particles_last": (lambda W, b, y: diffrax_solve(W, b, y, True), (W, b, x_dn)),
            "diffrax_particles_first": (lambda W, b, y: diffrax_solve(W, b, y, False), (W, b, x)),
        },
        repeats,
        BUDGET_S,
        {"numpy": lambda: numpy_forward(Wn, bn, xn)} if numpy_peer else {},
    )
    memory = {"ours_forward": xla_memory(compiled["ours"])}
    agreement = {
        "forward_max_abs_diff_diffrax": float(
            max(jnp.max(jnp.abs(y["ours"] - y["diffrax_particles_last"].T)),
                jnp.max(jnp.abs(y["ours"] - y["diffrax_particles_first"])))
        )
    }
    if numpy_peer:
        agreement["forward_max_abs_diff_numpy"] = float(np.max(np.abs(np.asarray(y["ours"]) - y["numpy"])))

    grad, compiled, g = time_compiled_interleaved(
        {
            "ours_discrete": (ours_gradient("discrete"), (field, x)),
            "ours_checkpointed": (ours_gradient("checkpointed"), (field, x)),
            "diffrax_particles_last": (diffrax_gradient(True), (W, b, x_dn)),
            "diffrax_particles_first": (diffrax_gradient(False), (W, b, x)),
        },
        repeats,
        BUDGET_S,
    )
    memory.update({f"{name}_gradient": xla_memory(exe) for name, exe in compiled.items()})
    reference = g["diffrax_particles_last"][0]
    agreement["gradient_W_max_rel_diff_diffrax"] = _max_relative_difference(g["ours_discrete"].W, reference)

    t = {name: v["median_s"] for name, v in forward.items()}
    tg = {name: v["median_s"] for name, v in grad.items()}
    best_dfx_grad = min(tg["diffrax_particles_last"], tg["diffrax_particles_first"])
    ratios = {
        "forward_time_over_diffrax_particles_last": t["ours"] / t["diffrax_particles_last"],
        "forward_speedup_vs_diffrax_particles_first": t["diffrax_particles_first"] / t["ours"],
        "gradient_speedup_discrete_vs_diffrax": best_dfx_grad / tg["ours_discrete"],
        "gradient_speedup_checkpointed_vs_diffrax": best_dfx_grad / tg["ours_checkpointed"],
        "gradient_to_forward_discrete": tg["ours_discrete"] / t["ours"],
        "gradient_to_forward_checkpointed": tg["ours_checkpointed"] / t["ours"],
    }
    if numpy_peer:
        ratios["forward_speedup_vs_numpy"] = t["numpy"] / t["ours"]
    best = {name: v["min_s"] for name, v in forward.items()}
    best_g = {name: v["min_s"] for name, v in grad.items()}
    ratios_of_minimum_times = {
        "forward_time_over_diffrax_particles_last": best["ours"] / best["diffrax_particles_last"],
        "forward_speedup_vs_diffrax_particles_first": best["diffrax_particles_first"] / best["ours"],
        "gradient_speedup_discrete_vs_diffrax": min(
            best_g["diffrax_particles_last"], best_g["diffrax_particles_first"]
        ) / best_g["ours_discrete"],
        "gradient_to_forward_discrete": best_g["ours_discrete"] / best["ours"],
    }
    if numpy_peer:
        ratios_of_minimum_times["forward_speedup_vs_numpy"] = best["numpy"] / best["ours"]
    limit = particle_step_limit_s(case.d, limits) * case.particle_steps
    return {
        **asdict(case),
        "particle_steps": case.particle_steps,
        "forward": forward,
        "gradient": grad,
        "particle_steps_per_s": _rates(case, forward, grad),
        "memory": memory,
        "ratios": ratios,
        "ratios_of_minimum_times": ratios_of_minimum_times,
        "agreement": agreement,
        "fraction_of_compute_limit_forward": limit / t["ours"],
    }


def run_stochastic_case(case: Case, repeats: int) -> dict:
    """The stochastic ResNet against diffrax's Euler–Maruyama on one sample path: forward and gradient."""
    W, b, x = problem(case)
    key = jax.random.PRNGKey(1)
    field = mfj.NeuralField(W, b, activation="tanh", T=T)
    x_dn = jnp.asarray(x.T)
    forward, compiled, y = time_compiled_interleaved(
        {
            "ours": (ours_stochastic_forward, (field, x, key)),
            "diffrax_particles_last": (
                lambda W, b, y, key: diffrax_solve(W, b, y, True, key), (W, b, x_dn, key)
            ),
            "diffrax_particles_last_fused_noise": (
                lambda W, b, y, key: diffrax_solve(W, b, y, True, key, True), (W, b, x_dn, key)
            ),
        },
        repeats,
        BUDGET_S,
    )
    memory = {"ours_forward": xla_memory(compiled["ours"])}
    grad, compiled, g = time_compiled_interleaved(
        {
            "ours_discrete": (ours_stochastic_gradient("discrete"), (field, x, key)),
            "ours_checkpointed": (ours_stochastic_gradient("checkpointed"), (field, x, key)),
            "diffrax_particles_last": (diffrax_stochastic_gradient(), (W, b, x_dn, key)),
            "diffrax_particles_last_fused_noise": (diffrax_stochastic_gradient(True), (W, b, x_dn, key)),
        },
        repeats,
        BUDGET_S,
    )
    memory.update({f"{name}_gradient": xla_memory(exe) for name, exe in compiled.items()})
    reference = g["diffrax_particles_last"][0]
    agreement = {
        "forward_max_abs_diff_diffrax": float(jnp.max(jnp.abs(y["ours"] - y["diffrax_particles_last"].T))),
        "forward_max_abs_diff_diffrax_fused_noise": float(
            jnp.max(jnp.abs(y["ours"] - y["diffrax_particles_last_fused_noise"].T))
        ),
        "gradient_W_max_rel_diff_diffrax": _max_relative_difference(g["ours_discrete"].W, reference),
    }
    t = {name: v["median_s"] for name, v in forward.items()}
    tg = {name: v["median_s"] for name, v in grad.items()}
    return {
        **asdict(case),
        "diffusion": DIFFUSION,
        "particle_steps": case.particle_steps,
        "forward": forward,
        "gradient": grad,
        "particle_steps_per_s": _rates(case, forward, grad),
        "memory": memory,
        "ratios": {
            "forward_time_over_diffrax_particles_last": t["ours"] / t["diffrax_particles_last"],
            "gradient_speedup_discrete_vs_diffrax": tg["diffrax_particles_last"] / tg["ours_discrete"],
            "gradient_speedup_checkpointed_vs_diffrax": (
                tg["diffrax_particles_last"] / tg["ours_checkpointed"]
            ),
            "gradient_to_forward_discrete": tg["ours_discrete"] / t["ours"],
            "gradient_to_forward_checkpointed": tg["ours_checkpointed"] / t["ours"],
            "forward_time_over_diffrax_fused_noise": t["ours"] / t["diffrax_particles_last_fused_noise"],
            "gradient_speedup_discrete_vs_diffrax_fused_noise": (
                tg["diffrax_particles_last_fused_noise"] / tg["ours_discrete"]
            ),
        },
        "agreement": agreement,
    }


def run_depth_scan(n: int, d: int, depths: list[int], repeats: int) -> dict:
    """Time and gradient working memory against the depth L at fixed n and d."""
    rows = []
    for layers in depths:
        W, b, x = problem(Case(n, d, layers))
        field = mfj.NeuralField(W, b, activation="tanh", T=T)
        x_dn = jnp.asarray(x.T)
        timings, compiled, _ = time_compiled_interleaved(
            {
                "ours_forward": (ours_forward, (field, x)),
                "ours_discrete_gradient": (ours_gradient("discrete"), (field, x)),
                "ours_checkpointed_gradient": (ours_gradient("checkpointed"), (field, x)),
                "diffrax_forward": (lambda W, b, y: diffrax_solve(W, b, y, True), (W, b, x_dn)),
                "diffrax_gradient": (diffrax_gradient(True), (W, b, x_dn)),
            },
            repeats,
            BUDGET_S,
        )
        row = {"layers": layers}
        for name, timing in timings.items():
            row[name] = {**timing, "memory": xla_memory(compiled[name])}
        rows.append(row)
        print(
            f"depth {layers:5d}: forward {row['ours_forward']['median_s']:.3g}s  gradient (discrete) "
            f"{row['ours_discrete_gradient']['median_s']:.3g}s, temp "
            f"{row['ours_discrete_gradient']['memory']['temp_bytes'] / 2**20:.2f} MiB  diffrax gradient "
            f"{row['diffrax_gradient']['median_s']:.3g}s, temp "
            f"{row['diffrax_gradient']['memory']['temp_bytes'] / 2**20:.2f} MiB",
            flush=True,
        )
    growth = {}
    for earlier, later in itertools.pairwise(rows):
        key = f"{later['layers']}/{earlier['layers']}"
        growth[key] = {
            name: later[name]["memory"]["temp_bytes"] / earlier[name]["memory"]["temp_bytes"]
            for name in ("ours_discrete_gradient", "ours_checkpointed_gradient", "diffrax_gradient")
        }
    return {"n": n, "d": d, "rows": rows, "gradient_temp_memory_growth": growth}


# ---- summary, plot, main ----------------------------------------------------------------------------------
def goals(results: list[dict], depth_scan: dict | None, stochastic: Sequence[dict] = ()) -> dict:
    """The worst case of each ratio over the cases, and which targets it meets (those measured)."""

    def worst(key, pick, rows):
        values = [r["ratios"][key] for r in rows if key in r["ratios"]]
        return pick(values) if values else None

    # (summary name, ratio, worst of, rows, met name, target, whether the value must be at most it)
    checks = [
        ("forward_time_over_diffrax_particles_last_max", "forward_time_over_diffrax_particles_last", max,
         results, "forward_within_5_percent_of_diffrax", "forward_time_at_most_x_diffrax_particles_last",
         True),
        ("forward_speedup_vs_diffrax_particles_first_min", "forward_speedup_vs_diffrax_particles_first", min,
         results, "forward_vs_diffrax_particles_first", "forward_speedup_vs_diffrax_particles_first_at_least",
         False),
        ("forward_speedup_vs_numpy_min", "forward_speedup_vs_numpy", min, results, "forward_vs_numpy",
         "forward_speedup_vs_numpy_at_least", False),
        ("gradient_speedup_discrete_vs_diffrax_min", "gradient_speedup_discrete_vs_diffrax", min, results,
         "gradient_vs_diffrax", "gradient_speedup_vs_diffrax_at_least", False),
        ("gradient_to_forward_discrete_max", "gradient_to_forward_discrete", max, results,
         "gradient_to_forward", "gradient_to_forward_at_most", True),
        ("stochastic_gradient_speedup_discrete_vs_diffrax_min", "gradient_speedup_discrete_vs_diffrax", min,
         stochastic, "stochastic_gradient_vs_diffrax", "gradient_speedup_vs_diffrax_at_least", False),
        ("stochastic_gradient_to_forward_discrete_max", "gradient_to_forward_discrete", max, stochastic,
         "stochastic_gradient_to_forward", "gradient_to_forward_at_most", True),
        ("stochastic_gradient_speedup_discrete_vs_diffrax_fused_noise_min",
         "gradient_speedup_discrete_vs_diffrax_fused_noise", min, stochastic, None, None, False),
    ]
    summary, met = {}, {}
    for name, key, pick, rows, goal, target, at_most in checks:
        value = worst(key, pick, rows)
        if value is None:
            continue
        summary[name] = value
        if goal is not None:
            met[goal] = value <= GOALS[target] if at_most else value >= GOALS[target]
    if depth_scan is not None and depth_scan["gradient_temp_memory_growth"]:
        growth = max(g["ours_discrete_gradient"] for g in depth_scan["gradient_temp_memory_growth"].values())
        summary["gradient_memory_growth_for_10x_depth_max"] = growth
        met["gradient_memory_growth"] = growth < GOALS["gradient_memory_growth_for_10x_depth_below"]
    return {"targets": GOALS, **summary, "met": met}


SERIES = {
    "ours forward": ("forward", "ours", "o-"),
    "diffrax (d, n) forward": ("forward", "diffrax_particles_last", "s-"),
    "diffrax (n, d) forward": ("forward", "diffrax_particles_first", "^-"),
    "numpy forward": ("forward", "numpy", "v-"),
    "ours gradient (discrete)": ("gradient", "ours_discrete", "o--"),
    "ours gradient (checkpointed)": ("gradient", "ours_checkpointed", "D--"),
    "diffrax (d, n) gradient": ("gradient", "diffrax_particles_last", "s--"),
}


STOCHASTIC_SERIES = {
    "ours stochastic gradient (discrete)": ("gradient", "ours_discrete", "x:"),
    "diffrax (d, n) stochastic gradient": ("gradient", "diffrax_particles_last", "+:"),
    "diffrax (d, n) stochastic gradient, our draw": ("gradient", "diffrax_particles_last_fused_noise", "1:"),
}


def plot(results: list[dict], depth_scan: dict | None, path: Path, stochastic: Sequence[dict] = ()) -> None:
    """Log–log wall time against n (one panel per d, the stochastic gradients dotted) and against the
    depth L."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["d"] for r in (*results, *stochastic)})
    panels = len(dims) + (depth_scan is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), squeeze=False)
    for ax, d in zip(axes[0], dims):
        rows = sorted((r for r in results if r["d"] == d), key=lambda r: r["n"])
        noisy = sorted((r for r in stochastic if r["d"] == d), key=lambda r: r["n"])
        for series, table in ((SERIES, rows), (STOCHASTIC_SERIES, noisy)):
            for label, (kind, name, style) in series.items():
                points = [(r["n"], r[kind][name]["median_s"]) for r in table if name in r[kind]]
                if points:
                    ax.loglog(*zip(*points), style, label=label, markersize=4)
        label_loglog_axes(ax, f"d = {d}, L = {(rows or noisy)[0]['layers']}", "particles n", "wall time [s]",
                          legend=False)
    axes[0][0].legend(fontsize=7)
    if depth_scan is not None:
        ax = axes[0][-1]
        depths = [row["layers"] for row in depth_scan["rows"]]
        for label, name, style in [
            ("ours forward", "ours_forward", "o-"),
            ("ours gradient (discrete)", "ours_discrete_gradient", "o--"),
            ("ours gradient (checkpointed)", "ours_checkpointed_gradient", "D--"),
            ("diffrax (d, n) forward", "diffrax_forward", "s-"),
            ("diffrax (d, n) gradient", "diffrax_gradient", "s--"),
        ]:
            ax.loglog(depths, [row[name]["median_s"] for row in depth_scan["rows"]], style, label=label)
        label_loglog_axes(ax, f"depth scan: n = {depth_scan['n']}, d = {depth_scan['d']}", "layers L",
                          "wall time [s]")
    save_figure(fig, path)


def _summary_line(r: dict) -> str:
    q = r["ratios"]
    numpy_part = f"  vs numpy x{q['forward_speedup_vs_numpy']:.1f}" if "forward_speedup_vs_numpy" in q else ""
    return (
        f"n={r['n']:>8d} d={r['d']:>2d} L={r['layers']}: "
        f"forward {r['particle_steps_per_s']['ours']:.3g} ps/s, "
        f"time/diffrax(d,n) {q['forward_time_over_diffrax_particles_last']:.2f}, vs diffrax(n,d) "
        f"x{q['forward_speedup_vs_diffrax_particles_first']:.2f}{numpy_part}; gradient vs diffrax "
        f"x{q['gradient_speedup_discrete_vs_diffrax']:.2f} (checkpointed "
        f"x{q['gradient_speedup_checkpointed_vs_diffrax']:.2f}), "
        f"grad/fwd {q['gradient_to_forward_discrete']:.2f}"
    )


def _stochastic_summary_line(r: dict) -> str:
    q = r["ratios"]
    return (
        f"stochastic n={r['n']:>8d} d={r['d']:>2d}: forward time/diffrax "
        f"{q['forward_time_over_diffrax_particles_last']:.2f}; gradient vs diffrax "
        f"x{q['gradient_speedup_discrete_vs_diffrax']:.2f} (checkpointed "
        f"x{q['gradient_speedup_checkpointed_vs_diffrax']:.2f}; diffrax with our fused draw "
        f"x{q['gradient_speedup_discrete_vs_diffrax_fused_noise']:.2f}), grad/fwd "
        f"{q['gradient_to_forward_discrete']:.2f}"
    )


def cases(quick: bool, ns: list[int] | None, ds: list[int] | None, layers: int) -> list[Case]:
    ns = ns or ([10**4, 10**5] if quick else [10**4, 10**5, 10**6])
    ds = ds or ([1, 2, 16] if quick else [1, 2, 4, 16])
    return [Case(n, d, layers) for d in ds for n in ns]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="n in 1e4, 1e5; d in 1, 2, 16 (about 7 minutes on 2 cores)"
    )
    parser.add_argument("--n", type=int, nargs="+", default=None, help="particle counts (default by --quick)")
    parser.add_argument("--d", type=int, nargs="+", default=None, help="dimensions (default by --quick)")
    parser.add_argument("--layers", type=int, default=100, help="depth L of the main cases")
    parser.add_argument("--depths", type=int, nargs="*", default=[10, 100, 1000], help="L of the depth scan")
    parser.add_argument("--depth-scan-n", type=int, default=None, help="particles in the depth scan")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up")
    add_allocator_option(parser)
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy loop")
    parser.add_argument("--no-stochastic", action="store_true", help="skip the stochastic ResNet cases")
    parser.add_argument("--no-deterministic", action="store_true", help="skip the deterministic cases")
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    given = [("--repeats", repeats), ("--layers", args.layers)]
    given += [("--n", n) for n in args.n or []] + [("--d", d) for d in args.d or []]
    given += [("--depths", depth) for depth in args.depths]
    bad = [f"{name}={value}" for name, value in given if value < 1]
    if bad:
        parser.error(f"positive integers are needed: {', '.join(bad)}")
    if jax.config.jax_enable_x64:
        parser.error("the benchmark runs in float32: unset JAX_ENABLE_X64")

    kept = apply_allocator_option(args)  # before the first computation
    started = time.perf_counter()
    limits = compute_limits()
    print(f"compute limits: {limits['tanh_fma_values_per_s']:.3g} tanh-FMA values/s, "
          f"{limits['matmul_flop_per_s']:.3g} matmul flop/s", flush=True)
    settings = {
        "keep_freed_memory": kept, "repeats": repeats, "T": T, "dtype": "float32", "activation": "tanh",
        "budget_s": BUDGET_S,
        "statistic": "median wall time after one warm-up call, compilation timed apart",
    }
    payload = {**new_payload("particles", args.quick, settings), "compute_limits": limits}
    for case in [] if args.no_deterministic else cases(args.quick, args.n, args.d, args.layers):
        result = run_case(case, repeats, limits, numpy_peer=not args.no_numpy)
        payload["results"].append(result)
        print(_summary_line(result), flush=True)
    stochastic = []
    if not args.no_stochastic:
        for case in cases(args.quick, args.n, args.d, args.layers):
            if case.n <= STOCHASTIC_MAX_N:
                stochastic.append(run_stochastic_case(case, repeats))
                print(_stochastic_summary_line(stochastic[-1]), flush=True)
    payload["stochastic"] = stochastic
    depth_scan = None
    if args.depths:
        n = args.depth_scan_n or (10**4 if args.quick else 10**5)
        depth_scan = run_depth_scan(n, 2, sorted(args.depths), repeats)
    payload["depth_scan"] = depth_scan
    payload["goals"] = goals(payload["results"], depth_scan, stochastic)
    path = save_payload(payload, started)
    plot(payload["results"], depth_scan, path.with_suffix(".png"), stochastic)
    print(f"goals: {payload['goals']['met']}")
    print(f"wrote {path} and {path.with_suffix('.png').name}")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
