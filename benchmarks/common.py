"""Measurement shared by the benchmark suites: machine, versions, timing, memory, results files.

* :func:`machine_info` / :func:`versions`: what the numbers were measured on (CPU model, AVX-512, cores,
  memory, GPU names, JAX backend, load average, XLA flags and options) and with (jax, jaxlib, numpy, peers).
* :func:`time_jitted`: compile time apart (``jit(fn).lower(*args).compile()``, with the package's XLA
  options, ``meanfield_jax.dispatch.COMPILER_OPTIONS``, for ours and the peers alike), then a warm-up call and
  ``repeats`` timed calls of the compiled executable; the median (and minimum) wall time and the process
  CPU time, which is steadier than wall time on a machine shared with other work.
* :func:`measure`: the same for any callable (NumPy loops, peers with their own compilation).
* :func:`time_compiled_interleaved`: compile several functions, then time them round-robin.
* :func:`time_interleaved`: several calls timed round-robin after one warm-up each, so that bursts of
  load from other processes fall on all of them alike (the ratios between them stay fair); each round
  in its own order, so that none always follows the same one.
* :func:`xla_memory`: XLA's argument / output / temporary buffer sizes of a compiled executable (the
  temporary size is the working memory of a gradient); :func:`peak_rss_rise`: the process's resident
  memory rise during one call, sampled every millisecond (a lower bound).
* :func:`compute_limits`: what this machine can do at best for the ResNet's arithmetic: the throughput of
  a pure elementwise kernel x ← x + Δt tanh(a x + b) on a cache-resident array (values/s), and the
  matrix-product rate of XLA (flop/s), so that a report can state the fraction achieved.
* :func:`new_result_path` / :func:`write_json`: ``benchmarks/results/<stem>-<UTC time>.json``, never
  overwriting an earlier file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from meanfield_jax.allocator import keep_freed_memory
from meanfield_jax.dispatch import COMPILER_OPTIONS

RESULTS = Path(__file__).resolve().parent / "results"
PEER_PACKAGES = ("diffrax", "equinox", "numpy", "scipy", "py-pde", "numba", "fipy", "psutil")


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as file:
            return next(line.split(":", 1)[1].strip() for line in file if line.startswith(name))
    except (OSError, StopIteration):
        return None


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _avx512() -> bool | None:
    """Whether the CPU has AVX-512 (None where /proc/cpuinfo is not there)."""
    flags = _cpuinfo_field("flags")
    return None if flags is None else "avx512f" in flags.split()


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info() -> dict:
    """CPU model, core count, memory, accelerators and load: what the numbers were measured on."""
    import psutil

    accelerators = [d for d in jax.devices() if d.platform != "cpu"]
    return {
        "cpu": _cpu_model(),
        "cpu_avx512": _avx512(),
        "cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "devices": [d.device_kind for d in jax.devices()],
        "gpu": [d.device_kind for d in accelerators] or None,
        "load_average_at_start": load_average(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "malloc_environment": {key: value for key, value in os.environ.items() if key.startswith("MALLOC_")},
        "meanfield_jax_compiler_options": dict(COMPILER_OPTIONS),
    }


def versions(extra: Sequence[str] = PEER_PACKAGES) -> dict:
    """Python, jax, jaxlib, meanfield-jax and the peers' versions (None when not installed)."""
    names = ("jax", "jaxlib", "meanfield-jax", *extra)
    return {"python": platform.python_version(), **{name: _package_version(name) for name in names}}


def _summary(wall: list[float], cpu: list[float]) -> dict:
    return {
        "median_s": statistics.median(wall),
        "min_s": min(wall),
        "cpu_median_s": statistics.median(cpu),
        "times_s": wall,
    }


def _timed_calls(call: Callable[[], Any], repeats: int) -> tuple[list[float], list[float], Any]:
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = call()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu, out


