"""Long kinetic solves streamed to disk in chunks of save times, resumable after an interruption.

A solve with many save points holds k densities in memory; ``solve_streamed`` instead runs the solver over
chunks of ``chunk`` save times, continuing each from the last density of the previous one (the solvers'
``t0``: the layers keep their absolute times, and every save time is a stop of the time loop, so the chunked
solve does the same arithmetic as one long solve). Each chunk is written to ``folder/chunk_NNNNN.npz`` by a
temporary file and a rename, then recorded in ``folder/manifest.json`` (also replaced atomically), so a
killed run leaves only complete chunks. ``resume=True`` checks that the manifest describes the same problem
and continues after its last chunk. An existing folder is never overwritten without ``resume``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

from .arguments import whole_number
from .atomic import atomic_write
from .field import AbstractField
from .fokker_planck import _discretise, solve_fokker_planck
from .grid import Grid1D, Grid2D
from .solution import KineticSolution
from .timestepping import resolve_save_times
from .transport import solve_vlasov

__all__ = ["SOLVERS", "load_streamed", "solve_streamed"]

SOLVERS: dict[str, Callable[..., KineticSolution]] = {
    "vlasov": solve_vlasov,
    "fokker_planck": solve_fokker_planck,
}


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # in the repr of a function or object: differs between runs


def _hash_arrays(digest, tree) -> None:
    """Hash a pytree by its structure (its repr without memory addresses) and its leaves' values."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    digest.update(_ADDRESS.sub("", str(treedef)).encode())
    for leaf in leaves:
        arr = np.asarray(leaf)
        digest.update(str((arr.shape, arr.dtype)).encode())
        digest.update(arr.tobytes() if arr.dtype != object else _ADDRESS.sub("", repr(leaf)).encode())


def _fingerprint(solver: str, field, f0, grid, save: np.ndarray, options: dict) -> str:
    """A hash of everything that determines the result, so a resume cannot mix two problems. A callable
    diffusion K enters the solve only through its values at the cell centres and faces, and is hashed by
    those (its repr shows an equinox Module's array shapes, not their values, and a function's address)."""
    digest = hashlib.sha256()
    _hash_arrays(digest, (field, f0))
    static = (solver, type(field).__name__, getattr(field, "activation", None), field.T, field.feedback,
              repr(grid), save.tolist())
    digest.update(repr(static).encode())
    for key in sorted(options):
        value = options[key]
        if key == "diffusion" and callable(value):
            value = _discretise(grid, value)[0]
        digest.update(key.encode())
        _hash_arrays(digest, value)
    return digest.hexdigest()


