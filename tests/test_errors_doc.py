"""Every bad input of docs/errors.md raises the documented exception with the documented message.

The document is generated from CASES below: ``python tests/test_errors_doc.py > docs/errors.md``; the
second test fails when the two drift apart.
"""

import os
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import meanfield_jax as mfj
from meanfield_jax.config import ConfigError, apply_overrides, load_config, parse_config
from meanfield_jax.runner import prepare_output

ROOT = Path(__file__).resolve().parents[1]
FIG1 = ROOT / "configs" / "fig1_moments.yaml"
FIELD = mfj.NeuralField.constant(-1.0, 0.0, num_layers=4)
GRID = mfj.Grid1D(-1.0, 1.0, 8)
BASE = {"name": "x", "experiment": "moments", "model": {"W": [[-1.0]], "b": [0.0]}}


def _raw(section, key, value):
    return {**BASE, section: {**BASE.get(section, {}), key: value}}


def _malformed_yaml():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.yaml"
        path.write_text("name: x\nmodel: {W: [[1.0], b: 2}\n")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            load_config("bad.yaml")
        finally:
            os.chdir(cwd)


def _non_empty_out():
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "runs").mkdir()
        (Path(tmp) / "runs" / "metrics.json").write_text("{}")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            prepare_output(Path("runs"), overwrite=False)
        finally:
            os.chdir(cwd)


def _existing_checkpoint():
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            Path("state.eqx").write_bytes(b"an earlier run's")
            mfj.fit(jnp.ones(2), jnp.sum, steps=1, progress=False, checkpoint="state.eqx")
        finally:
            os.chdir(cwd)


def _fig9_with(override):
    from meanfield_jax.experiments import EXPERIMENTS

    cfg = apply_overrides(load_config(ROOT / "configs" / "fig9_fokker_planck.yaml"), [override])
    EXPERIMENTS[cfg.experiment](cfg, lambda message: None)


