"""Giving back the resident pages of read-only memory-mapped tensors.

Once read, the pages of a file mapping count in the process's RSS, though the
kernel's page cache holds them and would keep them anyway. Dropping them from
the mapping (``MADV_DONTNEED``) changes nothing a reader sees: the next read
faults them back in from the page cache, or from the file. fx reads large mapped
tensors once, front to back (a staged update folded into FedAvg, the global
model encoded for download or written to another file), and drops each part as
it goes, so those reads never make a whole model resident.
"""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

__all__ = ["release_pages"]


def release_pages(buffer: Any, start: int = 0, stop: int | None = None) -> None:
    """Drop the resident pages holding bytes [start, stop) of ``buffer`` from this process.

    ``buffer`` is a C-contiguous array or a memoryview of one. Only a read-only
    file mapping is touched (an :class:`np.memmap` in mode ``"r"``, or a view of
    an ``mmap.ACCESS_READ`` map), since dropping a writable private page would
    lose its changes; for anything else (anonymous memory, a copy) this is a no-op.
    The pages that hold the edges of the range are dropped whole: their other
    bytes are read back like the rest.
    """
    dontneed = getattr(mmap, "MADV_DONTNEED", None)  # not on every platform
    mapping = _read_only_mapping(buffer)
    if dontneed is None or mapping is None:
        return
    try:
        data = np.frombuffer(buffer, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):  # not contiguous: nothing we can address
        return
    stop = data.nbytes if stop is None else min(stop, data.nbytes)
    if stop <= start:
        return
    mapped = np.frombuffer(mapping, dtype=np.uint8)
    offset = data.ctypes.data - mapped.ctypes.data
    if not 0 <= offset <= mapped.nbytes:
        return
    page = mmap.PAGESIZE
    first = (offset + start) // page * page  # madvise wants a page-aligned start
    last = min(offset + stop, mapped.nbytes)
    if last > first:
        mapping.madvise(dontneed, first, last - first)


def _read_only_mapping(buffer: Any) -> mmap.mmap | None:
    """The ``mmap`` ``buffer``'s memory belongs to, if it is one mapped read-only."""
    owner = buffer
    for _ in range(16):  # numpy collapses chains of views; a few steps always suffice
        if isinstance(owner, mmap.mmap):
            if owner.closed:
                return None
            with memoryview(owner) as view:
                return owner if view.readonly else None
        if isinstance(owner, np.ndarray):
            owner = owner.base
        elif isinstance(owner, memoryview):
            owner = owner.obj
        else:
            return None
    return None
