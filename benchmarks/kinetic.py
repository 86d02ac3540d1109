"""Kinetic (PDE) solvers against py-pde and FiPy, and the cost of a gradient through a solve.

Problems — one equation, grid, time step, number of steps S and final time for every solver:

* ``transport_1d``: ∂_t f + ∂_x(tanh(1.5 x + 0.2) f) = 0 on [−4, 4], 10³, 10⁴, 10⁵ cells, outflow walls;
* ``transport_2d``: ∂_t f + ∇·(tanh(W x + b) f) = 0 on [−4, 4]², W = [[1, −0.8], [0.8, 1]],
  b = (0.1, −0.2), 256², 512² (and 1024² without ``--quick``) cells, outflow walls;
* ``fokker_planck_1d``: ∂_t f + ∂_x(−x f) = ∂_xx f on [−6, 10] (the Fig. 9 model), 10³, 10⁴, 10⁵ cells,
  zero-flux walls.

Solvers:

* ours: ``solve_vlasov`` (MUSCL with the MC limiter, SSP-RK2, cfl 0.5) and ``solve_fokker_planck``
  (Chang–Cooper flux, explicit SSP-RK2, cfl 0.5), called through the public API with a concrete field, in
  float64 (the peers' precision) and in float32. Δt is our CFL step and t_final = S Δt (1 − 10⁻⁹), so that
  every solver takes exactly S steps of (almost exactly) the same size.
* py-pde: the same PDE written as a py-pde expression (its central differences), its simplest explicit
  scheme (``EulerSolver``, fixed step t_final / S, ``adaptive=False``) on the numba backend; the stepper is
  built and run once before timing (compilation apart) and is then called directly, so no tracker runs.
* FiPy (Fokker–Planck only): ``TransientTerm() == DiffusionTerm(K) − ExponentialConvectionTerm(F)`` — the
  Scharfetter–Gummel flux, i.e. our spatial scheme, stepped by implicit Euler — S solves with the same Δt,
  FiPy's default (LU) solver with its tolerance set to 10⁻¹² (at the default tolerance the solves stop
  early: 3·10⁻⁴ L1 error at 10⁴ cells), its default no-flux walls.
* gradient: ``jax.grad`` of the first moment of f(t_final) with respect to the field (W and b), with
  ``max_steps=S``, by the default checkpointed adjoint, by the discrete adjoint (``adjoint="discrete"``) and
  by forward sensitivities (``adjoint="forward"``: W and b's 2 numbers in 1-D, 6 in 2-D, carried as
  tangents), against the same forward pass compiled the same way. The layer scan below times the first
  two only (50 layers are 100 parameters: forward sensitivities are for few).

Reported per case: the median wall time of ``repeats`` runs after a warm-up, the first call (compilation)
apart, our two precisions and py-pde called round-robin (as many rounds as fit in 10 s, at least
``repeats``), so that the load bursts of this shared machine fall on all of them alike (FiPy apart);
cell-steps/s = cells × S / time; peak memory, as XLA's buffer sizes of the compiled kernel (ours) and as
the rise of the process's resident memory over one extra untimed run, sampled every millisecond (all
solvers; a lower bound, since freed memory is reused); the L1 distance of each peer's f(t_final) to
ours (a check that both solve one problem); the throughput ratios ours / peer; and gradient / forward.
Ours and py-pde are also timed once more right after each call (``warm_*``, and the ratios
``py-pde/float64_warm``, ``py-pde/float32_warm``): a call after idle cores costs our multi-threaded solves
more than py-pde's loop, and the goal is reported both ways.

Layer scan: the forward pass and both gradients of 1-D transport and Fokker–Planck on 10⁴ cells with fields
of 1, 10 and 50 equal layers (the same drift; the steps also land on the layer boundaries), and the
gradient's time at 50 layers over that at one.

Batches: 4 fields (W scaled by 1, 0.99, 0.98, 0.97, so each has its own CFL step), 1-D transport and
Fokker–Planck on 10⁴ cells, 1 and 10 layers, the final densities and the gradients of their first moments:
``jax.vmap`` over the fields and ``jax.lax.map``, against the four compiled calls one after the other.

Run ``python benchmarks/kinetic.py [--quick]``; the results go to ``benchmarks/results/kinetic-<time>.json``
with a log–log plot of the time per step against the number of cells next to it (never overwritten).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from common import (
    add_allocator_option,
    apply_allocator_option,
    compile_jitted,
    label_loglog_axes,
    measure,
    new_payload,
    peak_rss_rise,
    save_figure,
    save_payload,
    time_compiled_interleaved,
    time_interleaved,
    xla_memory,
)

import meanfield_jax as mfj
from meanfield_jax.chang_cooper import fitted_flux_coefficients, outflow_rate
from meanfield_jax.transport import cfl_time_step

CFL = 0.5
GRADIENT_BUDGET_S = 10.0  # rounds of (forward, two gradients) timed: as many as fit, >= --repeats, <= 50
PEER_BUDGET_S = 10.0  # the same for the rounds of (ours float64, ours float32, py-pde)
GOALS = {"throughput_ratio_to_py_pde_at_least": 5.0, "gradient_to_forward_at_most": 5.0}
LAYER_SCAN = (1, 10, 50)  # layers of the field in the layer scan
BATCH = 4  # fields solved at once in the batch comparison
BATCH_LAYERS = (1, 10)


# ---- the problems -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One benchmark case: the equation ``kind`` on n cells per axis, advanced by ``steps`` steps."""

    kind: str
    n: int
    steps: int

    @property
    def d(self) -> int:
        return 2 if self.kind == "transport_2d" else 1

    @property
    def cells(self) -> int:
        return self.n**self.d

    @property
    def domain(self) -> tuple[float, float]:
        return (-6.0, 10.0) if self.kind == "fokker_planck_1d" else (-4.0, 4.0)

    @property
    def activation(self) -> str:
        return "identity" if self.kind == "fokker_planck_1d" else "tanh"

    @property
    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "transport_1d":
            return np.array([[1.5]]), np.array([0.2])
        if self.kind == "transport_2d":
            return np.array([[1.0, -0.8], [0.8, 1.0]]), np.array([0.1, -0.2])
        return np.array([[-1.0]]), np.array([0.0])

    @property
    def diffusion(self) -> float | None:
        return 1.0 if self.kind == "fokker_planck_1d" else None

    @property
    def initial_mean(self) -> tuple[float, ...]:
        return {"transport_1d": (0.5,), "transport_2d": (0.5, -0.3), "fokker_planck_1d": (5.0,)}[self.kind]

    def grid(self) -> mfj.Grid1D | mfj.Grid2D:
        lo, hi = self.domain
        if self.d == 1:
            return mfj.Grid1D(lo, hi, self.n)
        return mfj.Grid2D((lo, hi, self.n), (lo, hi, self.n))

    def field(self, T: float, layers: int = 1) -> mfj.NeuralField:
        """One layer by default (the drift is constant in time), so no layer boundary cuts the steps; with
        ``layers`` > 1 that many equal layers (the same drift, and layer boundaries every T/layers); the
        default float type (float64 under ``jax.enable_x64(True)``, else float32)."""
        W, b = (jnp.asarray(a, jnp.result_type(float)) for a in self.weights)
        W, b = jnp.tile(W, (layers, 1, 1)), jnp.tile(b, (layers, 1))
        return mfj.NeuralField(W, b, activation=self.activation, T=T)

    def initial_density(self) -> jax.Array:
        """A Gaussian of standard deviation 0.6 (1 for Fokker–Planck), as cell averages of mass 1."""
        grid, mean = self.grid(), self.initial_mean
        sd = 1.0 if self.kind == "fokker_planck_1d" else 0.6
        if self.d == 1:
            f0 = grid.project(lambda x: jnp.exp(-0.5 * ((x - mean[0]) / sd) ** 2))
        else:
            f0 = grid.project(lambda x, y: jnp.exp(-0.5 * ((x - mean[0]) ** 2 + (y - mean[1]) ** 2) / sd**2))
        return f0 / grid.integrate(f0)

    def time_step(self) -> float:
        """Our CFL step: cfl / (largest rate at which a cell empties), the step both our solvers take."""
        grid, field = self.grid(), self.field(1.0)
        if self.diffusion is None:
            return float(cfl_time_step(field, grid, "outflow", CFL, 1.0))
        faces = grid.faces[1:-1]
        drift = field.layer_velocity(0, faces[:, None])[:, 0]
        rate = outflow_rate([fitted_flux_coefficients(drift, self.diffusion, grid.dx)], [grid.dx])
        return float(CFL / jnp.max(rate))

    def py_pde_expression(self) -> str:
        W, b = self.weights
        names = ("x", "y")[: self.d]
        terms = []
        for i, name in enumerate(names):
            products = [f"{float(W[i, j])!r}*{names[j]}" for j in range(self.d)]
            linear = " + ".join([*products, repr(float(b[i]))])
            velocity = f"tanh({linear})" if self.activation == "tanh" else f"({linear})"
            terms.append(f"- d_d{name}({velocity} * f)")
        if self.diffusion is not None:
            terms.append(f"+ {self.diffusion!r} * laplace(f)")
        return " ".join(terms)