def solve_streamed(
    solver: str,
    field: AbstractField,
    f0: ArrayLike,
    grid: Grid1D | Grid2D,
    save_at: ArrayLike,
    folder: str | os.PathLike,
    chunk: int = 16,
    resume: bool = False,
    **options,
) -> KineticSolution:
    """Solve with ``SOLVERS[solver]`` over ``save_at``, ``chunk`` save times at a time, into ``folder``.

    Args:
        solver: ``"vlasov"`` or ``"fokker_planck"``.
        field, f0, grid: as for the solver (f0 is the density at ``save_at[0]``).
        save_at: increasing save times (at least two).
        folder: where the chunks and the manifest go; it must not exist unless ``resume=True``.
        chunk: save times per chunk (>= 1).
        resume: continue a run recorded in ``folder`` (same problem: checked by a fingerprint of the field,
            f0, grid, save times and options, arrays by their values and a callable K by its values on the
            grid).
        options: further keyword arguments of the solver (scheme, cfl, diffusion, ...).

    Returns:
        The whole solution (read back from the chunks), with cumulative ``outflow`` and ``num_steps``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver={solver!r}; allowed values: {', '.join(map(repr, SOLVERS))}")
    chunk = whole_number(chunk, "chunk")
    fixed = sorted({"t0", "t_final"} & set(options))
    if fixed:
        raise ValueError(f"{', '.join(fixed)} cannot be options of solve_streamed: the times are save_at's, "
                         "and each chunk starts at the previous one's last")
    if np.size(save_at) == 0:
        raise ValueError("save_at needs at least two times (a start and an end), got none")
    save = resolve_save_times(None, save_at, field.T, t0=float(np.asarray(save_at).ravel()[0]))
    if save.size < 2:
        raise ValueError(f"save_at needs at least two times (a start and an end), got {save.tolist()}")
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    fingerprint = _fingerprint(solver, field, f0, grid, save, options)
    if folder.exists() and not resume:
        raise FileExistsError(f"{folder} exists: pass resume=True to continue it, or choose a new folder")
    if resume and manifest_path.exists():
        manifest = _read(manifest_path, _manifest)
        if manifest["fingerprint"] != fingerprint:
            raise ValueError(f"{folder} holds a different problem (field, f0, grid, save_at or options "
                             "differ); cannot resume it")
    else:  # the folder is made with the first chunk, after the solver has checked its arguments
        manifest = {"solver": solver, "fingerprint": fingerprint, "save_at": save.tolist(), "chunks": []}
    done = len(manifest["chunks"])
    if done:
        last = _read(folder / manifest["chunks"][-1], _chunk)
        f, start, outflow = jnp.asarray(last["f"][-1]), int(last["index"][-1]), last["outflow"][-1]
    else:
        f, start, outflow = jnp.asarray(f0), 0, None
    while start < save.size - 1:
        stop = min(start + chunk, save.size - 1)
        times = save[start : stop + 1]
        sol = SOLVERS[solver](field, f, grid, save_at=times, t0=float(times[0]), **options)
        out = np.asarray(sol.outflow) + (0.0 if outflow is None else outflow)
        first = 0 if start == 0 else 1  # a later chunk starts at the previous chunk's last time
        name = f"chunk_{done:05d}.npz"

        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, ts=np.asarray(sol.ts)[first:], f=np.asarray(sol.f)[first:], outflow=out[first:],
                 index=np.arange(start + first, stop + 1), num_steps=int(sol.num_steps))
        atomic_write(folder / name, buffer.getvalue())
        manifest["chunks"].append(name)
        atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())
        f, outflow, start, done = sol.f[-1], out[-1], stop, done + 1
    return load_streamed(folder, grid)


def _read(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``, or a ValueError naming a file that is missing or damaged."""
    try:
        return read(path)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is missing or damaged ({type(exc).__name__}: {exc})") from None


def _manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def _chunk(path: Path) -> dict:
    with np.load(path) as data:
        return {key: data[key] for key in ("ts", "f", "outflow", "index", "num_steps")}


def load_streamed(folder: str | os.PathLike, grid: Grid1D | Grid2D) -> KineticSolution:
    """The solution stored by :func:`solve_streamed` in ``folder`` (all chunks written so far). A missing or
    damaged file, chunks out of order, or densities not of ``grid``'s shape are a ValueError naming them."""
    folder = Path(folder)
    manifest = _read(folder / "manifest.json", _manifest)
    parts = [_read(folder / name, _chunk) for name in manifest["chunks"]]
    if not parts:
        raise ValueError(f"{folder} holds no finished chunk yet")
    for name, part in zip(manifest["chunks"], parts):
        if part["f"].shape[1:] != grid.shape:
            shape = part["f"].shape[1:]
            raise ValueError(f"{folder / name} holds densities of shape {shape}, not the grid's {grid.shape}")
    index = np.concatenate([p["index"] for p in parts])
    if not np.array_equal(index, np.arange(index[0], index[0] + index.size)):
        raise ValueError(f"{folder / 'manifest.json'} lists its chunks out of order or twice")
    return KineticSolution(
        ts=jnp.asarray(np.concatenate([p["ts"] for p in parts])),
        f=jnp.asarray(np.concatenate([p["f"] for p in parts])),
        grid=grid,
        outflow=jnp.asarray(np.concatenate([p["outflow"] for p in parts])),
        num_steps=jnp.asarray(sum(int(p["num_steps"]) for p in parts)),
    )
