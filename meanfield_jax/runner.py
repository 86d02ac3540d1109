"""Run an experiment from its config and write its results without ever losing earlier ones.

A run writes into ``out``: the figures (PNG), ``config.yaml`` (the resolved config), ``metrics.json``
(checks, metrics, wall time, versions; a non-finite number is written as null, so the file is strict JSON)
and ``run.log``. Nothing is written before the experiment has finished, so a run that fails or is
interrupted leaves ``out`` as it was (a folder it had to create is removed again); every file is written to
a temporary name in the same folder and renamed into place, so a killed run leaves no half-written file. A
non-empty ``out`` is refused unless ``overwrite=True``, and an ``out`` that cannot be created or written to is
refused before the experiment starts.
"""

from __future__ import annotations

import io
import json
import math
import platform
import sys
import time
from pathlib import Path

import jax
import yaml

from .atomic import atomic_write, writable_folder
from .config import ConfigError, ExperimentConfig, to_dict

__all__ = ["OutputExistsError", "run_experiment", "versions"]


class OutputExistsError(ConfigError):
    """The output folder already holds results."""


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on, and the machine."""
    import equinox
    import jax
    import jaxlib
    import optax

    from . import __version__

    return {"meanfield_jax": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "equinox": equinox.__version__, "optax": optax.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "backend": jax.default_backend()}


def prepare_output(out: Path, overwrite: bool) -> list[Path]:
    """Create ``out`` and return the folders made for it (``out`` first, then the parents it needed); refuse
    a non-empty one unless ``overwrite``, and one that cannot be created or written to."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"--out {out} already holds results; choose a new folder or pass --overwrite to replace them"
        )
    made = []
    for folder in (out, *out.parents):
        if folder.exists():
            break
        made.append(folder)
    problem = writable_folder(out)
    if problem:
        raise OutputExistsError(f"--out {out} {problem}")
    return made


def _strict_json(value):
    """``value`` with every non-finite float as None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def _wanted_figures(cfg: ExperimentConfig, names: tuple[str, ...]) -> set[str]:
    """The figures of ``names`` that ``output.plots`` asks for: each entry is a figure's name or the end of
    one after an underscore (``moments`` for ``fig1_moments``); one that names none is a ConfigError."""
    wanted = cfg.output.plots
    if wanted is None:
        return set(names)
    chosen = set()
    for w in wanted:
        matches = {n for n in names if n == w or n.endswith("_" + w)}
        if not matches:
            raise ConfigError(f"output.plots: got {w!r}; allowed: the figures of experiment "
                              f"{cfg.experiment!r}, {', '.join(names)} (or the end of a name after an "
                              "underscore)")
        chosen |= matches
    return chosen


def run_experiment(cfg: ExperimentConfig, out: Path, overwrite: bool = False, quiet: bool = False) -> dict:
    """Run ``cfg`` and write its results into ``out``; return the metrics dictionary."""
    from .experiments import EXPERIMENTS, FIGURES
    from .plotting import close

    if cfg.experiment not in EXPERIMENTS:
        raise ConfigError(f"experiment: got {cfg.experiment!r}; allowed: one of {sorted(EXPERIMENTS)}")
    wanted = _wanted_figures(cfg, FIGURES[cfg.experiment])
    out = Path(out)
    made = prepare_output(out, overwrite)
    lines: list[str] = []

    def log(message: str) -> None:
        lines.append(message)
        if not quiet:
            print(message, flush=True)

    try:  # the experiment, its figures and metrics, all in memory: a failure here writes nothing
        log(f"{cfg.name}: {cfg.description}")
        start = time.perf_counter()
        with jax.enable_x64(cfg.precision == "float64"):
            result = EXPERIMENTS[cfg.experiment](cfg, log)
        wall = time.perf_counter() - start
        unlisted = set(result.figures) - set(FIGURES[cfg.experiment])
        if unlisted:
            raise RuntimeError(f"experiment {cfg.experiment!r} drew {sorted(unlisted)}, which FIGURES lacks")
        files = {"config.yaml": yaml.safe_dump(to_dict(cfg), sort_keys=False).encode()}
        for name, fig in result.figures.items():
            if name in wanted:
                png = io.BytesIO()
                fig.savefig(png, dpi=cfg.output.dpi, format="png")
                files[f"{name}.png"] = png.getvalue()
            close(fig)
        checks = {name: c.to_json() for name, c in result.checks.items()}
        metrics = {"experiment": cfg.name, "kind": cfg.experiment, "seed": cfg.seed,
                   "precision": cfg.precision, "wall_time_s": wall, "versions": versions(),
                   "passed": all(c["passed"] for c in checks.values()), "checks": checks,
                   "metrics": result.metrics}
        files["metrics.json"] = json.dumps(_strict_json(metrics), indent=2, allow_nan=False).encode()
    except BaseException:  # leave no empty folder of this run behind
        for folder in made:
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    for name, c in checks.items():
        log(f"  {'PASS' if c['passed'] else 'FAIL'} {name}: {c['value']:.4g} "
            f"(expected {c['expected']:.4g} ± {c['tol']:.3g})")
    log(f"done in {wall:.1f} s; {sum(c['passed'] for c in checks.values())}/{len(checks)} checks passed")
    for name, data in files.items():
        atomic_write(out / name, data)
        if name.endswith(".png"):
            log(f"wrote {out / name}")
    atomic_write(out / "run.log", ("\n".join(lines) + "\n").encode())
    return metrics