def solve_ours(
    problem: Problem,
    field: mfj.NeuralField,
    f0: jax.Array,
    max_steps: int | None = None,
    adjoint: str = "checkpointed",
    grid: mfj.Grid1D | mfj.Grid2D | None = None,
):
    """Our solve of ``problem``, on ``grid`` if given (a caller timing repeated solves builds it once, as a
    user would; it holds arrays of the precision it was built in)."""
    grid = problem.grid() if grid is None else grid
    if problem.diffusion is None:
        return mfj.solve_vlasov(
            field, f0, grid, t_final=field.T, scheme="muscl", limiter="mc", cfl=CFL, boundary="outflow",
            time_stepper="ssprk2", max_steps=max_steps, adjoint=adjoint,
        )
    return mfj.solve_fokker_planck(
        field, f0, grid, diffusion=problem.diffusion, t_final=field.T, scheme="chang_cooper",
        method="explicit", cfl=CFL, max_steps=max_steps, adjoint=adjoint,
    )


def first_moment(problem: Problem, f: jax.Array) -> jax.Array:
    """∫ x f dx (1-D) or the sum of the components of the mean (2-D): the quantity differentiated."""
    m = mfj.moments(f, problem.grid(), order=1)
    return m[1] if problem.d == 1 else jnp.sum(m["mean"])