# (where, bad input, callable, exception)
CASES = [
    ("config", "unknown top-level key", lambda: parse_config({**BASE, "extra": 1}), ConfigError),
    ("config", "unknown key in a section", lambda: parse_config(_raw("data", "colour", "red")), ConfigError),
    ("config", "negative cell count", lambda: parse_config(_raw("solver", "cells", -5)), ConfigError),
    ("config", "zero layers", lambda: parse_config(_raw("model", "layers", 0)), ConfigError),
    ("config", "negative diffusion", lambda: parse_config(_raw("model", "diffusion", -1.0)), ConfigError),
    ("config", "domain with lo >= hi", lambda: parse_config(_raw("solver", "domain", [[3.0, 1.0]])), ConfigError),
    ("config", "CFL above the limit", lambda: parse_config(_raw("solver", "cfl", 1.5)), ConfigError),
    ("config", "wrong type", lambda: parse_config(_raw("model", "T", "long")), ConfigError),
    ("config", "unknown activation", lambda: parse_config(_raw("model", "activation", "softplus")), ConfigError),
    ("config", "unknown scheme", lambda: parse_config(_raw("solver", "scheme", "lax_wendroff")), ConfigError),
    ("config", "missing W and b", lambda: parse_config({"name": "x", "experiment": "moments"}), ConfigError),
    ("config", "save times not increasing", lambda: parse_config(_raw("solver", "save_at", [2.0, 1.0])),
     ConfigError),
    ("config", "W and b of shapes that do not go together",
     lambda: parse_config({**BASE, "model": {"W": [[1.0, 0.0], [0.0, 1.0]], "b": [0.0]}}), ConfigError),
    ("config", "data.low >= data.high", lambda: parse_config(_raw("data", "low", 9.0)), ConfigError),
    ("config", "missing file", lambda: load_config("missing.yaml"), ConfigError),
    ("config", "malformed YAML", _malformed_yaml, ConfigError),
    ("--set", "unknown key", lambda: apply_overrides(load_config(FIG1), ["solver.cellz=3"]), ConfigError),
    ("--set", "unknown section", lambda: apply_overrides(load_config(FIG1), ["solvr.cells=3"]), ConfigError),
    ("--set", "no `=`", lambda: apply_overrides(load_config(FIG1), ["cells"]), ConfigError),
    ("--out", "non-empty output folder", _non_empty_out, ConfigError),
    ("experiment", "fokker_planck with w >= 0 (no steady state)", lambda: _fig9_with("model.W=[[1.0]]"),
     ConfigError),
    ("experiment", "a domain of the wrong dimension",
     lambda: _fig9_with("solver.domain=[[-6.0, 10.0], [0.0, 1.0]]"), ConfigError),
    ("NeuralField", "W not square", lambda: mfj.NeuralField(np.ones((2, 3)), np.zeros(2)), ValueError),
    ("NeuralField", "b of the wrong length", lambda: mfj.NeuralField(np.ones((2, 2)), np.zeros(3)), ValueError),
    ("NeuralField", "unknown activation", lambda: mfj.NeuralField(1.0, 0.0, activation="softplus"), ValueError),
    ("NeuralField", "T <= 0", lambda: mfj.NeuralField(1.0, 0.0, T=0.0), ValueError),
    ("NeuralField", "NaN in W", lambda: mfj.NeuralField(np.nan, 0.0), ValueError),
    ("NeuralField", "no layers", lambda: mfj.NeuralField(np.zeros((0, 1, 1)), np.zeros((0, 1))), ValueError),
    ("resnet_forward", "x0 of the wrong dimension", lambda: mfj.resnet_forward(FIELD, np.zeros((3, 2))),
     ValueError),
    ("resnet_forward", "diffusion without a key", lambda: mfj.resnet_forward(FIELD, np.zeros((3, 1)),
                                                                             diffusion=1.0), ValueError),
    ("resnet_forward", "K(x) of a shape that fits no particle layout",
     lambda: mfj.resnet_forward(FIELD, np.zeros((3, 1)), diffusion=lambda x: jnp.ones(2), key=jax.random.key(0)),
     ValueError),
    ("Grid1D", "lo >= hi", lambda: mfj.Grid1D(1.0, 0.0, 10), ValueError),
    ("Grid1D", "fewer than 2 cells", lambda: mfj.Grid1D(0.0, 1.0, 1), ValueError),
    ("solve_vlasov", "f0 of the wrong shape", lambda: mfj.solve_vlasov(FIELD, jnp.ones(9), GRID), ValueError),
    ("solve_vlasov", "negative f0", lambda: mfj.solve_vlasov(FIELD, -jnp.ones(8), GRID), ValueError),
    ("solve_vlasov", "CFL above the scheme's limit", lambda: mfj.solve_vlasov(FIELD, jnp.ones(8), GRID, cfl=0.9),
     ValueError),
    ("solve_vlasov", "unknown scheme", lambda: mfj.solve_vlasov(FIELD, jnp.ones(8), GRID, scheme="weno9"),
     ValueError),
    ("solve_fokker_planck", "negative diffusion",
     lambda: mfj.solve_fokker_planck(FIELD, jnp.ones(8), GRID, diffusion=-1.0), ValueError),
    ("solve_fokker_planck", "t0 not a number",
     lambda: mfj.solve_fokker_planck(FIELD, jnp.ones(8), GRID, diffusion=1.0, t0="a"), TypeError),
    ("moment_ode", "NaN diffusion",
     lambda: mfj.moment_ode(-1.0, 0.0, jnp.asarray([1.0, 0.0, 1.0]), jnp.asarray([1.0]), diffusion=np.nan),
     ValueError),
    ("moment_ode", "NaN weight",
     lambda: mfj.moment_ode(np.nan, 0.0, jnp.asarray([1.0, 0.0, 1.0]), jnp.asarray([1.0])), ValueError),
    ("Grid1D.from_samples", "bandwidth <= 0", lambda: GRID.from_samples(jnp.zeros(3), bandwidth=0.0), ValueError),
    ("solve_pmp", "NaN in the data",
     lambda: mfj.control.solve_pmp(FIELD, np.array([[np.nan], [0.0]]), np.zeros((2, 1))), ValueError),
    ("steady_state", "singular W", lambda: mfj.steady_state(mfj.NeuralField(0.0, 1.0)), ValueError),
    ("fit", "negative steps", lambda: mfj.fit(jnp.ones(2), jnp.sum, steps=-1, progress=False), ValueError),
    ("fit", "a checkpoint that exists, without resume", _existing_checkpoint, ValueError),
    ("keep_freed_memory", "threshold below 128 KiB", lambda: mfj.keep_freed_memory(4096), ValueError),
]


def _message(case) -> str:
    _, _, call, exc = case
    with pytest.raises(exc) as info:
        call()
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_raises_a_clear_error(case):
    message = _message(case)
    assert len(message) > 20 and "Traceback" not in message


def render() -> str:
    lines = [
        "# Errors: each bad input and the message it gets",
        "",
        "Every row is checked by `tests/test_errors_doc.py` (regenerate this page with",
        "`python tests/test_errors_doc.py > docs/errors.md`). Config and command-line errors make",
        "`meanfield-jax run` exit with status 2 and print the message, without a traceback; errors of the",
        "Python API are raised before anything is compiled.",
        "",
        "| where | bad input | exception | message |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        where, what, _, exc = case
        message = _message(case).replace("|", "\\|")
        lines.append(f"| {where} | {what} | `{exc.__name__}` | {message} |")
    return "\n".join(lines) + "\n"


def test_errors_doc_is_up_to_date():
    assert (ROOT / "docs" / "errors.md").read_text() == render()


if __name__ == "__main__":
    sys.stdout.write(render())
