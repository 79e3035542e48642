"""Process-wide malloc settings for the long-running commands (aggregator and collaborator).

gRPC and fx move a model as many ~4 MiB buffers (messages, encoded chunks),
allocated and freed by a dozen threads, every round. Two of glibc's defaults
make that expensive; both measured at 100 MB (docs/performance.md):

- **Arenas.** glibc gives each thread its own malloc arena (up to 8 per core),
  and a block freed in an arena is seldom given back to the system. With one
  arena the aggregator's peak RSS at 100 MB x 8 collaborators fell from about
  850 MB to about 600 MB; big blocks gain nothing from more arenas, and the GIL
  already serialises most allocation.
- **Giving memory back, only to fault it in again.** By default a 4 MiB block
  is mapped and unmapped on its own, or comes from the heap whose free top is
  returned to the system past a few MiB: either way the next round's buffers
  are fresh pages, which the kernel must fault in and zero (tens of ms per
  100 MB, a first touch far more on a virtual machine). Serving blocks up to
  32 MiB from the heap and keeping up to 128 MiB of its free top cut the CPU
  of a 100 MB x 2 round by about 100 ms in all (1.10-1.18 s to 1.03-1.04 s)
  for 5-10 MB more peak RSS; arrays larger than 32 MiB are still mapped on
  their own and given back when freed.

An operator's own ``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` in the environment wins over these.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# From glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# (mallopt parameter, value, the environment variable that overrides it)
_SETTINGS = (
    (_M_ARENA_MAX, 1, "MALLOC_ARENA_MAX"),
    # glibc's largest allowed mmap threshold on 64-bit systems.
    (_M_MMAP_THRESHOLD, 32 << 20, "MALLOC_MMAP_THRESHOLD_"),
    (_M_TRIM_THRESHOLD, 128 << 20, "MALLOC_TRIM_THRESHOLD_"),
)

__all__ = ["tune_malloc"]


def tune_malloc() -> dict[str, bool]:
    """Apply the settings above; call before starting threads.

    Returns, per environment variable name, whether its setting was applied:
    nothing off Linux or on another C library, and none whose variable is set.
    """
    applied = {variable: False for _, _, variable in _SETTINGS}
    if not sys.platform.startswith("linux"):
        return applied
    name = ctypes.util.find_library("c")
    if name is None:
        return applied
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return applied
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    for parameter, value, variable in _SETTINGS:
        if variable not in os.environ:
            applied[variable] = bool(mallopt(parameter, value))
    log.debug("malloc settings applied: %s", applied)
    return applied