# ---- the solvers under test -------------------------------------------------------------------------------
def _throughput(problem: Problem, timing: dict, statistic: str = "median_s") -> float:
    return problem.cells * problem.steps / timing[statistic]


def _throughputs(problem: Problem, timing: dict) -> dict:
    """Cell-steps/s of the median call after the pause (``cell_steps_per_s``) and, where it was timed, of
    the median call repeated at once (``warm_cell_steps_per_s``, see :func:`common.time_interleaved`)."""
    rates = {"cell_steps_per_s": _throughput(problem, timing)}
    if "warm_median_s" in timing:
        rates["warm_cell_steps_per_s"] = _throughput(problem, timing, "warm_median_s")
    return rates


class Ours:
    """Our solver on one problem in one precision: ``call()`` solves (and waits), ``record(timing)`` adds
    the compile time, throughput, XLA memory and resident-memory rise to a timing of those calls."""

    def __init__(self, problem: Problem, t_final: float, x64: bool):
        self.problem, self.x64 = problem, x64
        with jax.enable_x64(x64):
            self.field, self.f0, self.grid = problem.field(t_final), problem.initial_density(), problem.grid()

    def _solve(self):
        return jax.block_until_ready(solve_ours(self.problem, self.field, self.f0, grid=self.grid))

    def call(self):
        with jax.enable_x64(self.x64):
            return self._solve()

    def final(self) -> np.ndarray:
        sol = self.call()
        if int(sol.num_steps) != self.problem.steps:
            raise RuntimeError(f"{self.problem}: our solver took {int(sol.num_steps)} steps, "
                               f"expected {self.problem.steps}")
        return np.asarray(sol.f[-1], np.float64)

    def record(self, timing: dict) -> dict:
        problem = self.problem
        with jax.enable_x64(self.x64):
            compiled, _ = compile_jitted(
                lambda fld, f: solve_ours(problem, fld, f, max_steps=problem.steps).f, (self.field, self.f0)
            )
            return {
                **timing,
                "compile_s": max(timing["first_call_s"] - timing["median_s"], 0.0),
                **_throughputs(problem, timing),
                "xla_memory": xla_memory(compiled),
                "peak_rss_rise_bytes": peak_rss_rise(lambda _: self._solve()),
                "dtype": "float64" if self.x64 else "float32",
            }