def _repeats_within(budget_s: float | None, repeats: int, first_s: float) -> int:
    """At most ``repeats``, fewer (but at least one) when ``budget_s`` would be exceeded."""
    if budget_s is None or first_s <= 0:
        return repeats
    return max(1, min(repeats, int(budget_s / first_s)))


def time_jitted(
    fn: Callable, args: Sequence[Any], repeats: int, budget_s: float | None = None
) -> tuple[dict, Any, Any]:
    """Compile ``jax.jit(fn)`` for ``args`` (timed apart), warm up once, then time ``repeats`` calls.

    Fewer calls are made when ``repeats`` of them would take more than ``budget_s`` seconds.
    Returns (timing, the compiled executable, the last output). Timing holds ``compile_s``,
    ``first_call_s`` (the warm-up call, compilation excluded), ``median_s``, ``min_s``, ``cpu_median_s``
    (process CPU time) and ``times_s``.
    """
    compiled, compile_s = compile_jitted(fn, args)
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - start
    count = _repeats_within(budget_s, repeats, first)
    wall, cpu, out = _timed_calls(lambda: jax.block_until_ready(compiled(*args)), count)
    return {"compile_s": compile_s, "first_call_s": first, **_summary(wall, cpu)}, compiled, out


def measure(
    run: Callable[[Any], Any],
    repeats: int,
    setup: Callable[[], Any] = lambda: None,
    budget_s: float | None = None,
) -> tuple:
    """Time ``run(setup())``: a first call (warm-up, compilation included), then ``repeats`` calls.

    ``setup`` is not timed; ``run`` must wait for its result. When the first call alone takes longer than
    ``budget_s`` it is the only measurement (``single_call``: true). Returns (timing, the last output)
    with timing as in :func:`time_jitted` but ``first_call_s`` in place of ``compile_s``.
    """
    arg = setup()
    start, start_cpu = time.perf_counter(), time.process_time()
    out = run(arg)
    first, first_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    if budget_s is not None and first > budget_s:
        return {"first_call_s": first, "single_call": True, **_summary([first], [first_cpu])}, out
    wall, cpu = [], []
    for _ in range(_repeats_within(budget_s, repeats, first)):
        arg = setup()
        start, start_cpu = time.perf_counter(), time.process_time()
        out = run(arg)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"first_call_s": first, **_summary(wall, cpu)}, out


def compile_jitted(fn: Callable, args: Sequence[Any]) -> tuple[Any, float]:
    """``jax.jit(fn)`` lowered and compiled for ``args`` with the package's XLA options (``COMPILER_OPTIONS``:
    every program of the suite, ours and the peers', compiles alike); returns (executable, compile time in s).
    """
    start = time.perf_counter()
    compiled = jax.jit(fn, compiler_options=dict(COMPILER_OPTIONS)).lower(*args).compile()
    return compiled, time.perf_counter() - start


