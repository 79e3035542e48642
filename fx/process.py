"""Process-wide settings for the long-running commands (aggregator and collaborator).

gRPC moves a model as many ~4 MiB buffers, allocated and freed by a dozen
threads. glibc gives each thread its own malloc arena (up to 8 per core), and a
block freed in an arena is seldom given back to the system. With one arena the
aggregator's peak RSS at 100 MB x 8 collaborators fell from about 850 MB to about
600 MB (docs/performance.md); big blocks gain nothing from more arenas, and the
GIL already serialises most allocation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # from glibc's malloc.h

__all__ = ["limit_malloc_arenas"]


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; call before starting threads.

    A no-op (False) off Linux, on another C library, or when ``MALLOC_ARENA_MAX``
    is already set in the environment (the operator's choice wins).
    """
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_ARENA_MAX, arenas))
    log.debug("malloc arenas limited to %d: %s", arenas, ok)
    return ok