@jax.enable_x64(True)
def run_gradient(
    problem: Problem, t_final: float, repeats: int, layers: int = 1, forward_sensitivities: bool = True
) -> dict:
    """Gradient of the first moment of f(t_final) w.r.t. (W, b) against the forward pass, all compiled
    with the field traced (``max_steps`` = S, plus one step per layer boundary): "gradient" by the
    checkpointed adjoint, "gradient_discrete" by the discrete adjoint, "gradient_forward" by forward
    sensitivities (unless ``forward_sensitivities`` is False); all are timed round-robin, so that their
    ratios are taken under the same load."""
    field = problem.field(t_final, layers)
    f0 = problem.initial_density()

    def loss(fld, f, adjoint="checkpointed"):
        sol = solve_ours(problem, fld, f, max_steps=problem.steps + layers - 1, adjoint=adjoint)
        return first_moment(problem, sol.f[-1])

    runs = {
        "forward": (loss, (field, f0)),
        "gradient": (jax.grad(loss), (field, f0)),
        "gradient_discrete": (jax.grad(lambda fld, f: loss(fld, f, "discrete")), (field, f0)),
    }
    if forward_sensitivities:
        runs["gradient_forward"] = (jax.grad(lambda fld, f: loss(fld, f, "forward")), (field, f0))
    timings, compiled, _ = time_compiled_interleaved(runs, repeats, GRADIENT_BUDGET_S)
    out = {name: {**timings[name], "xla_memory": xla_memory(compiled[name])} for name in runs}
    out["gradient_to_forward"] = out["gradient"]["median_s"] / out["forward"]["median_s"]
    out["discrete_gradient_to_forward"] = out["gradient_discrete"]["median_s"] / out["forward"]["median_s"]
    if forward_sensitivities:
        out["forward_sensitivities_to_forward"] = (
            out["gradient_forward"]["median_s"] / out["forward"]["median_s"]
        )
    return out