def time_interleaved(
    calls: dict[str, Callable[[], Any]],
    repeats: int,
    budget_s: float = 10.0,
    max_repeats: int = 50,
    pause_s: float = 0.005,
    back_to_back: bool = False,
) -> tuple[dict[str, dict], dict[str, Any]]:
    """Time several zero-argument calls (each must wait for its result) round-robin.

    Each call is made once as a warm-up (``first_call_s``), then all of them are called in turn for
    ``rounds`` rounds, so that bursts of load from other processes fall on every call alike:
    rounds = max(repeats, min(max_repeats, budget_s / (time of one round))). Each round calls them in its
    own order (a permutation drawn from a fixed seed), so that no call always comes right after the same
    one: right after the NumPy loop of the particle suite (n = 10⁶, d = 2 and n = 10⁵, d = 16) our forward
    pass or diffrax's, whichever came next, took ~1.5x its time. Before each call, pending
    host callbacks are waited for and the thread pools are left ``pause_s`` to go idle (untimed), so that
    one call's tail does not land in the next one's time. Returns (timing per name as in
    :func:`time_jitted` without ``compile_s``, the last output per name).

    With ``back_to_back`` each turn times the call once more right after it, as ``warm_median_s``,
    ``warm_min_s`` and ``warm_times_s``: the time of a call repeated at once, without the wake-up of
    cores left idle by the pause and by the calls before it (a multi-threaded call of a few ms took up to
    ~1.9x its time after idle cores on a 2-core machine, a single-threaded one much less;
    benchmarks/README.md).
    """
    first, outputs = {}, {}
    for name, call in calls.items():
        start = time.perf_counter()
        outputs[name] = call()
        first[name] = time.perf_counter() - start
    round_s = sum(first.values()) * (2 if back_to_back else 1)
    rounds = max(repeats, min(max_repeats, int(budget_s / round_s) if round_s > 0 else max_repeats))
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    warm = {name: [] for name in calls}
    names = list(calls)
    orders = np.random.default_rng(0)
    for _ in range(rounds):
        for name in orders.permutation(names).tolist():
            call = calls[name]
            jax.effects_barrier()  # let host callbacks of the previous call (peers' error checks) finish
            time.sleep(pause_s)
            start, start_cpu = time.perf_counter(), time.process_time()
            outputs[name] = call()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            if back_to_back:
                start = time.perf_counter()
                outputs[name] = call()
                warm[name].append(time.perf_counter() - start)
    timings = {name: {"first_call_s": first[name], **_summary(wall[name], cpu[name])} for name in calls}
    if back_to_back:
        for name, times in warm.items():
            timings[name].update(
                warm_median_s=statistics.median(times), warm_min_s=min(times), warm_times_s=times
            )
    return timings, outputs


def time_compiled_interleaved(
    jitted: dict[str, tuple[Callable, Sequence[Any]]],
    repeats: int,
    budget_s: float,
    plain: dict[str, Callable[[], Any]] | None = None,
) -> tuple[dict[str, dict], dict[str, Any], dict[str, Any]]:
    """Compile each jitted ``(fn, args)`` (compile time apart), then time them, and the ``plain`` calls,
    round-robin with :func:`time_interleaved`. Returns (timing per name, with ``compile_s`` for the jitted
    ones; the compiled executables; the last output per name)."""
    calls, compile_s, compiled = {}, {}, {}
    for name, (fn, args) in jitted.items():
        compiled[name], compile_s[name] = compile_jitted(fn, args)
        calls[name] = lambda exe=compiled[name], args=args: jax.block_until_ready(exe(*args))
    timings, outputs = time_interleaved({**calls, **(plain or {})}, repeats, budget_s)
    for name, seconds in compile_s.items():
        timings[name] = {"compile_s": seconds, **timings[name]}
    return timings, compiled, outputs


