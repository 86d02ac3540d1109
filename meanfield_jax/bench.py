"""``meanfield-jax bench``: run the benchmark suites of a source checkout.

The suites are the scripts ``benchmarks/<suite>.py`` of the repository (they need the ``bench`` extra:
diffrax, py-pde, FiPy, psutil). Each runs in a process of its own (a suite may change JAX's precision) and
writes ``benchmarks/results/<suite>[-quick]-<UTC time>.json`` and a PNG, never overwriting earlier results.
With ``out`` a summary JSON is also written: for every suite its exit status, the result files it wrote
and the goals recorded in them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .config import ConfigError

__all__ = ["SUITES", "benchmarks_folder", "run_benchmarks"]

SUITES = ("particles", "kinetic")


def benchmarks_folder() -> Path:
    """The ``benchmarks/`` folder next to the package (present in a source checkout)."""
    return Path(__file__).resolve().parent.parent / "benchmarks"


def _result_files(folder: Path) -> set[Path]:
    return set((folder / "results").glob("*.json"))


def _goals(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()).get("goals")
    except (OSError, ValueError):
        return None


def run_benchmarks(
    quick: bool = False,
    out: Path | None = None,
    suites: tuple[str, ...] = SUITES,
    keep_freed_memory: bool = False,
) -> int:
    """Run each suite (``--quick`` and ``--keep-freed-memory`` passed on); 0 when all present suites finished,
    else 1.

    Raises ConfigError (before running anything) when the benchmarks folder is missing, a suite is unknown,
    ``out`` already exists or its folder cannot be written (a missing folder is created). Should the summary
    still fail to be written at the end, it is printed instead, and the run counts as failed.
    """
    folder = benchmarks_folder()
    if not folder.is_dir():
        raise ConfigError(f"no benchmarks folder at {folder}: the suites run from a source checkout")
    unknown = [suite for suite in suites if suite not in SUITES]
    if unknown:
        raise ConfigError(f"unknown benchmark suite(s) {unknown}; known suites: {', '.join(SUITES)}")
    if out is not None:
        _check_out(Path(out))
    options = [*(["--quick"] if quick else []), *(["--keep-freed-memory"] if keep_freed_memory else [])]
    summary = {"quick": quick, "keep_freed_memory": keep_freed_memory, "suites": {}}
    for suite in suites:
        script = folder / f"{suite}.py"
        if not script.is_file():
            summary["suites"][suite] = {"status": "missing", "script": str(script)}
            print(f"meanfield-jax bench: no {script.name}, skipped", file=sys.stderr)
            continue
        before = _result_files(folder)
        print(f"== {suite} ==", flush=True)
        status = subprocess.run([sys.executable, str(script), *options]).returncode
        written = sorted(_result_files(folder) - before)
        summary["suites"][suite] = {
            "status": status,
            "results": [str(path) for path in written],
            "goals": [_goals(path) for path in written],
        }
    finished = all(entry["status"] in (0, "missing") for entry in summary["suites"].values())
    if out is not None and not _write_summary(Path(out), summary):
        return 1
    return 0 if finished else 1


def _check_out(out: Path) -> None:
    """Refuse an existing ``out`` or a folder for it that cannot be written, creating a missing folder, so
    that a long run does not end without a place for its summary."""
    if out.exists():
        raise ConfigError(f"--out {out} already exists; benchmark results are never overwritten")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create its folder {folder} ({exc.strerror})") from exc
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: its folder {folder} is not a folder this user can write to")


def _write_summary(out: Path, summary: dict) -> bool:
    """Write the summary to a new file ``out``; if that fails (the file appeared meanwhile, the disk is
    full), say why and print the summary to stdout instead, so it is not lost."""
    text = json.dumps(summary, indent=2) + "\n"
    try:
        with open(out, "x") as file:
            file.write(text)
    except OSError as exc:
        print(f"meanfield-jax bench: cannot write the summary to {out} ({exc}); here it is:", file=sys.stderr)
        print(text, end="")
        return False
    return True