class PyPDE:
    """py-pde on one problem: the stepper is built and compiled here; ``call()`` resets the state to f0 in
    place (a copy, inside the timing: under 0.2 % of a solve) and advances it by S explicit Euler steps."""

    def __init__(self, problem: Problem, t_final: float, f0: jax.Array):
        import pde
        from pde.solvers import EulerSolver

        lo, hi = problem.domain
        grid = pde.CartesianGrid([[lo, hi]] * problem.d, [problem.n] * problem.d)
        self.problem, self.t_final = problem, t_final
        self.initial = np.asarray(f0, np.float64)
        self.bc = {"value": 0.0} if problem.diffusion is None else {"derivative": 0.0}
        self.solver = EulerSolver(pde.PDE({"f": problem.py_pde_expression()}, bc=self.bc), backend="numba",
                                  adaptive=False)
        self.dt = t_final / problem.steps
        start = time.perf_counter()
        self.state = pde.ScalarField(grid, self.initial.copy())
        self.stepper = self.solver.make_stepper(self.state, self.dt)
        self.stepper(self.state, 0.0, self.dt)  # numba compiles here
        self.compile_s = time.perf_counter() - start

    def call(self) -> np.ndarray:
        self.state.data[...] = self.initial
        before = self.solver.info["steps"]
        self.stepper(self.state, 0.0, self.t_final)
        if self.solver.info["steps"] - before != self.problem.steps:
            raise RuntimeError(f"py-pde took {self.solver.info['steps'] - before} steps, "
                               f"expected {self.problem.steps}")
        return self.state.data

    def record(self, timing: dict) -> dict:
        return {
            **timing,
            "compile_s": self.compile_s,
            **_throughputs(self.problem, timing),
            "peak_rss_rise_bytes": peak_rss_rise(lambda _: self.call()),
            "scheme": "explicit Euler, central differences (py-pde expression), numba backend",
            "boundary": self.bc,
            "expression": self.problem.py_pde_expression(),
            "dt": self.dt,
        }


def run_fipy(problem: Problem, t_final: float, f0: jax.Array, repeats: int) -> tuple[dict, np.ndarray]:
    import fipy

    lo, _ = problem.domain
    grid = problem.grid()
    mesh = fipy.Grid1D(nx=problem.n, dx=grid.dx) + lo
    faces = np.asarray(mesh.faceCenters[0].value)
    drift = np.asarray(problem.field(1.0).layer_velocity(0, jnp.asarray(faces)[:, None])[:, 0])
    velocity = fipy.FaceVariable(mesh=mesh, rank=1, value=drift[None, :])
    equation = fipy.TransientTerm() == fipy.DiffusionTerm(coeff=problem.diffusion) - (
        fipy.ExponentialConvectionTerm(coeff=velocity)
    )
    dt = t_final / problem.steps
    initial = np.asarray(f0, np.float64)
    solver = fipy.solvers.LinearLUSolver(tolerance=1e-12, iterations=10)

    def setup():
        return fipy.CellVariable(mesh=mesh, value=initial.copy())

    def run(density):
        for _ in range(problem.steps):  # FiPy advances one implicit step per solve
            equation.solve(var=density, dt=dt, solver=solver)
        return np.array(density.value)

    timing, final = measure(run, repeats, setup)
    return {
        **timing,
        "compile_s": max(timing["first_call_s"] - timing["median_s"], 0.0),
        "cell_steps_per_s": _throughput(problem, timing),
        "peak_rss_rise_bytes": peak_rss_rise(run, setup),
        "scheme": "implicit Euler, exponential (Scharfetter–Gummel) convection + diffusion, no-flux walls",
        "solver": repr(solver),
        "dt": dt,
    }, final


