"""The process's memory allocator: keep the memory that compiled calls free for their next call.

Every call of a compiled XLA program on CPU allocates its temporaries as one block, and its outputs, and
frees them when done. glibc's ``malloc`` serves a block of at least its mmap threshold (128 KiB, raised on
the fly up to 32 MiB as large blocks are freed) by ``mmap``, and gives it back to the kernel when it is
freed; it also trims the top of its heap once more than its trim threshold lies free there (128 KiB, then
twice the raised mmap threshold). Memory fresh from the kernel faults on the first write to each 4 KiB
page: the discrete gradient through a 512² kinetic solve, whose temporaries take 76 MiB, took 19 512 page
faults at every call (measured), one per page of them.

:func:`keep_freed_memory` sets glibc's mmap threshold to ``threshold_bytes`` and its trim threshold to the
largest value it takes (``mallopt``): blocks below ``threshold_bytes`` then come from the heap and stay
there when freed, to be reused by the next call without faults. With it the same gradient took 3 faults a
call, and at 1024² 29 (its temporaries span 77 932 pages). Each thread's arena keeps what it frees; an
arena of a thread other than the main one grows by heaps of at most 64 MiB, so a larger block that such a
thread asks for is still mapped afresh. The cost is that the process keeps the largest heap it has used
until it exits. The setting acts on the whole process (every library in it) and on the allocations that
follow; ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in the environment before Python starts
do the same. Older glibc releases refuse an mmap threshold above 32 MiB: nothing is set then, and False
returned. Measured on an AMD EPYC with 2 cores (glibc 2.36), with and without it in processes run in turn:
docs/scaling.md.
"""

from __future__ import annotations

import ctypes
import operator
import os

__all__ = ["MAX_THRESHOLD_BYTES", "MIN_THRESHOLD_BYTES", "keep_freed_memory"]

# mallopt's parameters (glibc's malloc.h) and the range of its int argument that is of use here
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MIN_THRESHOLD_BYTES = 128 * 1024  # glibc's own default mmap threshold
MAX_THRESHOLD_BYTES = 2**31 - 1  # the largest int mallopt takes


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the only one with these mallopt parameters), else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # set by glibc alone
            return None
        libc = ctypes.CDLL(None)  # the symbols of the running process, glibc's among them
    except (AttributeError, OSError, ValueError):  # no confstr (Windows), or the name is unknown here
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc


def keep_freed_memory(threshold_bytes: int = 2**30) -> bool:
    """Serve blocks below ``threshold_bytes`` from the heap and keep freed memory in it (glibc's mallopt).

    Returns True when both settings were taken, False where the C library is not glibc or refuses the
    threshold (nothing is changed then). Raises ValueError for a ``threshold_bytes`` that is not an integer
    from :data:`MIN_THRESHOLD_BYTES` to :data:`MAX_THRESHOLD_BYTES`.
    """
    try:
        threshold = None if isinstance(threshold_bytes, bool) else operator.index(threshold_bytes)
    except TypeError:
        threshold = None
    if threshold is None or not MIN_THRESHOLD_BYTES <= threshold <= MAX_THRESHOLD_BYTES:
        raise ValueError(
            f"threshold_bytes must be an int from {MIN_THRESHOLD_BYTES} (128 KiB) to {MAX_THRESHOLD_BYTES} "
            f"(2 GiB - 1), got threshold_bytes={threshold_bytes!r}"
        )
    libc = _glibc()
    # the trim threshold only once the mmap threshold is taken: setting it alone would stop glibc from
    # raising its mmap threshold by itself, and leave large blocks mapped afresh at every call
    if libc is None or not libc.mallopt(_M_MMAP_THRESHOLD, threshold):
        return False
    return bool(libc.mallopt(_M_TRIM_THRESHOLD, MAX_THRESHOLD_BYTES))
