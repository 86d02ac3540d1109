"""Fitting parameters by minimising a loss with an optax optimiser: ``fit``.

For a loss L(θ) of any pytree θ (a :class:`NeuralField`, a dict of arrays, an equinox Module) each step is

    ℓ_k = L(θ_k),  g_k = ∇L(θ_k),  (u_k, s_{k+1}) = optimizer.update(g_k, s_k, θ_k),  θ_{k+1} = θ_k + u_k,

one jit-compiled call (``eqx.filter_jit`` with the package's XLA options, :mod:`.dispatch`) per step.
Only the floating-point arrays of θ are trained; the rest (static fields, integer arrays, Python values)
is held fixed. ``history[k] = ℓ_k`` is the loss at the parameters *before* step k's update. Optimisers
that take extra arguments (``optax.lbfgs`` and other ``GradientTransformationExtraArgs``) get ``value``,
``grad`` and ``value_fn`` in ``update``; those that keep the value in their state (line searches) have it
reused (``optax.value_and_grad_from_state``).

Checkpoints hold (θ_k, s_k) serialised with ``eqx.tree_serialise_leaves`` plus a JSON sidecar with the
step k, the history ℓ_0..ℓ_{k−1}, a description of the tree (leaf paths, shapes, dtypes) and the SHA-256
of the leaves file; both files are written atomically (temporary file in the same folder, then
``os.replace``). Resuming restores the exact bits of θ_k and s_k, so a resumed run reproduces an
uninterrupted one bit for bit. A non-finite loss, gradient or updated parameter stops the loop with
:class:`NonFiniteError` before that step's update is applied and before anything is written, so the last
checkpoint on disk is the last good state.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .arguments import boolean, whole_number
from .atomic import atomic_write, termination_deferred, writable_folder
from .dispatch import filter_jit

__all__ = ["FitResult", "NonFiniteError", "fit"]

PyTree = Any
CHECKPOINT_FORMAT = "meanfield_jax.fit checkpoint v1"
NAMED_OPTIMIZERS = ("lbfgs",)


class FitResult(eqx.Module):
    """Outcome of :func:`fit`.

    Attributes:
        params: the parameters after ``steps`` updates (same pytree structure as the input).
        history: float64 array of shape (steps,): the loss at the parameters before each step's update.
        opt_state: the optimiser state after the last update (to continue with the same optimiser).
        steps: the number of completed steps.
    """

    params: PyTree
    history: np.ndarray
    opt_state: PyTree
    steps: int = eqx.field(static=True)


class NonFiniteError(FloatingPointError):
    """The loss, its gradient or the updated parameters became non-finite (NaN or ±inf) at ``step``;
    ``quantity`` is ``"loss"``, ``"gradient"`` or ``"update"``."""

    def __init__(self, message: str, step: int, quantity: str):
        super().__init__(message)
        self.step = step
        self.quantity = quantity


# ---- optimiser -------------------------------------------------------------------------------------------
@functools.cache
def _default_optimizer() -> optax.GradientTransformation:
    return optax.adam(1e-2)


@functools.cache
def _named_optimizer(name: str) -> optax.GradientTransformation:
    if name == "lbfgs":
        return optax.lbfgs()
    raise ValueError(f"optimizer must be an optax GradientTransformation or one of {NAMED_OPTIMIZERS}, "
                     f"got optimizer={name!r}")


def _resolve_optimizer(optimizer) -> optax.GradientTransformation:
    if optimizer is None:
        return _default_optimizer()
    if isinstance(optimizer, str):
        return _named_optimizer(optimizer)
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"optimizer must be an optax GradientTransformation (with init and update), None, or "
                        f"one of {NAMED_OPTIMIZERS}, got {type(optimizer).__name__}")
    return optimizer


def _stores_value(opt_state: PyTree) -> bool:
    """Whether the optimiser keeps the loss value in its state (line searches such as optax.lbfgs do)."""
    return bool(optax.tree_utils.tree_get_all_with_path(opt_state, "value"))


def _all_finite(tree: PyTree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


@filter_jit
def _step(trainable, static, opt_state, loss_fn, optimizer, extra_args: bool, stored_value: bool):
    """One optimiser step; returns the new (trainable, opt_state), the loss before the update and the
    finiteness flags of the loss, of the gradient and of the updated parameters."""

    def value_fn(p):
        return loss_fn(eqx.combine(p, static))

    if stored_value:
        value, grad = optax.value_and_grad_from_state(value_fn)(trainable, state=opt_state)
    else:
        value, grad = eqx.filter_value_and_grad(value_fn)(trainable)
    if extra_args:
        updates, opt_state = optimizer.update(
            grad, opt_state, trainable, value=value, grad=grad, value_fn=value_fn
        )
    else:
        updates, opt_state = optimizer.update(grad, opt_state, trainable)
    new = optax.apply_updates(trainable, updates)
    return new, opt_state, value, (jnp.isfinite(value), _all_finite(grad), _all_finite(new))


# ---- checkpoints -------------------------------------------------------------------------------------
def _tree_description(tree: PyTree) -> list[list]:
    """[path, shape, dtype] of every leaf: identifies the parameter/optimiser-state layout."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [[jax.tree_util.keystr(path), list(np.shape(leaf)), str(jnp.asarray(leaf).dtype)]
            for path, leaf in leaves]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sidecar(path: str) -> str:
    return path + ".json"