# ---- one case, the suite, the plot ------------------------------------------------------------------------
@jax.enable_x64(True)
def run_case(problem: Problem, repeats: int) -> dict:
    """Every solver on one problem; the step and the initial density are computed in float64."""
    grid = problem.grid()
    dt = problem.time_step()
    t_final = problem.steps * dt * (1.0 - 1e-9)
    f0 = problem.initial_density()
    # ours (both precisions) and py-pde are timed round-robin, so that load bursts on this shared machine
    # fall on all three alike; FiPy (~10³ times slower) is timed on its own
    ours = {"float64": Ours(problem, t_final, True), "float32": Ours(problem, t_final, False)}
    py_pde = PyPDE(problem, t_final, f0)
    calls = {**{f"ours/{k}": v.call for k, v in ours.items()}, "py-pde": py_pde.call}
    first = {}
    for name, call in calls.items():  # compilation, kept out of the round length
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
    timings, _ = time_interleaved(calls, repeats, budget_s=PEER_BUDGET_S, back_to_back=True)
    for name, seconds in first.items():
        timings[name]["first_call_s"] = seconds
    final64 = ours["float64"].final()
    result = {
        "case": problem.kind,
        "cells": problem.cells,
        "shape": list(grid.shape),
        "steps": problem.steps,
        "dt": dt,
        "t_final": t_final,
        "ours": {k: v.record(timings[f"ours/{k}"]) for k, v in ours.items()},
        "gradient": run_gradient(problem, t_final, repeats),
        "peers": {"py-pde": py_pde.record(timings["py-pde"])},
    }
    finals = {"py-pde": np.asarray(py_pde.call(), np.float64)}
    if problem.diffusion is not None:
        result["peers"]["fipy"], finals["fipy"] = run_fipy(problem, t_final, f0, repeats)
    for name, final in finals.items():
        distance = float(np.sum(np.abs(final - final64)) * grid.cell_volume)
        result["peers"][name]["l1_distance_to_ours"] = distance
    kernel = _throughput(problem, result["gradient"]["forward"])
    result["gradient"]["forward"]["cell_steps_per_s"] = kernel
    result["ratios"] = {}
    for name, stats in result["peers"].items():
        for precision in ("float64", "float32"):
            own = result["ours"][precision]
            result["ratios"][f"{name}/{precision}"] = own["cell_steps_per_s"] / stats["cell_steps_per_s"]
            if "warm_cell_steps_per_s" in stats:  # FiPy is timed on its own, not back to back
                warm = own["warm_cell_steps_per_s"] / stats["warm_cell_steps_per_s"]
                result["ratios"][f"{name}/{precision}_warm"] = warm
        result["ratios"][f"{name}/float64_compiled_forward"] = kernel / stats["cell_steps_per_s"]
    return result


@jax.enable_x64(True)
def layer_scan(quick: bool, repeats: int) -> list[dict]:
    """Forward and gradient time against the number of (equal) layers of the field, 10⁴ cells: a gradient
    through L layers should cost about what it costs through one (same steps, plus one per boundary)."""
    rows = []
    for kind in ("transport_1d", "fokker_planck_1d"):
        problem = Problem(kind, 10**4, 100 if quick else 200)
        t_final = problem.steps * problem.time_step() * (1.0 - 1e-9)
        for layers in LAYER_SCAN:
            timing = run_gradient(problem, t_final, repeats, layers, forward_sensitivities=False)
            rows.append({
                "case": kind, "cells": problem.cells, "steps": problem.steps, "layers": layers,
                **{name: timing[name]["median_s"] for name in ("forward", "gradient", "gradient_discrete")},
                "gradient_to_forward": timing["gradient_to_forward"],
                "discrete_gradient_to_forward": timing["discrete_gradient_to_forward"],
            })
            print(f"layer scan {kind} L={layers:3d}: forward {rows[-1]['forward']:.3g} s, gradient "
                  f"{rows[-1]['gradient']:.3g} s, discrete {rows[-1]['gradient_discrete']:.3g} s", flush=True)
    return rows


@jax.enable_x64(True)
def batch_scan(quick: bool, repeats: int) -> list[dict]:
    """A batch of fields solved by ``jax.vmap``, by ``jax.lax.map`` and one by one (see the docstring)."""
    rows = []
    for kind in ("transport_1d", "fokker_planck_1d"):
        problem = Problem(kind, 10**4, 100 if quick else 200)
        for layers, quantity in itertools.product(BATCH_LAYERS, ("forward", "gradient")):
            rows.append(batch_row(problem, layers, repeats, quantity))
            print(f"batch {kind} L={layers:2d} {quantity}: one by one {rows[-1]['one_by_one']:.3g} s, vmap "
                  f"{rows[-1]['vmap']:.3g} s, lax.map {rows[-1]['lax_map']:.3g} s", flush=True)
    return rows


