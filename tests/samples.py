"""Helpers several test modules share: arbitrary tensors of any dtype, free RAM."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fx.tensors.dtypes import dtype_from_name


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> NDArray[Any]:
    """Arbitrary bit patterns of ``dtype`` (NaN payloads included for floats)."""
    np_dtype = dtype_from_name(dtype)
    count = int(np.prod(shape)) * np_dtype.itemsize
    raw = np.random.default_rng(seed).integers(0, 256, size=count, dtype=np.uint8)
    if dtype == "bool":
        raw &= 1
    return raw.view(np_dtype).reshape(shape)


def available_ram() -> int:
    """MemAvailable in bytes (0 where /proc/meminfo cannot be read)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