def xla_memory(compiled) -> dict | None:
    """Argument, output and temporary buffer sizes of a compiled XLA executable, in bytes."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    sizes = {
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "temp_bytes": int(stats.temp_size_in_bytes),
    }
    return {**sizes, "total_bytes": sum(sizes.values())}


def peak_rss_rise(run: Callable[[Any], Any], setup: Callable[[], Any] = lambda: None) -> int:
    """Largest rise of the resident set size over its value before ``run(setup())``, in bytes."""
    import psutil

    process = psutil.Process()
    arg = setup()
    base = process.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run(arg)
    finally:
        stop.set()
        sampler.join()
    return max(peak[0], process.memory_info().rss) - base


def compute_limits(repeats: int = 5) -> dict:
    """Best-case rates of this machine for the ResNet's arithmetic, measured with XLA in float32.

    * ``tanh_fma_values_per_s``: x ← x + Δt tanh(a x + b) repeated 1000 times on 2¹⁴ values (cache
      resident): the cost of one layer for d = 1, with no memory traffic and no loop overhead to speak of.
    * ``matmul_flop_per_s``: (256 × 256) @ (256 × 8192) products, 2 · 256² · 8192 flop each.

    A particle-step of width d needs d tanh-FMA values and 2d² flop, so its best time on this machine is
    about d / tanh_fma_values_per_s + 2 d² / matmul_flop_per_s. The elementwise array is too small for XLA
    to split over threads, so that rate is one core's (the matrix products may use several): a kernel whose
    large arrays XLA spreads over several free cores can exceed a fraction of 1.
    """
    values, sweeps = 2**14, 1000
    x = jnp.linspace(-2.0, 2.0, values, dtype=jnp.float32)

    def layer(x, _):
        return x + 0.01 * jnp.tanh(0.9 * x + 0.1), None

    def elementwise(x):
        return jax.lax.scan(layer, x, None, length=sweeps)[0]

    timing, _, _ = time_jitted(elementwise, (x,), repeats)
    a = jnp.ones((256, 256), jnp.float32) / 256
    b = jnp.ones((256, 8192), jnp.float32)
    products = 20

    def matmuls(b):
        return jax.lax.scan(lambda b, _: (a @ b, None), b, None, length=products)[0]

    mm_timing, _, _ = time_jitted(matmuls, (b,), repeats)
    return {
        "tanh_fma_values_per_s": values * sweeps / timing["min_s"],
        "matmul_flop_per_s": 2 * 256 * 256 * 8192 * products / mm_timing["min_s"],
        "statistic": "minimum over repeats (best case)",
    }


def particle_step_limit_s(d: int, limits: dict) -> float:
    """Best time of one particle-step of width d: d tanh-FMA values and 2 d² flop."""
    return d / limits["tanh_fma_values_per_s"] + 2 * d * d / limits["matmul_flop_per_s"]


def new_result_path(stem: str, suffix: str = ".json") -> Path:
    """benchmarks/results/<stem>-<UTC time><suffix>, with -1, -2, … appended rather than overwriting."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for k in range(1000):
        path = RESULTS / f"{stem}-{stamp}{'' if k == 0 else f'-{k}'}{suffix}"
        if not path.exists():
            return path
    raise FileExistsError(f"no free file name for {stem}-{stamp}{suffix} in {RESULTS}")


def add_allocator_option(parser) -> None:
    """``--keep-freed-memory``: :func:`meanfield_jax.allocator.keep_freed_memory` before any computation."""
    parser.add_argument(
        "--keep-freed-memory", action="store_true",
        help="keep the memory compiled calls free for their next call (glibc's mallopt; docs/scaling.md)",
    )


def apply_allocator_option(args) -> bool:
    """Apply ``--keep-freed-memory``; whether it is in effect (for the run's settings)."""
    return keep_freed_memory() if args.keep_freed_memory else False


def new_payload(benchmark: str, quick: bool, settings: dict) -> dict:
    """The record of a run: what ran, when, on which machine and versions, with which settings."""
    return {
        "benchmark": benchmark,
        "quick": quick,
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        "machine": machine_info(),
        "versions": versions(),
        "settings": settings,
        "results": [],
    }


def save_payload(payload: dict, started: float) -> Path:
    """Add the wall time since ``started`` and the load average at the end, and write the record to a new
    ``results/<benchmark>[-quick]-<UTC time>.json``; returns its path."""
    payload["wall_time_s"] = time.perf_counter() - started
    payload["machine"]["load_average_at_end"] = load_average()
    path = new_result_path(payload["benchmark"] + ("-quick" if payload["quick"] else ""))
    write_json(path, payload)
    return path


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` to a new file (mode "x": an existing file is never overwritten)."""
    with open(path, "x") as file:
        json.dump(payload, file, indent=2, default=_json_default)
        file.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def label_loglog_axes(ax, title: str, xlabel: str, ylabel: str, legend: bool = True) -> None:
    """Title, axis labels, a light log grid and (optionally) a small legend on a log–log timing plot."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def save_figure(fig, path: Path) -> None:
    """Lay out, save at 120 dpi and close a benchmark figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