def batch_row(problem: Problem, layers: int, repeats: int, quantity: str) -> dict:
    """The batch's final densities (``quantity="forward"``) or gradients of their first moments w.r.t.
    (W, b) (``"gradient"``, default adjoint), computed three ways; the vmap and lax.map times over the
    one-by-one time."""
    t_final = problem.steps * problem.time_step() * (1.0 - 1e-9)
    f0 = problem.initial_density()
    base = problem.field(t_final, layers)
    scales = jnp.asarray([1.0 - 0.01 * k for k in range(BATCH)])
    W, b = scales[:, None, None, None] * base.W, jnp.broadcast_to(base.b, (BATCH, *base.b.shape))

    def final(W, b):  # W scaled down: each CFL step is at least the base field's, so S steps suffice
        field = eqx.tree_at(lambda fld: (fld.W, fld.b), base, (W, b))
        return solve_ours(problem, field, f0, max_steps=problem.steps + layers - 1).f[-1]

    if quantity == "gradient":
        solve = jax.grad(lambda W, b: first_moment(problem, final(W, b)), argnums=(0, 1))
    else:
        solve = final
    single, _ = compile_jitted(solve, (W[0], b[0]))
    runs = {
        "vmap": (jax.vmap(solve), (W, b)),
        "lax_map": (lambda W, b: jax.lax.map(lambda a: solve(*a), (W, b)), (W, b)),
    }
    plain = {"one_by_one": lambda: [jax.block_until_ready(single(W[k], b[k])) for k in range(BATCH)]}
    timings, _, outputs = time_compiled_interleaved(runs, repeats, GRADIENT_BUDGET_S, plain)
    expected = jax.tree.map(lambda *members: np.stack(members), *outputs["one_by_one"])
    for name in runs:  # the same results, whichever way the batch is run
        jax.tree.map(
            lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14),
            outputs[name], expected,
        )
    row = {
        "case": problem.kind, "cells": problem.cells, "steps": problem.steps, "layers": layers,
        "batch": BATCH, "quantity": quantity,
        **{name: timings[name]["median_s"] for name in ("one_by_one", *runs)},
    }
    return {**row, **{f"{name}_to_one_by_one": row[name] / row["one_by_one"] for name in runs}}


def layer_growth(rows: list[dict]) -> dict:
    """Gradient time at the most layers over that at one layer, per case and adjoint."""
    growth = {}
    for kind in dict.fromkeys(r["case"] for r in rows):
        case = sorted((r for r in rows if r["case"] == kind), key=lambda r: r["layers"])
        for name in ("gradient", "gradient_discrete"):
            growth[f"{kind}/{name}"] = case[-1][name] / case[0][name]
    return growth


def problems(quick: bool) -> list[Problem]:
    steps_1d, steps_2d = (100, 20) if quick else (200, 50)
    sizes_2d = (256, 512) if quick else (256, 512, 1024)
    return (
        [Problem("transport_1d", n, steps_1d) for n in (10**3, 10**4, 10**5)]
        + [Problem("transport_2d", n, steps_2d) for n in sizes_2d]
        + [Problem("fokker_planck_1d", n, steps_1d) for n in (10**3, 10**4, 10**5)]
    )


def goals(results: list[dict]) -> dict:
    speedups = [r["ratios"]["py-pde/float64"] for r in results]
    warm = [r["ratios"]["py-pde/float64_warm"] for r in results]
    gradients = [r["gradient"]["gradient_to_forward"] for r in results]
    discrete = [r["gradient"]["discrete_gradient_to_forward"] for r in results]
    forward = [r["gradient"]["forward_sensitivities_to_forward"] for r in results]
    # the goal takes, case by case, the fastest of the adjoints a user can choose
    best = [min(a, b, c) for a, b, c in zip(gradients, discrete, forward)]
    return {
        **GOALS,
        "min_throughput_ratio_to_py_pde_float64": min(speedups),
        "min_throughput_ratio_to_py_pde_float64_warm": min(warm),
        "max_gradient_to_forward_checkpointed": max(gradients),
        "max_gradient_to_forward_discrete": max(discrete),
        "max_gradient_to_forward_forward_sensitivities": max(forward),
        "max_gradient_to_forward": max(best),
        "throughput_goal_met": min(speedups) >= GOALS["throughput_ratio_to_py_pde_at_least"],
        "throughput_goal_met_warm": min(warm) >= GOALS["throughput_ratio_to_py_pde_at_least"],
        "gradient_goal_met": max(best) <= GOALS["gradient_to_forward_at_most"],
    }


