"""Process-wide CPU settings under which pipelines run fast: denormals flushed to zero, and glibc's
malloc told to keep activations' memory instead of returning it to the kernel after every op.

Both are set once by the ModelManager (the owner of everything torch in the server), so a direct
pipeline call made through the manager runs under the same settings as a served one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

import torch

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks below this come from the heap and are reused; above it, each is its own mapping.
MMAP_THRESHOLD = 32 << 20
# A heap gives memory back to the kernel only when this much lies free at its top.
TRIM_THRESHOLD = 64 << 20


def configure() -> None:
    # Subnormal floats run through a slow path on x86 CPUs; flushing them to zero changes no
    # image visibly and made the served embedded model 25 % slower than a direct pipeline
    # call before it was set (bench/overhead.py). Threads started later inherit the mode.
    torch.set_flush_denormal(True)
    tune_allocator()


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds; returns whether they were set (False elsewhere).

    Why: a model runs on a thread of its own (LoadedModel.thread), and glibc serves such a thread
    from a secondary arena that it trims eagerly. Every step then maps, faults in and unmaps its
    activations again: measured on the embedded model, ~12,000 page faults and ~35 ms of kernel
    time per image. Fixed thresholds (they also switch off glibc's own adjustment) keep a small
    model's working set mapped; anything larger than MMAP_THRESHOLD is still mapped and unmapped
    as before, so a big model's peak memory is returned as it was.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    if not ok:  # musl and others accept the call but ignore it
        log.debug("mallopt thresholds not set: not glibc")
    return ok
