#!/usr/bin/env bash
# Run the benchmark suites on a machine with an NVIDIA GPU (CUDA 12 driver).
#
#   bash benchmarks/gpu.sh [--quick] [any options of benchmarks/particles.py]
#
# Makes a virtual environment (.venv-gpu, or $VENV) with jax[cuda12] at the version the package pins, the
# package itself with its `bench` extra, then runs benchmarks/particles.py with the given options and, when
# present and not --quick, benchmarks/kinetic.py. On the GPU the discrete adjoint's backward pass takes all
# particles at once (on CPU it runs on cache-sized groups). Results: benchmarks/results/*.json and *.png,
# with the GPU's name under "machine" -> "gpu". Set PIP_ARGS for extra pip options (e.g. a wheel folder).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-gpu}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
JAX_VERSION="$("$VENV/bin/python" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
spec = next(d for d in deps if re.match(r"jax[<>=!~ ]", d))
print(re.search(r">=\s*([0-9.]+)", spec).group(1))
PY
)"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet ${PIP_ARGS:-} "jax[cuda12]==$JAX_VERSION" -e ".[bench]"

"$VENV/bin/python" - <<'PY'
import jax
gpus = [d for d in jax.devices() if d.platform == "gpu"]
if not gpus:
    raise SystemExit(f"no GPU visible to JAX (devices: {jax.devices()}); check the CUDA driver")
print("GPU:", ", ".join(d.device_kind for d in gpus))
PY

"$VENV/bin/python" benchmarks/particles.py "$@"
if [ -f benchmarks/kinetic.py ] && [[ " $* " != *" --quick "* ]]; then
  "$VENV/bin/python" benchmarks/kinetic.py
fi