def plot(results: list[dict], path: Path) -> None:
    """Log–log time per step against the number of cells, one panel per equation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["case"] for r in results))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rows = [r for r in results if r["case"] == kind]
        cells = [r["cells"] for r in rows]
        series = {
            "ours float64": [r["ours"]["float64"]["median_s"] for r in rows],
            "ours float32": [r["ours"]["float32"]["median_s"] for r in rows],
            "ours gradient (float64)": [r["gradient"]["gradient"]["median_s"] for r in rows],
            "ours discrete adjoint": [r["gradient"]["gradient_discrete"]["median_s"] for r in rows],
            "ours forward sensitivities": [r["gradient"]["gradient_forward"]["median_s"] for r in rows],
        }
        for peer in rows[0]["peers"]:
            series[peer] = [r["peers"][peer]["median_s"] for r in rows]
        for (label, times), marker in zip(series.items(), "osDx^v<>"):
            per_step = [t / r["steps"] for t, r in zip(times, rows)]
            ax.loglog(cells, per_step, marker=marker, label=label)
        label_loglog_axes(ax, kind.replace("_", " "), "cells", "wall time per step [s]")
    save_figure(fig, path)


def _peer_summary(r: dict, name: str) -> str:
    s, ratios = r["peers"][name], r["ratios"]
    warm = ratios.get(f"{name}/float64_warm")
    back_to_back = "" if warm is None else f", back to back {warm:.2f}"
    ratio = ratios[f"{name}/float64"]
    return (f"{name} {s['cell_steps_per_s']:.3g}/s (ours/{name} {ratio:.2f}{back_to_back}, "
            f"L1 {s['l1_distance_to_ours']:.1e})")


def _summary_line(r: dict) -> str:
    peers = "  ".join(_peer_summary(r, name) for name in r["peers"])
    return (
        f"{r['case']:17s} {r['cells']:>8d} cells  ours f64 {r['ours']['float64']['cell_steps_per_s']:.3g}/s  "
        f"f32 {r['ours']['float32']['cell_steps_per_s']:.3g}/s  grad/fwd "
        f"{r['gradient']['gradient_to_forward']:.2f} "
        f"(discrete {r['gradient']['discrete_gradient_to_forward']:.2f}, forward sensitivities "
        f"{r['gradient']['forward_sensitivities_to_forward']:.2f})  {peers}"
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps, no 1024² grid (about 5 minutes on 2 cores)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up")
    add_allocator_option(parser)
    args = parser.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}")
    kept = apply_allocator_option(args)  # before the first computation
    started = time.perf_counter()
    settings = {
        "keep_freed_memory": kept, "repeats": repeats, "cfl": CFL,
        "statistic": "median after one warm-up call",
        "peer_rounds": "each turn timed after a 5 ms pause, then once more at once (warm_*)",
        "gradient_group": "forward and both gradients timed round-robin",
        "gradient_budget_s": GRADIENT_BUDGET_S,
    }
    payload = new_payload("kinetic", args.quick, settings)
    for problem in problems(args.quick):
        result = run_case(problem, repeats)
        payload["results"].append(result)
        print(_summary_line(result), flush=True)
    payload["goals"] = goals(payload["results"])
    payload["layer_scan"] = {"rows": layer_scan(args.quick, repeats)}
    payload["layer_scan"]["gradient_time_growth"] = layer_growth(payload["layer_scan"]["rows"])
    print(f"gradient time, {LAYER_SCAN[-1]} layers over 1: {payload['layer_scan']['gradient_time_growth']}")
    payload["batch"] = {"rows": batch_scan(args.quick, repeats)}
    path = save_payload(payload, started)
    plot(payload["results"], path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png').name}")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
