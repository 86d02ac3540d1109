"""Test settings: float64 for every oracle comparison, and no silent rank promotion."""

import json
import os
from pathlib import Path

# the suite runs in two worker processes (pytest-xdist): on a GPU neither may take most of its memory
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The suite's time goes to compiling small programs, much of it in LLVM's optimisation of the machine code.
# The HLO passes, fusions and buffers that tests inspect do not depend on it (checked on a 2-D discrete
# gradient: the same optimised HLO, temporaries and gradient bit for bit). Without it the whole suite took
# 700 s instead of 899 s on 2 cores (measured). XLA_FLAGS naming a level keeps that level:
# XLA_FLAGS=--xla_backend_optimization_level=3 pytest (XLA's default) runs it on the machine code users get.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax
import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def run_config(tmp_path):
    """Run ``configs/<name>.yaml`` at its quick size through the CLI, assert that it passed.

    Returns (metrics, output folder)."""

    from meanfield_jax.cli import main  # after the jax settings above

    def run(name: str):
        out = tmp_path / name
        code = main(["run", str(CONFIGS / f"{name}.yaml"), "--out", str(out), "--set", "quick=true",
                     "--quiet"])
        metrics = json.loads((out / "metrics.json").read_text())
        failed = {k: v for k, v in metrics["checks"].items() if not v["passed"]}
        assert code == 0 and metrics["passed"] and not failed, failed
        return metrics, out

    return run
