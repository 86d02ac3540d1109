"""Atomic file writes: a file is either absent, its old version, or completely written — never half.

The bytes go to a temporary file in the same folder, are flushed to disk (fsync), get the mode the user's
umask gives new files, and are renamed onto the target (``os.replace`` is atomic on POSIX and Windows).
A run killed at any moment therefore leaves no truncated checkpoint, figure or result. Files that belong
together (a checkpoint and its sidecar) are written inside :func:`termination_deferred`, so that a SIGINT
or SIGTERM arriving between them takes effect after the last one (SIGKILL cannot be deferred; the loader
then reports the mismatch by the sidecar's SHA-256).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "termination_deferred", "writable_folder"]

_TERMINATION_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def writable_folder(folder: str | os.PathLike) -> str | None:
    """Make ``folder`` (and its parents) if needed; why it cannot be made or written to, or None if it can
    (checked before work whose result would go there, not at its first write)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "is not writable"
    return None


@contextlib.contextmanager
def termination_deferred() -> Iterator[None]:
    """Run the block with SIGINT, SIGTERM and SIGHUP held back; each one received meanwhile is raised again,
    with the handler it had before, when the block ends. Outside the main thread (where Python cannot set
    handlers) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in _TERMINATION_SIGNALS
    }
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