def _save_checkpoint(path: str, state: PyTree, step: int, history: list[float]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    leaves = buffer.getvalue()
    description = _tree_description(state)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "history": history,
        "tree": description,
        "tree_sha256": _sha256(json.dumps(description).encode()),
        "leaves_sha256": _sha256(leaves),
    }
    with termination_deferred():  # a SIGTERM between the two writes would leave a mismatched pair
        atomic_write(path, leaves)
        atomic_write(_sidecar(path), json.dumps(meta).encode())


def _check_checkpoint_path(path: str, resume: bool) -> None:
    """Before any step: refuse a checkpoint path that is a folder or cannot be written (found only when the
    first checkpoint was saved, after the steps before it), and one that exists without ``resume`` (it
    would be replaced by this run's state)."""
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path!r} is a folder; allowed: a file path")
    folder = os.path.dirname(os.path.abspath(path))
    problem = writable_folder(folder)
    if problem:
        raise ValueError(f"checkpoint {path!r}: its folder {problem}: {folder}")
    if not resume and (os.path.exists(path) or os.path.exists(_sidecar(path))):
        raise ValueError(f"checkpoint {path!r} already exists: pass resume=True to continue from it, or "
                         "choose a new path (an earlier run's checkpoint is never replaced)")


def _load_checkpoint(path: str, like: PyTree, steps: int) -> tuple[PyTree, int, list[float]] | None:
    """(state, step, history) from ``path`` and its sidecar, or None if neither file exists."""
    have_leaves, have_meta = os.path.exists(path), os.path.exists(_sidecar(path))
    if not (have_leaves or have_meta):
        return None
    if not (have_leaves and have_meta):
        missing = _sidecar(path) if have_leaves else path
        raise ValueError(f"checkpoint {path!r} is incomplete: {missing!r} is missing")
    with open(_sidecar(path), "rb") as file:
        meta = json.loads(file.read())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path!r} is not a fit() checkpoint (format {meta.get('format')!r})")
    if meta["tree"] != _tree_description(like):
        raise ValueError(f"checkpoint {path!r} was written for different parameters or optimiser state "
                         f"(tree {meta['tree']}), not for the current {_tree_description(like)}")
    with open(path, "rb") as file:
        leaves = file.read()
    if _sha256(leaves) != meta["leaves_sha256"]:
        raise ValueError(f"checkpoint {path!r} does not match its sidecar {_sidecar(path)!r} "
                         "(SHA-256 differs; was a write interrupted?)")
    step, history = int(meta["step"]), [float(v) for v in meta["history"]]
    if len(history) != step:
        raise ValueError(f"checkpoint {path!r}: history has {len(history)} entries for step {step}")
    if step > steps:
        raise ValueError(f"checkpoint {path!r} is at step {step}, beyond the requested steps={steps}")
    return eqx.tree_deserialise_leaves(io.BytesIO(leaves), like), step, history


# ---- progress --------------------------------------------------------------------------------------
class _Progress:
    """tqdm bar when tqdm is installed, else one printed line per ~10 % of the steps; silent if disabled."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None
        self.every = max(1, total // 10)
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, initial=initial, desc="fit", unit="step")

    def update(self, done: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4e}", refresh=False)
            self.bar.update(1)
        elif self.enabled and (done % self.every == 0 or done == self.total):
            print(f"fit: step {done}/{self.total}  loss {loss:.6e}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- the loop ----------------------------------------------------------------------------------------
def _strong(leaf):
    """The leaf as a JAX array of its own dtype (drops weak typing so restored leaves trace identically)."""
    return jnp.asarray(leaf, dtype=jnp.asarray(leaf).dtype)


def fit(
    params: PyTree,
    loss_fn: Callable[[PyTree], jax.Array],
    optimizer: optax.GradientTransformation | str | None = None,
    steps: int = 500,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callback: Callable[[int, PyTree, float], Any] | None = None,
) -> FitResult:
    """Minimise ``loss_fn(params)`` by ``steps`` optimiser steps.

    Args:
        params: initial parameters, any pytree; its floating-point arrays are trained.
        loss_fn: params -> real scalar; pure and jax-traceable (it is jit-compiled with the step).
        optimizer: an optax GradientTransformation (default ``optax.adam(1e-2)``), or ``"lbfgs"`` for
            ``optax.lbfgs()`` (zoom line search; for problems with few parameters).
        steps: total number of steps (counting those already done when resuming), >= 0.
        progress: show a tqdm bar (or, without tqdm, print a line every ~10 % of the steps).
        checkpoint: file to save (params, optimiser state) to, with a ``.json`` sidecar; written every
            ``checkpoint_every`` steps and at the end. An existing one is refused unless ``resume``.
        checkpoint_every: positive number of steps between checkpoints (needs ``checkpoint``).
        resume: continue from ``checkpoint`` if it exists (else start from ``params``); the result is
            bitwise identical to an uninterrupted run.
        callback: called as ``callback(k, params_k, loss_k)`` after step k's loss is computed, with the
            parameters that loss was evaluated at.

    Returns:
        :class:`FitResult` with ``params``, ``history`` (loss per step), ``opt_state``, ``steps``.

    Raises:
        NonFiniteError: (a FloatingPointError) when the loss, the gradient or the updated parameters are
            not finite at some step; nothing of that step is kept or written.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable (params -> scalar), got {type(loss_fn).__name__}")
    steps = whole_number(steps, "steps", minimum=0)
    progress = boolean(progress, "progress")
    resume = boolean(resume, "resume")
    if checkpoint is not None and not isinstance(checkpoint, str | os.PathLike):
        raise TypeError(f"checkpoint must be a file path or None, got {type(checkpoint).__name__}")
    if checkpoint_every is not None:
        checkpoint_every = whole_number(checkpoint_every, "checkpoint_every")
        if checkpoint is None:
            raise ValueError(f"checkpoint_every={checkpoint_every} needs a checkpoint path")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path to resume from")
    if callback is not None and not callable(callback):
        raise TypeError(
            f"callback must be callable (step, params, loss) or None, got {type(callback).__name__}"
        )
    optimizer = _resolve_optimizer(optimizer)

    trainable, static = eqx.partition(params, eqx.is_inexact_array)
    if not jax.tree_util.tree_leaves(trainable):
        raise ValueError("params has no floating-point arrays to train (Python numbers are held fixed: wrap "
                         "trainable ones in jnp.asarray)")
    trainable = jax.tree_util.tree_map(_strong, trainable)
    out = eqx.filter_eval_shape(loss_fn, params)
    is_real_scalar = isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()
    if not (is_real_scalar and jnp.issubdtype(out.dtype, jnp.floating)):
        raise TypeError(f"loss_fn must return a real scalar, got {out}")

    opt_state = jax.tree_util.tree_map(_strong, optimizer.init(trainable))
    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)
    stored_value = _stores_value(opt_state)
    path = None if checkpoint is None else os.fspath(checkpoint)
    if path is not None:
        _check_checkpoint_path(path, resume)
    start, history = 0, []
    if resume:
        restored = _load_checkpoint(path, (trainable, opt_state), steps)
        if restored is not None:
            (trainable, opt_state), start, history = restored
    last_saved = start if resume and start > 0 else None

    bar = _Progress(steps, start, progress)
    try:
        for k in range(start, steps):
            new_trainable, new_state, value, finite = _step(
                trainable, static, opt_state, loss_fn, optimizer, extra_args, stored_value
            )
            loss = float(value)
            for ok, quantity in zip(finite, ("loss", "gradient", "update")):
                if not bool(ok):
                    kept = "" if last_saved is None else f"; checkpoint {path!r} (step {last_saved}) kept"
                    raise NonFiniteError(
                        f"non-finite {quantity} at step {k} (loss = {loss!r}); stopped before this step's "
                        f"update{kept}",
                        step=k,
                        quantity=quantity,
                    )
            history.append(loss)
            if callback is not None:
                callback(k, eqx.combine(trainable, static), loss)
            trainable, opt_state = new_trainable, new_state
            bar.update(k + 1, loss)
            if checkpoint_every is not None and (k + 1) % checkpoint_every == 0:
                _save_checkpoint(path, (trainable, opt_state), k + 1, history)
                last_saved = k + 1
    finally:
        bar.close()
    if path is not None and last_saved != steps:
        _save_checkpoint(path, (trainable, opt_state), steps, history)
    return FitResult(
        params=eqx.combine(trainable, static),
        history=np.asarray(history, dtype=np.float64),
        opt_state=opt_state,
        steps=steps,
    )
